"""Linear algebra: Linear layers, matmuls, the embedding gather, softmax.

Matmuls accumulate in f32 for bf16/f16 inputs (a zero-filled f32 ``outs``, as torch's CPU and
GPU kernels do) and round once with ``arith.truncf``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import fx

from . import layout
from .emitter import Emitter
from .node_args import argument, dtype_arg, int_arg
from .registry import translates
from .types import REDUCED_FLOATS, accumulator_dtype, product
from .values import TVal

if TYPE_CHECKING:
    from .translator import Translator

aten = torch.ops.aten

TRANSPOSED_B_MAPS = (
    "[affine_map<(d0, d1, d2) -> (d0, d2)>, affine_map<(d0, d1, d2) -> (d1, d2)>, "
    "affine_map<(d0, d1, d2) -> (d0, d1)>]"
)


def _check_float(em: Emitter, *values: TVal) -> None:
    for value in values:
        if not value.dtype.is_floating_point:
            em.unsupported(f"matmul of {value.dtype} tensors is not supported")
    if len({v.dtype for v in values}) != 1:
        em.unsupported(f"matmul of mixed dtypes {[str(v.dtype) for v in values]}")


def matmul_2d(em: Emitter, a: TVal, b: TVal, transpose_b: bool) -> TVal:
    """``a[M,K] · b[K,N]`` (or ``b[N,K]ᵀ``), in the accumulator dtype."""
    _check_float(em, a, b)
    n = b.shape[0] if transpose_b else b.shape[1]
    shape = (a.shape[0], n)
    acc = em.splat(0, shape, accumulator_dtype(a.dtype), fill=True)
    maps = f"indexing_maps = {TRANSPOSED_B_MAPS} " if transpose_b else ""
    text = (
        f"linalg.matmul {maps}ins({em.value(a)}, {em.value(b)} : {em.type_of(a)}, "
        f"{em.type_of(b)}) outs({acc.name} : {em.type_of(acc)}) -> {em.type_of(acc)}"
    )
    return TVal(em.assign(text), shape, acc.dtype)


def batched_matmul(em: Emitter, a: TVal, b: TVal) -> TVal:
    """``a[..., M, K] · b[..., K, N]`` over equal batch dims, in the accumulator dtype: the batch
    dims are collapsed into one for ``linalg.batch_matmul`` and expanded back."""
    _check_float(em, a, b)
    batch = a.shape[:-2]
    count = product(batch)
    a3 = layout.reshape(em, a, (count, *a.shape[-2:]))
    b3 = layout.reshape(em, b, (count, *b.shape[-2:]))
    shape = (count, a.shape[-2], b.shape[-1])
    acc = em.splat(0, shape, accumulator_dtype(a.dtype), fill=True)
    text = (
        f"linalg.batch_matmul ins({em.value(a3)}, {em.value(b3)} : {em.type_of(a3)}, "
        f"{em.type_of(b3)}) outs({acc.name} : {em.type_of(acc)}) -> {em.type_of(acc)}"
    )
    result = TVal(em.assign(text), shape, acc.dtype)
    return layout.reshape(em, result, (*batch, a.shape[-2], b.shape[-1]))


@translates(aten.linear.default)
def linear(t: Translator, node: fx.Node) -> TVal:
    """``x @ Wᵀ (+ bias)``: x collapsed to [M, K], matmul with the transposed-B map."""
    em = t.em
    x, weight = t.arg(node.args[0]), t.arg(node.args[1])
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    lead = x.shape[:-1]
    flat = layout.reshape(em, x, (product(lead), x.shape[-1]))
    y = em.cast(matmul_2d(em, flat, weight, transpose_b=True), x.dtype)
    y = layout.reshape(em, y, (*lead, weight.shape[0]))
    if bias is not None:
        y = em.binary("arith.addf", y, em.tensor(t.arg(bias), y.shape, y.dtype))
    return y


@translates(aten.matmul.default, aten.mm.default, aten.bmm.default)
def matmul(t: Translator, node: fx.Node) -> TVal:
    em = t.em
    a, b = t.arg(node.args[0]), t.arg(node.args[1])
    shape, dtype = t.shape(node), t.dtype(node)
    if len(a.shape) < 2 or len(b.shape) < 2:
        em.unsupported("matmul with a 1-D operand is not supported")
    if len(b.shape) == 2:
        flat = layout.reshape(em, a, (product(a.shape[:-1]), a.shape[-1]))
        y = em.cast(matmul_2d(em, flat, b, transpose_b=False), dtype)
        return layout.reshape(em, y, shape)
    batch = shape[:-2]
    a = layout.broadcast_to(em, a, (*batch, *a.shape[-2:]))
    b = layout.broadcast_to(em, b, (*batch, *b.shape[-2:]))
    return em.cast(batched_matmul(em, a, b), dtype)


@translates(aten.embedding.default)
def embedding(t: Translator, node: fx.Node) -> TVal:
    """A gather: ``linalg.generic`` over the result reading ``table[id, column]``."""
    em = t.em
    table, ids = t.arg(node.args[0]), t.arg(node.args[1])
    if len(table.shape) != 2 or ids.dtype not in (torch.int64, torch.int32):
        em.unsupported("embedding needs a 2-D table and int32/int64 ids")
    shape = (*ids.shape, table.shape[1])
    rank = len(shape)
    dims = ", ".join(f"d{i}" for i in range(rank))
    ids_map = f"affine_map<({dims}) -> ({', '.join(f'd{i}' for i in range(rank - 1))})>"
    table_name, table_type = em.value(table), em.type_of(table)

    def body(arguments: list[str]) -> str:
        row = em.assign(f"arith.index_cast {arguments[0]} : {em.element(ids.dtype)} to index")
        column = em.assign(f"linalg.index {rank - 1} : index")
        return em.assign(f"tensor.extract {table_name}[{row}, {column}] : {table_type}")

    return em.generic(shape, table.dtype, [(ids, ids_map)], body)


def softmax_in(em: Emitter, x: TVal, dim: int, compute: torch.dtype) -> TVal:
    """``linalg.softmax`` of ``x`` over ``dim``, computed in ``compute`` (result stays in it)."""
    x = em.cast(x, compute)
    init = em.empty(x.shape, compute)
    text = (
        f"linalg.softmax dimension({dim}) ins({em.value(x)} : {em.type_of(x)}) "
        f"outs({init.name} : {em.type_of(x)}) -> {em.type_of(x)}"
    )
    return TVal(em.assign(text), x.shape, compute)


@translates(aten.softmax.int, aten._softmax.default, aten._safe_softmax.default)
def softmax(t: Translator, node: fx.Node) -> TVal:
    """An explicit dtype upcasts first; bf16/f16 without one compute in f32 and round."""
    x = t.arg(node.args[0])
    dim = int_arg(t.em, node, 1, "dim") % len(x.shape)
    if node.target == aten._softmax.default:  # its third argument is `half_to_float`
        requested = torch.float32 if argument(node, 2, "half_to_float") else None
    else:
        requested = dtype_arg(t.em, node, 2, "dtype")
    compute = requested or (torch.float32 if x.dtype in REDUCED_FLOATS else x.dtype)
    return t.em.cast(softmax_in(t.em, x, dim, compute), t.dtype(node))
