"""Constant folding over symbolic shapes (``folder.py``): values computed from sizes and
constants are evaluated symbolically, keep the sequence length a symbol, are written as IR that
computes them from the dynamic size, and agree with torch at every length."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import seeds
import sympy
import torch
from mlir import ir

import tessera
from tessera.context import make_context, parse_module
from tessera.errors import UnsupportedOpError
from tessera.frontend import trace
from tessera.frontend.emitter import Emitter
from tessera.frontend.folded import Folded
from tessera.frontend.folder import fold
from tessera.frontend.graph import analyze
from tessera.frontend.mask_window import mask_window
from tessera.frontend.term_build import evaluate, number
from tessera.frontend.term_writer import TermWriter
from tessera.frontend.terms import Apply, Cast, Choose, Number, Read, Sym, Term, index_symbol
from tessera.frontend.trace import export
from tessera.frontend.types import shape_of
from tessera.ir_walk import walk_ops
from tessera.passes.scalar_eval import evaluate_generic_body

Build = Callable[[torch.Tensor], torch.Tensor]


class Holder(torch.nn.Module):
    """Returns ``scale · build(input_ids)`` (a select by it for a bool): the built value is
    what the folder computes, the op with a weight what it hands to the translator."""

    def __init__(self, build: Build) -> None:
        super().__init__()
        self.build = build
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        value = self.build(input_ids)
        if value.dtype == torch.bool:
            return torch.where(value, self.scale, 0.0)
        return self.scale * value


def folded_value(build: Build) -> tuple[Folded, list[sympy.Symbol]]:
    """The folded value ``build`` gives the weight product, and the [batch, length] symbols."""
    model = Holder(build).eval()
    exported, _ = export(model)
    folding = fold(exported, analyze(exported, model, "model"))
    (boundary,) = folding.boundaries
    value = folding.values[boundary]
    assert isinstance(value, Folded)
    ids = next(n for n in exported.graph.nodes if n.op == "placeholder" and "input" in n.name)
    sizes = [d for d in shape_of(ids.meta["val"]) if isinstance(d, sympy.Symbol)]
    return value, sizes


def value_at(term: Term, binding: dict[sympy.Symbol, int]) -> float | int | bool:
    """A term's number once indices and sizes are bound (an interpreter for the tests)."""
    if isinstance(term, Sym):
        found = term.expr.xreplace({k: sympy.Integer(v) for k, v in binding.items()})
        if term.dtype == torch.bool:
            return bool(found)
        return int(found)
    if isinstance(term, Number):
        return term.value
    if isinstance(term, Cast):
        source = value_at(term.source, binding)
        return torch.tensor(source, dtype=term.source.dtype).to(term.dtype).item()
    if isinstance(term, Apply):
        operands = [
            number(value_at(o, binding), o.dtype) if isinstance(o, Term) else o
            for o in term.operands
        ]
        return value_at(evaluate(term.op, operands, term.ranks, dict(term.options)), {})
    if isinstance(term, Choose):
        chosen = term.then if value_at(term.condition, binding) else term.otherwise
        return value_at(chosen, binding)
    assert isinstance(term, Read)
    point = [int(e.xreplace({k: sympy.Integer(v) for k, v in binding.items()})) for e in term.index]
    return term.table.tensor[tuple(point)].item()


def arange(ids: torch.Tensor) -> torch.Tensor:
    return torch.arange(ids.shape[1])


