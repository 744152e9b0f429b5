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
from .node_args import argument, dtype_arg, int_arg, node_list
from .ops_elementwise import arithmetic
from .registry import translates
from .types import REDUCED_FLOATS, Shape, accumulator_dtype, product
from .values import Scalar, TVal

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
        # x @ W.t() is a Linear (a tied LM head written by hand): read W through the
        # matmul's transposed-B map, the form the projection fusion recognises.
        transposed = _transposed_matrix(t, node.args[1])
        if transposed is not None:
            b, flip = t.arg(transposed), True
        else:
            flip = False
        y = em.cast(matmul_2d(em, flat, b, transpose_b=flip), dtype)
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


@translates(aten.einsum.default)
def einsum(t: Translator, node: fx.Node) -> TVal:
    """A two-operand einsum without ellipsis as a (batched) matmul: each operand permuted to
    [batch, free, contracted] / [batch, contracted, free] letters, the free and contracted
    runs reshaped to one axis each, multiplied, and the result reshaped and permuted to the
    output's order. Without contracted letters it is a broadcast product."""
    em = t.em
    equation, operands = node.args[0], node.args[1]
    if not isinstance(equation, str) or "..." in equation or "->" not in equation:
        em.unsupported(f"einsum '{equation}' (an ellipsis or an implicit output)")
    inputs, output = equation.replace(" ", "").split("->")
    specs = inputs.split(",")
    tensors = node_list(em, operands, "operands")
    if len(specs) != 2 or len(tensors) != 2:
        em.unsupported(f"einsum '{equation}' with other than two operands")
    left, right = specs
    a, b = t.arg(tensors[0]), t.arg(tensors[1])
    shape, dtype = t.shape(node), t.dtype(node)
    for letters, other in ((left, right), (right, left)):
        if any(c not in output and c not in other for c in letters):
            em.unsupported(f"einsum '{equation}' sums a letter of one operand only")
    sizes = {c: d for c, d in zip(left + right, (*a.shape, *b.shape), strict=True)}
    batch = [c for c in output if c in left and c in right]
    free_left = [c for c in output if c in left and c not in right]
    free_right = [c for c in output if c in right and c not in left]
    summed = [c for c in left if c in right and c not in output]
    if not summed:
        return _broadcast_product(em, a, left, b, right, output, shape, dtype)
    a = layout.transpose(em, a, [left.index(c) for c in (*batch, *free_left, *summed)])
    b = layout.transpose(em, b, [right.index(c) for c in (*batch, *summed, *free_right)])
    batch_shape = tuple(sizes[c] for c in batch)
    rows = product(tuple(sizes[c] for c in free_left))
    inner = product(tuple(sizes[c] for c in summed))
    columns = product(tuple(sizes[c] for c in free_right))
    a = layout.reshape(em, a, (*batch_shape, rows, inner))
    b = layout.reshape(em, b, (*batch_shape, inner, columns))
    result = em.cast(batched_matmul(em, a, b), dtype)
    grouped = (*batch, *free_left, *free_right)
    result = layout.reshape(em, result, tuple(sizes[c] for c in grouped))
    return layout.transpose(em, result, [grouped.index(c) for c in output])


def _broadcast_product(
    em: Emitter,
    a: TVal,
    left: str,
    b: TVal,
    right: str,
    output: str,
    shape: Shape,
    dtype: torch.dtype,
) -> TVal:
    """``a`` and ``b`` laid out along the output's letters (unit axes for the letters they
    lack) and multiplied."""
    factors = []
    for value, letters in ((a, left), (b, right)):
        order = [c for c in output if c in letters]
        value = layout.transpose(em, value, [letters.index(c) for c in order])
        view = tuple(shape[k] if c in letters else 1 for k, c in enumerate(output))
        factors.append(
            layout.broadcast_to(em, em.cast(layout.reshape(em, value, view), dtype), shape)
        )
    return em.binary("arith.mulf" if dtype.is_floating_point else "arith.muli", *factors)


@translates(aten.outer.default)
def outer(t: Translator, node: fx.Node) -> TVal:
    a, b = t.arg(node.args[0]), t.arg(node.args[1])
    return _broadcast_product(t.em, a, "i", b, "j", "ij", t.shape(node), t.dtype(node))


@translates(aten.baddbmm.default)
def baddbmm(t: Translator, node: fx.Node) -> TVal:
    """β·input + α·(batch1 @ batch2), the product in the accumulator dtype and rounded once;
    β = 0 leaves input unread, as torch does."""
    em = t.em
    shape, dtype = t.shape(node), t.dtype(node)
    beta = argument(node, 3, "beta", 1)
    alpha = argument(node, 4, "alpha", 1)
    if not isinstance(beta, int | float) or not isinstance(alpha, int | float):
        em.unsupported("baddbmm with non-constant beta or alpha")
    product_ = em.cast(batched_matmul(em, t.arg(node.args[1]), t.arg(node.args[2])), dtype)
    scaled = arithmetic(em, "mul", product_, Scalar(alpha), shape, dtype)
    if beta == 0:
        return scaled
    base = arithmetic(em, "mul", t.operand(node.args[0]), Scalar(beta), shape, dtype)
    return arithmetic(em, "add", base, scaled, shape, dtype)


def _transposed_matrix(t: Translator, arg: object) -> fx.Node | None:
    """The 2-D tensor whose transpose ``arg`` is (``t()``, ``transpose(0, 1)``, ``.T``,
    ``permute(1, 0)``), when it has a value here; else None."""
    if not isinstance(arg, fx.Node) or arg.op != "call_function" or not arg.args:
        return None
    source = arg.args[0]
    if not isinstance(source, fx.Node) or source not in t.env:
        return None
    if len(source.meta["val"].shape) != 2:
        return None
    rest = list(arg.args[1:])
    if arg.target in (aten.t.default, aten.numpy_T.default):
        return source
    if arg.target == aten.transpose.int and all(isinstance(d, int) for d in rest):
        return source if {d % 2 for d in rest if isinstance(d, int)} == {0, 1} else None
    if arg.target == aten.permute.default and rest and rest[0] in ([1, 0], (1, 0)):
        return source
    return None
