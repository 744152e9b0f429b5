"""The values translations pass around: tensors written (or yet to be written) as SSA values,
and scalars that torch treats like 0-d tensors."""

from __future__ import annotations

from dataclasses import dataclass

import sympy
import torch

from .types import Shape


@dataclass(eq=False)
class TVal:
    """A tensor value: its SSA name, shape, dtype and, for constants, its contents.

    ``name`` is None for a constant not yet written (it is written on first use).
    A value with a ``unit_source`` (and no name) is that value with unit dims inserted or
    removed; it is written where it is used, so that a broadcast or reshape of it can start
    from the source instead of undoing the unit dims."""

    name: str | None
    shape: Shape
    dtype: torch.dtype
    const: torch.Tensor | None = None
    unit_source: TVal | None = None


@dataclass(frozen=True)
class Scalar:
    """A Python number, a symbolic size (``value`` a sympy expression) or a 0-d constant tensor
    (``dtype`` then set), which torch treats alike."""

    value: float | int | bool | sympy.Expr
    dtype: torch.dtype | None = None