CONSTRUCTIONS: dict[str, Build] = {
    "transformers_mask": lambda ids: _transformers_mask(ids),
    "triu_of_full": lambda ids: torch.full((ids.shape[1],) * 2, float("-inf")).triu(1),
    "tril_of_ones": lambda ids: torch.tril(
        torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool)
    ),
    "window_by_comparisons": lambda ids: (
        (arange(ids)[None] <= arange(ids)[:, None])
        & ~(arange(ids)[:, None] - arange(ids)[None] >= 3)
    ),
    "aligned_to_the_end": lambda ids: (
        arange(ids)[None] <= arange(ids)[:, None] + (ids.shape[1] - ids.size(1))
    ),
    "additive_where": lambda ids: torch.where(
        torch.tril(torch.ones(ids.shape[1], ids.shape[1])) == 0, torch.finfo(torch.float32).min, 0.0
    ),
    "masked_fill_of_zeros": lambda ids: ids.new_zeros(
        ids.shape[1], ids.shape[1], dtype=torch.float32
    ).masked_fill(arange(ids)[None] > arange(ids)[:, None], -1e9),
    "rope_angles": lambda ids: torch.outer(
        torch.arange(ids.shape[1], dtype=torch.float32),
        1.0 / (10000.0 ** (torch.arange(0, 8, 2).float() / 8)),
    ).cos(),
    "einsum_positions": lambda ids: torch.einsum(
        "bs,f->bsf",
        arange(ids).float().expand(ids.shape[0], -1),
        torch.pow(500.0, -torch.arange(3.0)),
    ),
    "remainder_and_floor": lambda ids: arange(ids) % 3 + arange(ids) // 2,
    "split_radix": lambda ids: torch.arange(2 * ids.shape[1]).view(ids.shape[1], 2).flip(1),
    "cat_and_transpose": lambda ids: torch.cat([arange(ids)[None], 3 * arange(ids)[None]]).t(),
    "cumsum_of_ones": lambda ids: torch.ones(ids.shape[1], dtype=torch.int64).cumsum(0),
    "repeat_interleave": lambda ids: torch.repeat_interleave(arange(ids)[None], 2, dim=0) - 1,
    "stack_pairs": lambda ids: torch.stack([arange(ids), -arange(ids)], dim=-1).flatten(),
    "sqrt_of_a_size": lambda ids: torch.rsqrt(torch.tensor(16.0)) * arange(ids).float(),
}


def _transformers_mask(ids: torch.Tensor) -> torch.Tensor:
    """How transformers 5 builds a causal mask with packed-sequence detection."""
    batch, length = ids.shape
    positions = torch.arange(length).unsqueeze(0).expand(batch, -1)
    first = positions[:, :1] - 1
    starts = (torch.diff(positions, dim=-1, prepend=first) != 1).cumsum(-1)
    rows = torch.arange(batch)[:, None, None, None]
    query = positions[rows, torch.arange(length)[None, None, :, None]]
    key = positions[rows, torch.arange(length)[None, None, None, :]]
    same = (
        starts[rows, torch.arange(length)[None, None, :, None]]
        == starts[rows, torch.arange(length)[None, None, None, :]]
    )
    return (key <= query) & same


@pytest.mark.parametrize("name", sorted(CONSTRUCTIONS))
def test_folded_values_agree_with_torch_at_every_index(name: str) -> None:
    build = CONSTRUCTIONS[name]
    value, sizes = folded_value(build)
    for batch, length in ((2, 5), (1, 9)):
        ids = torch.zeros(batch, length, dtype=torch.int64)
        expected = build(ids)
        concrete = dict(zip(sizes, (batch, length)[-len(sizes) :], strict=True))
        shape = [int(sympy.sympify(d).xreplace(concrete)) for d in value.shape]
        assert shape == list(expected.shape), name
        symbols = [index_symbol(a) for a in range(value.rank)]
        term = value.at(symbols)
        for point in (
            torch.cartesian_prod(*[torch.arange(n) for n in shape]).reshape(-1, len(shape)).tolist()
        ):
            binding = {**concrete, **dict(zip(symbols, point, strict=True))}
            assert value_at(term, binding) == expected[tuple(point)].item(), (name, length, point)


def test_sizes_cancel_and_masks_reduce_to_index_comparisons() -> None:
    """transformers' mask (aranges indexed by aranges, diff and cumsum over positions) folds
    to ``key <= query``; the end-aligned mask's T − S is gone."""
    for name in ("transformers_mask", "aligned_to_the_end"):
        value, sizes = folded_value(CONSTRUCTIONS[name])
        term = value.at([index_symbol(a) for a in range(value.rank)])
        assert isinstance(term, Sym)
        assert not term.expr.free_symbols & set(sizes), name
        query, key = index_symbol(value.rank - 2), index_symbol(value.rank - 1)
        assert term.expr == sympy.Le(key - query, 0), name


@pytest.mark.parametrize(("name", "window"), [("window_by_comparisons", 3), ("tril_of_ones", None)])
def test_mask_windows_are_read_off_the_terms(name: str, window: int | None) -> None:
    value, _ = folded_value(CONSTRUCTIONS[name])
    found = mask_window(value)
    assert found is not None and found.window == window


# -- the IR written for folded values ------------------------------------------------------


def _written(term: Term, shape: tuple[int, ...]) -> tuple[ir.Module, list[ir.Operation]]:
    """The module written for ``term`` over ``shape``, and its generic ops."""
    emitter = Emitter({})
    result = TermWriter(emitter).term(term, shape)
    name = emitter.value(result)
    text = "\n".join(
        [
            f"func.func @f() -> {emitter.type_of(result)} {{",
            *emitter.prologue,
            *emitter.lines,
            f"  return {name} : {emitter.type_of(result)}",
            "}",
        ]
    )
    module = parse_module(text, make_context())
    return module, [op for op in walk_ops(module.operation) if op.name == "linalg.generic"]


