"""Values computed from sizes alone: classification by probing (``describe``), the canonical
forms written for them, and the errors for values that are none of them."""

from __future__ import annotations

import pytest
import sympy
import torch

from tessera.context import make_context, parse_module
from tessera.errors import UnsupportedOpError
from tessera.frontend import trace
from tessera.frontend.canonical import Iota, Mask, Splat, emit, render
from tessera.frontend.emitter import Emitter
from tessera.frontend.shape_only import MAX_PROBE, describe
from tessera.ir_walk import walk_ops
from tessera.passes.scalar_eval import evaluate_generic_body

S = 11  # the concrete sequence length of the probed values below
SYMBOLIC = sympy.Symbol("s")  # their symbolic length, as torch.export writes it


def causal(length: int, window: int | None = None) -> torch.Tensor:
    q = torch.arange(length).unsqueeze(1)
    k = torch.arange(length).unsqueeze(0)
    allowed = k <= q
    return allowed & (q - k < window) if window is not None else allowed


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)


MASK_SHAPE = (2, 1, SYMBOLIC, SYMBOLIC)


@pytest.mark.parametrize("window", [None, 1, 3, 10])
def test_bool_masks_are_causal_with_the_right_window(window: int | None) -> None:
    mask = causal(S, window).expand(2, 1, S, S)
    assert describe(mask, MASK_SHAPE) == Mask(window, additive=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [None, 4])
def test_additive_masks_hold_zero_and_lowest(dtype: torch.dtype, window: int | None) -> None:
    mask = additive(causal(S, window), dtype).expand(2, 1, S, S)
    assert describe(mask, MASK_SHAPE) == Mask(window, additive=True)
    assert torch.equal(render(Mask(window, True), tuple(mask.shape), dtype), mask)


def test_positions_are_an_iota_along_the_sequence_axis() -> None:
    positions = torch.arange(S).unsqueeze(0).expand(3, S)
    assert describe(positions, (SYMBOLIC, SYMBOLIC)) == Iota(1)
    as_float = torch.arange(S, dtype=torch.float32).reshape(1, S, 1)
    assert describe(as_float, (1, SYMBOLIC, 1)) == Iota(1)


def test_constant_values_are_splats() -> None:
    assert describe(torch.zeros(()), ()) == Splat(0.0)
    assert describe(torch.ones(2, 1, S, S, dtype=torch.bool), MASK_SHAPE) == Splat(True)


@pytest.mark.parametrize(
    "value",
    [
        torch.rand(2, 1, S, S) > 0.5,  # no pattern
        causal(S).T.expand(2, 1, S, S),  # anti-causal
        torch.where(causal(S), 0.0, float("-inf")).expand(2, 1, S, S),  # -inf, not lowest
        torch.stack([causal(S), causal(S, 2)]).unsqueeze(1),  # differs per batch
        torch.arange(S) % 3,  # not an iota
    ],
)
def test_other_values_have_no_canonical_form(value: torch.Tensor) -> None:
    shape = MASK_SHAPE if value.dim() == 4 else (SYMBOLIC,)
    assert describe(value, shape) is None


@pytest.mark.parametrize(
    ("form", "dtype"),
    [
        (Mask(None, False), torch.bool),
        (Mask(3, False), torch.bool),
        (Mask(None, True), torch.float32),
        (Mask(2, True), torch.bfloat16),
        (Iota(1), torch.int64),
    ],
)
def test_emitted_forms_compute_what_they_stand_for(form: Mask | Iota, dtype: torch.dtype) -> None:
    """The no-input generic's body, evaluated at every index, reproduces ``render``."""
    emitter = Emitter({})
    shape = (2, 1, 6, 6) if isinstance(form, Mask) else (2, 6)
    value = emit(emitter, form, shape, dtype)
    text = "\n".join(
        [
            f"func.func @f() -> {emitter.type_of(value)} {{",
            *emitter.prologue,
            *emitter.lines,
            f"  return {emitter.value(value)} : {emitter.type_of(value)}",
            "}",
        ]
    )
    module = parse_module(text, make_context())
    (generic,) = [op for op in walk_ops(module.operation) if op.name == "linalg.generic"]
    expected = render(form, shape, dtype)
    for index in torch.cartesian_prod(*[torch.arange(n) for n in shape]).tolist():
        found = evaluate_generic_body(generic, tuple(index))
        assert found == expected[tuple(index)].item(), (form, index)


# -- probing inside a traced graph ------------------------------------------------------------


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


def test_traced_window_becomes_the_canonical_mask() -> None:
    program = trace(WindowedAttention(window=5).eval(), make_context())
    windows = [
        op
        for op in walk_ops(program.module.operation)
        if op.name == "arith.constant"
        and str(op.results[0].type) == "index"
        and op.parent.name == "linalg.generic"
    ]
    assert [int(op.attributes["value"].value) for op in windows] == [5]


def test_window_beyond_the_probe_limit_is_refused() -> None:
    too_wide = (MAX_PROBE - 3) // 2 + 1
    with pytest.raises(UnsupportedOpError, match=f"{too_wide}.*limit of {MAX_PROBE}"):
        trace(WindowedAttention(window=too_wide).eval(), make_context())


class PeriodicBias(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        phase = (torch.arange(input_ids.shape[1]) % 3).float()
        return self.embed(input_ids) + phase.unsqueeze(-1)


def test_size_only_value_without_canonical_form_is_refused() -> None:
    with pytest.raises(UnsupportedOpError, match="neither positions") as caught:
        trace(PeriodicBias().eval(), make_context())
    assert caught.value.op.startswith("aten.")
