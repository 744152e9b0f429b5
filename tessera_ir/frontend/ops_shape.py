"""Shape ops: views, transposes, broadcasts, slices, concatenation, and the ops that change
nothing at inference time (aliases, copies, eval-mode dropout, assertions).

Result shapes come from the node's metadata, so ``-1`` and symbolic arguments need no
evaluation here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import fx

from . import layout
from .node_args import argument, int_arg, int_list, node_list
from .registry import translates
from .types import is_static, same_shape, shape_of
from .values import TVal

if TYPE_CHECKING:
    from .translator import Translator

aten = torch.ops.aten
_INT64_MAX = 2**63 - 1


@translates(
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.flatten.using_ints,
    aten.unflatten.int,
    aten.view_copy.default,
)
def reshape(t: Translator, node: fx.Node) -> TVal:
    return layout.reshape(t.em, t.arg(node.args[0]), t.shape(node))


@translates(aten.transpose.int)
def transpose(t: Translator, node: fx.Node) -> TVal:
    x = t.arg(node.args[0])
    rank = len(x.shape)
    a = int_arg(t.em, node, 1, "dim0") % rank
    b = int_arg(t.em, node, 2, "dim1") % rank
    permutation = list(range(rank))
    permutation[a], permutation[b] = b, a
    return layout.transpose(t.em, x, permutation)


@translates(aten.permute.default)
def permute(t: Translator, node: fx.Node) -> TVal:
    x = t.arg(node.args[0])
    dims = int_list(t.em, argument(node, 1, "dims"), "dims")
    return layout.transpose(t.em, x, [d % len(x.shape) for d in dims])


@translates(aten.t.default, aten.numpy_T.default)
def matrix_transpose(t: Translator, node: fx.Node) -> TVal:
    x = t.arg(node.args[0])
    return layout.transpose(t.em, x, list(range(len(x.shape)))[::-1])


@translates(aten.expand.default, aten.expand_as.default, aten.broadcast_to.default)
def expand(t: Translator, node: fx.Node) -> TVal:
    return layout.broadcast_to(t.em, t.arg(node.args[0]), t.shape(node))


def _extract_slice(t: Translator, x: TVal, dim: int, start: int, step: int, shape: tuple) -> TVal:
    em = t.em
    offsets = ["0"] * len(x.shape)
    offsets[dim] = str(start)
    strides = ["1"] * len(x.shape)
    strides[dim] = str(step)
    text = (
        f"tensor.extract_slice {em.value(x)}[{', '.join(offsets)}] [{em.mixed_sizes(shape)}] "
        f"[{', '.join(strides)}] : {em.type_of(x)} to {em.type(shape, x.dtype)}"
    )
    return TVal(em.assign(text), shape, x.dtype)


@translates(aten.slice.Tensor)
def slice_(t: Translator, node: fx.Node) -> TVal:
    x = t.arg(node.args[0])
    args = list(node.args) + [None] * (5 - len(node.args))
    dim = int_arg(t.em, node, 1, "dim", default=0) % len(x.shape)
    start, step = args[2] or 0, args[4] or 1
    if not isinstance(start, int) or not isinstance(step, int):
        t.em.unsupported("slice bounds must be integers")
    shape = t.shape(node)
    if start < 0:
        size = x.shape[dim]
        if not is_static(size):
            t.em.unsupported("a negative slice start needs a static dimension")
        start = max(start + size, 0)
    if is_static(x.shape[dim]):
        start = min(start, x.shape[dim])
    if same_shape(shape, x.shape) and start == 0 and step == 1:
        return x
    return _extract_slice(t, x, dim, start, step, shape)


@translates(aten.select.int)
def select(t: Translator, node: fx.Node) -> TVal:
    x = t.arg(node.args[0])
    dim = int_arg(t.em, node, 1, "dim") % len(x.shape)
    index = int_arg(t.em, node, 2, "index")
    if index < 0:
        if not is_static(x.shape[dim]):
            t.em.unsupported("a negative index needs a static dimension")
        index += x.shape[dim]
    sliced_shape = tuple(1 if i == dim else d for i, d in enumerate(x.shape))
    sliced = _extract_slice(t, x, dim, index, 1, sliced_shape)
    return layout.reshape(t.em, sliced, t.shape(node))


@translates(aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default, aten.unbind.int)
def split(t: Translator, node: fx.Node) -> tuple[TVal, ...]:
    """Consecutive slices along one dim (``operator.getitem`` picks one of them)."""
    x = t.arg(node.args[0])
    unbind = node.target == aten.unbind.int
    dim = int_arg(t.em, node, 1 if unbind else 2, "dim", default=0) % len(x.shape)
    parts: list[TVal] = []
    offset = 0
    for part in node.meta["val"]:
        shape = shape_of(part)
        size = 1 if unbind else shape[dim]
        if not is_static(size):
            t.em.unsupported("splitting along a dynamic dimension")
        sliced = tuple(size if i == dim else d for i, d in enumerate(x.shape))
        piece = _extract_slice(t, x, dim, offset, 1, sliced)
        parts.append(layout.reshape(t.em, piece, shape))
        offset += size
    return tuple(parts)


@translates(aten.cat.default, aten.concat.default)
def concatenate(t: Translator, node: fx.Node) -> TVal:
    em, shape, dtype = t.em, t.shape(node), t.dtype(node)
    parts = [em.cast(t.arg(a), dtype) for a in node_list(em, node.args[0], "tensors")]
    parts = [p for p in parts if not (len(p.shape) == 1 and p.shape[0] == 0)]
    dim = int_arg(em, node, 1, "dim", default=0) % len(shape)
    if len(parts) == 1:
        return parts[0]
    names = ", ".join(em.value(p) for p in parts)
    types = ", ".join(em.type_of(p) for p in parts)
    text = f"tensor.concat dim({dim}) {names} : ({types}) -> {em.type(shape, dtype)}"
    return TVal(em.assign(text), shape, dtype)


@translates(
    aten.alias.default,
    aten.contiguous.default,
    aten.clone.default,
    aten.detach.default,
    aten.lift_fresh_copy.default,
)
def identity(t: Translator, node: fx.Node) -> TVal:
    return t.arg(node.args[0])


@translates(aten.dropout.default)
def dropout(t: Translator, node: fx.Node) -> TVal:
    train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train", False)
    probability = node.args[1] if len(node.args) > 1 else node.kwargs.get("p", 0.0)
    if train and probability:
        t.em.unsupported("dropout in training mode (call model.eval() before tracing)")
    return t.arg(node.args[0])


@translates(
    aten._assert_tensor_metadata.default,
    aten._assert_scalar.default,
    aten.sym_constrain_range_for_size.default,
    aten._assert_async.msg,
)
def assertion(t: Translator, node: fx.Node) -> None:
    return None


@translates(aten.stack.default)
def stack(t: Translator, node: fx.Node) -> TVal:
    """Each piece given a unit axis at ``dim``, then joined along it."""
    em, shape, dtype = t.em, t.shape(node), t.dtype(node)
    dim = int_arg(em, node, 1, "dim", default=0) % len(shape)
    parts = []
    for piece in node_list(em, node.args[0], "tensors"):
        value = em.cast(t.arg(piece), dtype)
        parts.append(layout.reshape_now(em, value, (*value.shape[:dim], 1, *value.shape[dim:])))
    if len(parts) == 1:
        return parts[0]
    names = ", ".join(em.value(p) for p in parts)
    types = ", ".join(em.type_of(p) for p in parts)
    text = f"tensor.concat dim({dim}) {names} : ({types}) -> {em.type(shape, dtype)}"
    return TVal(em.assign(text), shape, dtype)


@translates(aten.repeat_interleave.self_int)
def repeat_interleave(t: Translator, node: fx.Node) -> TVal:
    """Each slice along ``dim`` repeated in a row: a unit axis after ``dim`` broadcast to the
    repeat count and collapsed into it (the form grouped-query attention's k/v take)."""
    x = t.arg(node.args[0])
    repeats = argument(node, 1, "repeats")
    if argument(node, 2, "dim") is None or not isinstance(repeats, int):
        t.em.unsupported("repeat_interleave needs a dim and an integer repeat count")
    dim = int_arg(t.em, node, 2, "dim") % len(x.shape)
    spread = (*x.shape[: dim + 1], repeats, *x.shape[dim + 1 :])
    with_axis = layout.reshape(t.em, x, (*x.shape[: dim + 1], 1, *x.shape[dim + 1 :]))
    return layout.reshape(t.em, layout.broadcast_to(t.em, with_axis, spread), t.shape(node))
