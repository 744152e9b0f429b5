"""Classifies the values a graph computes from sizes alone by running them at probe sizes.

Attention masks and position ids in exported transformers graphs are built from ``sym_size``,
``arange``, ``index``, ``cumsum``, comparisons... and no data. Rather than translating those
ops, each boundary value (one a data-dependent node consumes) is evaluated with torch at
concrete sizes and recognised as one canonical form (``canonical.py``). The form is read off the
large probe (batch 1, a sequence longer than twice any integer constant the subgraph holds, so
that windows show), then checked against the small probes (an odd length, batch 2 and 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import sympy
import torch
from torch import fx

from tessera.errors import UnsupportedOpError

from .canonical import Canonical, Iota, Mask, Splat, render
from .types import Shape, is_static, lowest, same_dim, shape_of

SMALL_PROBE = 5
# Twice the largest window among the supported models (Gemma 2: 4096), plus 3.
MAX_PROBE = 2 * 4096 + 3
_SENTINEL = 2**31  # larger integers are "to the end" markers (slice ends), not sizes


def describe(value: torch.Tensor, shape: Shape) -> Canonical | None:
    """The canonical form ``value`` (of symbolic ``shape``) matches at its concrete size."""
    if value.numel() == 0:
        return None
    flat = value.reshape(-1)
    if bool((flat == flat[0]).all()):
        return Splat(flat[0].item())
    if len(shape) >= 2 and not is_static(shape[-1]) and same_dim(shape[-1], shape[-2]):
        found = _describe_mask(value)
        if found is not None:
            return found
    for axis, size in enumerate(value.shape):
        if size > 1 and torch.equal(value, render(Iota(axis), tuple(value.shape), value.dtype)):
            return Iota(axis)
    return None


def _describe_mask(value: torch.Tensor) -> Mask | None:
    if value.dtype == torch.bool:
        allowed, additive = value, False
    elif value.dtype.is_floating_point:
        if not bool(((value == 0) | (value == lowest(value.dtype))).all()):
            return None
        allowed, additive = value == 0, True
    else:
        return None
    length = value.shape[-1]
    last_row = allowed.reshape(-1, length, length)[0, length - 1]
    count = int(last_row.sum())
    form = Mask(count if count < length else None, additive)
    if torch.equal(value, render(form, tuple(value.shape), value.dtype)):
        return form
    return None


def _integers(values: Iterable[object]) -> Iterable[int]:
    for value in values:
        if isinstance(value, (list, tuple)):
            yield from _integers(value)
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) < _SENTINEL:
            yield abs(value)


class Prober:
    """Evaluates the shape-only nodes of a graph at probe sizes and classifies boundaries.

    ``symbols`` maps each symbolic size to whether it is a batch dim (probed at 1 and 2) or a
    sequence dim (probed small and large); ``where`` gives a node's module path for errors."""

    def __init__(
        self,
        nodes: list[fx.Node],
        shape_only: set[fx.Node],
        boundaries: list[fx.Node],
        batch_symbols: set[sympy.Symbol],
        where: Callable[[fx.Node], str],
    ) -> None:
        self.nodes = [n for n in nodes if n in shape_only]
        self.shape_only = shape_only
        self.boundaries = set(boundaries)
        self.batch_symbols = batch_symbols
        self.where = where

    def _large_probe(self) -> int:
        largest, holder = 0, None
        for node in self.nodes:
            for value in _integers([*node.args, *node.kwargs.values()]):
                if value > largest:
                    largest, holder = value, node
        size = max(2 * largest + 3, 2 * SMALL_PROBE + 1)
        if size > MAX_PROBE and holder is not None:
            raise UnsupportedOpError(
                str(holder.target),
                self.where(holder),
                f"the integer constant {largest} in a size-only computation needs a probe "
                f"length of {size}, above the limit of {MAX_PROBE}",
            )
        return size

    def classify(self) -> dict[fx.Node, Canonical]:
        if not self.boundaries:
            return {}
        large = self._large_probe()
        # Batch 2 only at the small length: a window's mask at the large one can take
        # gigabytes, and batch independence shows as well at any length.
        probes = [(1, large), (2, SMALL_PROBE), (1, SMALL_PROBE)]
        forms: dict[fx.Node, Canonical] = {}
        for batch, length in probes:
            self._run(batch, length, forms)
        return forms

    def _concrete(self, shape: Shape, binding: dict[sympy.Symbol, int]) -> tuple[int, ...]:
        return tuple(d if is_static(d) else int(sympy.sympify(d).subs(binding)) for d in shape)

    def _run(self, batch: int, length: int, forms: dict[fx.Node, Canonical]) -> None:
        symbols = {s for n in self.nodes for s in _free_symbols(n)}
        binding = {s: (batch if s in self.batch_symbols else length) for s in symbols}
        remaining = {n: sum(1 for u in n.users if u in self.shape_only) for n in self.nodes}
        values: dict[fx.Node, fx.node.Argument] = {}

        def concrete(arg: fx.Node) -> fx.node.Argument:
            if arg in values:
                return values[arg]
            # A data tensor read only for its shape (new_ones, sym_size, ...).
            meta = arg.meta["val"]
            return torch.zeros(self._concrete(shape_of(meta), binding), dtype=meta.dtype)

        for node in self.nodes:
            if node.meta.get("val") is None:
                continue
            args = fx.node.map_arg(node.args, concrete)
            kwargs = fx.node.map_arg(node.kwargs, concrete)
            assert callable(node.target), "shape-only nodes are call_function nodes"
            try:
                with torch.no_grad():
                    values[node] = node.target(*args, **kwargs)
            except Exception as error:  # torch raises many types; report which node failed
                raise UnsupportedOpError(
                    str(node.target),
                    self.where(node),
                    f"evaluating this size-only computation at batch {batch}, length {length} "
                    f"failed: {error}",
                ) from None
            if node in self.boundaries:
                self._check(node, values[node], forms, batch, length)
            for source in node.all_input_nodes:
                if source in remaining:
                    remaining[source] -= 1
                    if remaining[source] == 0:
                        values.pop(source, None)

    def _check(
        self, node: fx.Node, value: object, forms: dict[fx.Node, Canonical], batch: int, length: int
    ) -> None:
        assert isinstance(value, torch.Tensor)
        if node not in forms:
            found = describe(value, shape_of(node.meta["val"]))
            if found is None:
                raise UnsupportedOpError(
                    str(node.target),
                    self.where(node),
                    "this value is computed from sizes alone but is neither positions (an "
                    "iota), a causal or sliding-window attention mask, nor a constant",
                )
            forms[node] = found
            return
        expected = render(forms[node], tuple(value.shape), value.dtype)
        if not torch.equal(value, expected):
            raise UnsupportedOpError(
                str(node.target),
                self.where(node),
                f"this size-only value looks like {forms[node]} at the largest probe but "
                f"differs at batch {batch}, length {length}",
            )


def _free_symbols(node: fx.Node) -> set[sympy.Symbol]:
    found: set[sympy.Symbol] = set()
    for item in [node, *node.all_input_nodes]:
        meta = item.meta.get("val")
        if isinstance(meta, torch.Tensor):
            for dim in shape_of(meta):
                if not is_static(dim):
                    found |= sympy.sympify(dim).free_symbols
        elif isinstance(meta, torch.SymInt):
            found |= meta.node.expr.free_symbols
    return found