@pytest.mark.parametrize("window", [None, 1, 4])
def test_written_masks_compute_what_they_stand_for(window: int | None) -> None:
    query, key = index_symbol(0), index_symbol(1)
    allowed = sympy.Le(key - query, 0)
    if window is not None:
        allowed = sympy.And(allowed, sympy.Lt(query - key - window, 0))
    _module, (generic,) = _written(Sym(allowed, torch.bool), (7, 7))
    rows = torch.arange(7)[:, None]
    columns = torch.arange(7)[None]
    expected = columns <= rows
    if window is not None:
        expected &= rows - columns < window
    for q in range(7):
        for k in range(7):
            assert evaluate_generic_body(generic, (q, k)) == bool(expected[q, k]), (q, k)


def test_positions_are_one_iota_over_the_axis_they_vary_along() -> None:
    """A term of one index is written over that axis alone, then viewed and broadcast: the
    rotary positions the fusion reads are a rank-1 i64 iota."""
    _module, (generic,) = _written(Sym(index_symbol(1), torch.int64), (1, 6, 1))
    assert str(generic.results[0].type) == "tensor<6xi64>"
    assert [evaluate_generic_body(generic, (i,)) for i in range(6)] == list(range(6))


# -- traced models ---------------------------------------------------------------------------


class WindowedAttention(torch.nn.Module):
    """Builds its own mask from the sequence length, as transformers does."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.window = window
        self.embed = torch.nn.Embedding(16, 8)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids).unsqueeze(1)
        length = input_ids.shape[1]
        q = torch.arange(length).unsqueeze(1)
        k = torch.arange(length).unsqueeze(0)
        allowed = (k <= q) & (q - k < self.window)
        return torch.nn.functional.scaled_dot_product_attention(x, x, x, attn_mask=allowed)


def _mask_constants(window: int) -> list[int]:
    """The index constants of the traced model (the mask's body compares with them)."""
    program = trace(WindowedAttention(window).eval(), make_context())
    masks = [
        op
        for op in walk_ops(program.module.operation)
        if op.name == "linalg.generic" and str(op.results[0].type).endswith("xi1>")
    ]
    assert len(masks) == 1
    return [int(v) for v in re.findall(r"arith\.constant (-?\d+) : index", str(program.module))]


@pytest.mark.parametrize("window", [5, 100_000])
def test_traced_windows_of_any_width_fold(window: int) -> None:
    """No probe length bounds the window: it is a constant of the mask's body."""
    assert window in _mask_constants(window)


class PeriodicBias(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        phase = (torch.arange(input_ids.shape[1]) % 3).float()
        return self.embed(input_ids) + phase.unsqueeze(-1)


def test_size_only_values_of_any_form_are_written() -> None:
    program = trace(PeriodicBias().eval(), make_context())
    (generic,) = [
        op
        for op in walk_ops(program.module.operation)
        if op.name == "linalg.generic" and not op.operands[:-1]
    ]
    assert [evaluate_generic_body(generic, (i,)) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]


class SortedPositions(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(torch.arange(input_ids.shape[1]) % 3)
        return self.embed(input_ids) + order[None, :, None].float()


def test_a_size_only_op_without_evaluation_or_translation_is_refused_with_why() -> None:
    with pytest.raises(UnsupportedOpError) as caught:
        trace(SortedPositions().eval(), make_context())
    assert caught.value.op == "aten.argsort.default"
    assert "sizes and constants alone" in str(caught.value)
    assert "no symbolic evaluation" in str(caught.value)


class PeriodicTable(torch.nn.Module):
    """Reads a non-persistent table at positions modulo its length: a read of a constant at
    an index computed from the dynamic length."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)
        self.register_buffer("table", torch.randn(4, 8), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = self.table[torch.arange(input_ids.shape[1]) % 4]
        phase = (torch.arange(input_ids.shape[1]) % 3).float()[:, None]
        return self.embed(input_ids) * rows + phase


@pytest.mark.slow
def test_reads_and_remainders_of_the_length_run_as_torch_computes_them() -> None:
    model = PeriodicTable().eval()
    compiled = tessera.compile(model, target="cpu")
    for length in (5, 10):
        ids = torch.randint(0, 16, (2, length), generator=seeds.generator())
        with torch.no_grad():
            expected = model(ids)
        assert torch.allclose(compiled(ids).logits, expected, rtol=1e-6, atol=1e-6), length
