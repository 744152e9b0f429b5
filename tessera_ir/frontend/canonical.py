"""The canonical forms of values computed from sizes alone (docs/high-level-ir.md): positions
as an iota, attention masks (causal, optionally a sliding window), constant splats.

Each is a no-input ``linalg.generic`` whose body reads ``linalg.index``, so the fusion passes
can recognise it by evaluating the body at a few indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tessera.mlir_text import scalar_literal

from .emitter import Emitter
from .types import Shape, lowest
from .values import TVal


@dataclass(frozen=True)
class Iota:
    """``value[..., i, ...] = i`` along ``axis``, the same across every other axis."""

    axis: int


@dataclass(frozen=True)
class Mask:
    """A mask over the last two axes (query, key): key k is allowed for query q when
    ``k <= q`` and, with a window, ``q - k < window``. ``additive`` masks hold 0 where allowed
    and the dtype's lowest value elsewhere; the others are bool (true = allowed)."""

    window: int | None
    additive: bool


@dataclass(frozen=True)
class Splat:
    value: float | int | bool


Canonical = Iota | Mask | Splat


def render(form: Canonical, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The tensor ``form`` stands for at a concrete ``shape`` (what torch must reproduce)."""
    if isinstance(form, Splat):
        return torch.full(shape, form.value, dtype=dtype)
    if isinstance(form, Iota):
        view = [1] * len(shape)
        view[form.axis] = shape[form.axis]
        return torch.arange(shape[form.axis]).reshape(view).expand(shape).to(dtype)
    queries = torch.arange(shape[-2]).unsqueeze(1)
    keys = torch.arange(shape[-1]).unsqueeze(0)
    allowed = keys <= queries
    if form.window is not None:
        allowed = allowed & (queries - keys < form.window)
    allowed = allowed.expand(shape)
    if not form.additive:
        return allowed.to(dtype)
    return torch.where(
        allowed, torch.tensor(0.0, dtype=dtype), torch.tensor(lowest(dtype), dtype=dtype)
    )


def emit(em: Emitter, form: Canonical, shape: Shape, dtype: torch.dtype) -> TVal:
    """Writes ``form`` as a value of ``shape`` and ``dtype``."""
    if isinstance(form, Splat):
        return em.splat(form.value, shape, dtype)
    if isinstance(form, Iota):
        return emit_iota(em, shape, form.axis, dtype)
    return emit_mask(em, shape, form.window, dtype if form.additive else None)


def emit_iota(em: Emitter, shape: Shape, axis: int, dtype: torch.dtype) -> TVal:
    """Positions along ``axis``: an i64 iota, converted with ``arith.sitofp`` for floats."""
    integer = torch.int64 if dtype.is_floating_point else dtype

    def body(arguments: list[str]) -> str:
        index = em.assign(f"linalg.index {axis} : index")
        return em.assign(f"arith.index_cast {index} : index to {em.element(integer)}")

    return em.cast(em.generic(shape, integer, [], body), dtype)


def emit_mask(em: Emitter, shape: Shape, window: int | None, additive: torch.dtype | None) -> TVal:
    """A causal (optionally windowed) mask over the last two axes of ``shape``: i1 allowed, or
    0 / lowest of ``additive``."""
    rank = len(shape)

    def body(arguments: list[str]) -> str:
        query = em.assign(f"linalg.index {rank - 2} : index")
        key = em.assign(f"linalg.index {rank - 1} : index")
        allowed = em.assign(f"arith.cmpi sle, {key}, {query} : index")
        if window is not None:
            distance = em.assign(f"arith.subi {query}, {key} : index")
            width = em.assign(f"arith.constant {window} : index")
            near = em.assign(f"arith.cmpi slt, {distance}, {width} : index")
            allowed = em.assign(f"arith.andi {allowed}, {near} : i1")
        if additive is None:
            return allowed
        element = em.element(additive)
        zero = em.assign(f"arith.constant {scalar_literal(0.0, element)} : {element}")
        low = em.assign(f"arith.constant {scalar_literal(lowest(additive), element)} : {element}")
        return em.assign(f"arith.select {allowed}, {zero}, {low} : {element}")

    return em.generic(shape, additive or torch.bool, [], body)
