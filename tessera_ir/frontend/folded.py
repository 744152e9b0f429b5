"""A tensor computed from sizes and constants: its symbolic shape, its dtype and its element at
any index (a ``Term``), computed on demand and remembered.

A constant tensor (a non-persistent buffer, a constant the graph lifted, or anything torch
computed from them) reads as numbers at concrete indices; at symbolic ones it reads as its
one value when all elements agree, as an affine function of the indices when it is integer
and equals one (an ``arange`` buffer), else as a ``Read`` of the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sympy
import torch

from .term_build import number
from .terms import Index, Read, Sym, Table, Term
from .types import Shape, shape_of

IndexLike = Sequence[sympy.Expr | int]


def as_index(index: IndexLike) -> Index:
    return tuple(sympy.Integer(i) if isinstance(i, int) else sympy.sympify(i) for i in index)


class Folded:
    """``shape`` (static ints or sympy sizes), ``dtype`` and ``element(index)``; ``constant``
    holds the whole tensor when no size is involved."""

    def __init__(
        self,
        shape: Shape,
        dtype: torch.dtype,
        element: Callable[[Index], Term],
        constant: torch.Tensor | None = None,
    ) -> None:
        self.shape = shape
        self.dtype = dtype
        self._element = element
        self.constant = constant
        self._memo: dict[Index, Term] = {}

    @property
    def rank(self) -> int:
        return len(self.shape)

    def at(self, index: IndexLike) -> Term:
        """The element at ``index`` (one entry per axis; a unit axis is read at 0, the only
        index it has)."""
        point = as_index(index)
        if len(point) != self.rank:
            raise ValueError(f"index {point} for a rank-{self.rank} tensor")
        point = tuple(
            sympy.Integer(0) if isinstance(dim, int) and dim == 1 else entry
            for entry, dim in zip(point, self.shape, strict=True)
        )
        found = self._memo.get(point)
        if found is None:
            found = self._element(point)
            if found.dtype != self.dtype:
                raise TypeError(f"element {found!r} of a {self.dtype} tensor")
            self._memo[point] = found
        return found

    @classmethod
    def of_constant(cls, tensor: torch.Tensor) -> Folded:
        tensor = tensor.detach()
        return cls(shape_of(tensor), tensor.dtype, _constant_element(tensor), constant=tensor)


def _constant_element(tensor: torch.Tensor) -> Callable[[Index], Term]:
    dtype = tensor.dtype
    flat = tensor.reshape(-1)
    splat = None
    if flat.numel() and bool((flat == flat[0]).all()):
        splat = number(flat[0].item(), dtype)
    affine = _affine(tensor) if splat is None else None
    table = Table(tensor)

    def element(index: Index) -> Term:
        if all(isinstance(i, sympy.Integer) for i in index):
            return number(tensor[tuple(int(i) for i in index)].item(), dtype)
        if splat is not None:
            return splat
        if affine is not None:
            value = affine[0] + sum(c * i for c, i in zip(affine[1], index, strict=True))
            return Sym(sympy.expand(value), dtype)
        return Read(table, index, dtype)

    return element


def _affine(tensor: torch.Tensor) -> tuple[int, list[int]] | None:
    """(c, [a0, a1, ...]) when the integer ``tensor`` equals c + Σ a_k·i_k at every index."""
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.numel() == 0:
        return None
    origin = (0,) * tensor.dim()
    offset = int(tensor[origin])
    slopes = []
    for axis, size in enumerate(tensor.shape):
        step = [0] * tensor.dim()
        step[axis] = 1
        slopes.append(int(tensor[tuple(step)]) - offset if size > 1 else 0)
    grid = torch.full(tensor.shape, offset, dtype=torch.int64)
    for axis, slope in enumerate(slopes):
        view = [1] * tensor.dim()
        view[axis] = tensor.shape[axis]
        grid = grid + slope * torch.arange(tensor.shape[axis]).reshape(view)
    if not torch.equal(grid, tensor.to(torch.int64)):
        return None
    return offset, slopes
