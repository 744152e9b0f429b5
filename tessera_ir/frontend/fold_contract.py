"""Symbolic evaluation of products and reductions: ``matmul`` and its relatives, ``outer``,
``einsum``, ``baddbmm``, ``sum``, ``mean`` and ``amax``.

A contraction's element is Σ over the contracted indices of the product of the factors'
elements. Over static axes of at most ``MAX_TERMS`` combinations it is written out, in the
accumulator dtype (f32 for bf16/f16, as torch accumulates) and in index order; an integer sum
along a symbolic axis uses sympy's summation. Anything else is left to the translator (a
rotary table's [d/2, 1] × [1, S] product has one term; a large product is better computed
than folded).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import sympy
import torch
from torch import fx

from .fold_registry import NotFoldable, folds
from .folded import Folded
from .node_args import argument
from .term_build import apply, cast
from .terms import Index, Sym, Term
from .types import Dim, Shape, accumulator_dtype, is_static

if TYPE_CHECKING:
    from .folder import Folder

aten = torch.ops.aten

MAX_TERMS = 64

# One factor of a contraction: a tensor and the letter naming each of its axes.
_Factor = tuple[Folded, str]


def _combinations(letters: str, sizes: dict[str, Dim]) -> list[dict[str, int]]:
    ranges = []
    count = 1
    for letter in letters:
        size = sizes[letter]
        if not is_static(size):
            raise NotFoldable(f"a contraction over the dynamic axis '{letter}'")
        count *= size
        ranges.append(range(size))
    if count > MAX_TERMS:
        raise NotFoldable(f"a contraction of {count} terms per element (more than {MAX_TERMS})")
    return [dict(zip(letters, values, strict=True)) for values in itertools.product(*ranges)]


def contraction(
    factors: Sequence[_Factor], output: str, shape: Shape, dtype: torch.dtype
) -> Folded:
    """Σ over the letters not in ``output`` of the product of the factors (einsum)."""
    sizes: dict[str, Dim] = {}
    for tensor, letters in factors:
        if len(letters) != tensor.rank:
            raise NotFoldable(f"{len(letters)} letters for a rank-{tensor.rank} operand")
        for letter, dim in zip(letters, tensor.shape, strict=True):
            if not (is_static(dim) and dim == 1) or letter not in sizes:
                sizes[letter] = dim
    summed = "".join(sorted({c for _, letters in factors for c in letters} - set(output)))
    combinations = _combinations(summed, sizes)
    compute = accumulator_dtype(dtype)

    def element(index: Index) -> Term:
        known = dict(zip(output, index, strict=True))
        total: Term | None = None
        for combination in combinations:
            values = {**known, **{k: sympy.Integer(v) for k, v in combination.items()}}
            product: Term | None = None
            for tensor, letters in factors:
                term = cast(tensor.at([values[c] for c in letters]), compute)
                product = term if product is None else _combine(aten.mul.Tensor, product, term)
            assert product is not None
            total = product if total is None else _combine(aten.add.Tensor, total, product)
        assert total is not None
        return cast(total, dtype)

    return Folded(shape, dtype, element)


def _combine(op: torch._ops.OpOverload, a: Term, b: Term) -> Term:
    return apply(op, [a, b], [1, 1], {}, a.dtype)


def _letters(count: int, skip: str = "") -> str:
    return "".join(c for c in "abcdefghijklmnopqrstuvwxyz" if c not in skip)[:count]


@folds(aten.matmul.default, aten.mm.default, aten.bmm.default)
def matmul(f: Folder, node: fx.Node) -> Folded:
    a, b = f.tensor(node.args[0]), f.tensor(node.args[1])
    shape, dtype = f.shape(node), f.dtype(node)
    batch = len(shape) - (a.rank >= 2) - (b.rank >= 2)
    names = _letters(batch, "mnk")
    left = (names[batch - (a.rank - 2) :] if a.rank > 2 else "") + ("mk" if a.rank >= 2 else "k")
    right = (names[batch - (b.rank - 2) :] if b.rank > 2 else "") + ("kn" if b.rank >= 2 else "k")
    output = names + ("m" if a.rank >= 2 else "") + ("n" if b.rank >= 2 else "")
    return contraction([(a, left), (b, right)], output, shape, dtype)


@folds(aten.outer.default)
def outer(f: Folder, node: fx.Node) -> Folded:
    a, b = f.tensor(node.args[0]), f.tensor(node.args[1])
    return contraction([(a, "i"), (b, "j")], "ij", f.shape(node), f.dtype(node))


@folds(aten.einsum.default)
def einsum(f: Folder, node: fx.Node) -> Folded:
    equation, operands = node.args[0], node.args[1]
    if not isinstance(equation, str) or not isinstance(operands, list | tuple):
        raise NotFoldable(f"einsum {equation!r}")
    if "..." in equation or "->" not in equation:
        raise NotFoldable(f"einsum '{equation}' (an ellipsis or an implicit output)")
    inputs, output = equation.replace(" ", "").split("->")
    specs = inputs.split(",")
    if len(specs) != len(operands):
        raise NotFoldable(f"einsum '{equation}' with {len(operands)} operands")
    factors = [(f.tensor(t), spec) for t, spec in zip(operands, specs, strict=True)]
    return contraction(factors, output, f.shape(node), f.dtype(node))


@folds(aten.baddbmm.default)
def baddbmm(f: Folder, node: fx.Node) -> Folded:
    """β·input + α·(batch1 @ batch2); β = 0 ignores input (torch does not read it)."""
    base = f.tensor(node.args[0])
    product = contraction(
        [(f.tensor(node.args[1]), "bmk"), (f.tensor(node.args[2]), "bkn")],
        "bmn",
        f.shape(node),
        f.dtype(node),
    )
    beta, alpha = f.scalar(argument(node, 3, "beta", 1)), f.scalar(argument(node, 4, "alpha", 1))
    shape, dtype = f.shape(node), f.dtype(node)
    offset = len(shape) - base.rank

    def element(index: Index) -> Term:
        scaled = apply(aten.mul.Tensor, [product.at(index), alpha], [3, -1], {}, dtype)
        if beta == 0:
            return scaled
        point = [
            sympy.Integer(0) if is_static(d) and d == 1 else index[offset + k]
            for k, d in enumerate(base.shape)
        ]
        added = apply(aten.mul.Tensor, [base.at(point), beta], [base.rank, -1], {}, dtype)
        return apply(aten.add.Tensor, [added, scaled], [3, 3], {}, dtype)

    return Folded(shape, dtype, element)


def _reduced_axes(node: fx.Node, rank: int) -> list[int]:
    dims = argument(node, 1, "dim")
    if dims is None or dims == []:
        return list(range(rank))
    listed = [dims] if isinstance(dims, int) else dims
    if not isinstance(listed, list | tuple) or not all(isinstance(d, int) for d in listed):
        raise NotFoldable(f"reduction dims {dims!r}")
    return sorted({int(d) % rank for d in listed})


@folds(aten.sum.dim_IntList, aten.sum.default, aten.mean.dim, aten.mean.default, aten.amax.default)
def reduce(f: Folder, node: fx.Node) -> Folded:
    """A sum, mean or max over the given axes (kept as unit axes with keepdim)."""
    source = f.tensor(node.args[0])
    shape, dtype = f.shape(node), f.dtype(node)
    whole = node.target in (aten.sum.default, aten.mean.default)
    axes = list(range(source.rank)) if whole else _reduced_axes(node, source.rank)
    keep = len(shape) == source.rank
    names = _letters(source.rank)
    kept = [a for a in range(source.rank) if a not in axes]
    if node.target == aten.amax.default:
        return _maximum(source, axes, kept, keep, shape)
    if not dtype.is_floating_point and any(not is_static(source.shape[a]) for a in axes):
        return _integer_sum(source, axes, kept, keep, shape, dtype)
    output = "".join(names[a] for a in kept)
    summed = contraction(
        [(source, names)], output, tuple(shape[a] for a in kept) if keep else shape, dtype
    )
    if node.target in (aten.mean.dim, aten.mean.default):
        count = 1
        for a in axes:
            count *= int(source.shape[a])
        total = summed

        def mean(index: Index) -> Term:
            return apply(aten.div.Tensor, [total.at(index), count], [1, -1], {}, dtype)

        summed = Folded(total.shape, dtype, mean)
    if not keep:
        return summed
    return Folded(shape, dtype, lambda index: summed.at([index[a] for a in kept]))


def _maximum(source: Folded, axes: list[int], kept: list[int], keep: bool, shape: Shape) -> Folded:
    sizes = {str(a): source.shape[a] for a in axes}
    combinations = _combinations("".join(str(a) for a in axes), sizes) if axes else [{}]

    def element(index: Index) -> Term:
        point = list(index) if keep else [sympy.Integer(0)] * source.rank
        if not keep:
            for position, axis in enumerate(kept):
                point[axis] = index[position]
        best: Term | None = None
        for combination in combinations:
            for axis in axes:
                point[axis] = sympy.Integer(combination[str(axis)])
            term = source.at(point)
            best = (
                term
                if best is None
                else apply(aten.maximum.default, [best, term], [1, 1], {}, term.dtype)
            )
        assert best is not None
        return best

    return Folded(shape, source.dtype, element)


def _integer_sum(
    source: Folded, axes: list[int], kept: list[int], keep: bool, shape: Shape, dtype: torch.dtype
) -> Folded:
    steps = {a: sympy.Dummy(f"t{a}", integer=True, nonnegative=True) for a in axes}

    def element(index: Index) -> Term:
        point = list(index) if keep else [sympy.Integer(0)] * source.rank
        if not keep:
            for position, axis in enumerate(kept):
                point[axis] = index[position]
        for axis, step in steps.items():
            point[axis] = step
        summand = cast(source.at(point), dtype)
        if not isinstance(summand, Sym):
            raise NotFoldable("a sum of values that are not integer expressions")
        total = summand.expr
        for axis, step in steps.items():
            total = sympy.summation(total, (step, 0, source.shape[axis] - 1))
        if total.has(sympy.Sum):
            raise NotFoldable(f"the sum of {summand.expr} has no closed form")
        return Sym(sympy.expand(total), dtype)

    return Folded(shape, dtype, element)
