"""Reductions: sum, mean, amax as ``linalg.reduce`` over a filled init.

Sums of bf16/f16 accumulate in f32, as torch does; ``keepdim`` puts the unit dims back with
``tensor.expand_shape``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import fx

from . import layout
from .emitter import Emitter
from .node_args import argument, int_list
from .registry import translates
from .types import accumulator_dtype, is_static, product
from .values import TVal

if TYPE_CHECKING:
    from .translator import Translator

aten = torch.ops.aten


def _dims(em: Emitter, node: fx.Node, rank: int) -> list[int]:
    dims = argument(node, 1, "dim")
    if dims is None or dims == []:
        return list(range(rank))
    listed = [dims] if isinstance(dims, int) else int_list(em, dims, "dim")
    return sorted({d % rank for d in listed})


@translates(aten.sum.dim_IntList, aten.sum.default, aten.mean.dim, aten.mean.default)
def sum_or_mean(t: Translator, node: fx.Node) -> TVal:
    em = t.em
    x = t.arg(node.args[0])
    dtype = t.dtype(node)
    reduced = node.target in (aten.sum.default, aten.mean.default)
    dims = list(range(len(x.shape))) if reduced else _dims(em, node, len(x.shape))
    acc = accumulator_dtype(dtype)
    x = em.cast(x, acc)
    add = "arith.addf" if acc.is_floating_point else "arith.addi"
    total = em.reduce(x, dims, add, 0)
    if node.target in (aten.mean.dim, aten.mean.default):
        if not acc.is_floating_point:
            em.unsupported(f"mean of {acc} values")
        count = product(tuple(x.shape[d] for d in dims))
        if is_static(count):
            divisor = em.splat(float(count), total.shape, acc)
        else:
            integer = em.assign(f"arith.index_cast {em.index(count)} : index to i64")
            number = em.assign(f"arith.sitofp {integer} : i64 to {em.element(acc)}")
            init = em.empty(total.shape, acc)
            type_ = em.type_of(init)
            filled = em.assign(
                f"linalg.fill ins({number} : {em.element(acc)}) outs({init.name} : "
                f"{type_}) -> {type_}"
            )
            divisor = TVal(filled, total.shape, acc)
        total = em.binary("arith.divf", total, divisor)
    return layout.reshape(em, em.cast(total, dtype), t.shape(node))


@translates(aten.amax.default)
def amax(t: Translator, node: fx.Node) -> TVal:
    em = t.em
    x = t.arg(node.args[0])
    dims = _dims(em, node, len(x.shape))
    if x.dtype.is_floating_point:
        result = em.reduce(x, dims, "arith.maximumf", float("-inf"))
    else:
        result = em.reduce(x, dims, "arith.maxsi", torch.iinfo(x.dtype).min)
    return layout.reshape(em, result, t.shape(node))
