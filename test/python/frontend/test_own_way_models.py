"""Gemma-like models written by hand (``own_way_models.py``) compile and run as written.

For each: one ``tessera.compile`` on the CPU serves two sequence lengths (one odd) with logits
matching the eager model, and the fused IR holds the tessera ops of Gemma's pattern with the
attention attributes the model's masks and softcaps imply. Ops that truly cannot be compiled
are refused naming the op and the module that ran it.
"""

from __future__ import annotations

import math
import re
from functools import cache

import pytest
import seeds
import torch
from own_way_models import SPECS, Spec

import tessera
from tessera.context import make_context
from tessera.errors import UnsupportedOpError
from tessera.frontend import trace

LENGTHS = (6, 11)
BATCH = 2
# Rounding errors of a length-K f32 dot product grow like eps·√K; the constant covers the
# layers they pass through (and softmax, softcap and norm amplifying them a little).
ERROR_PER_ROUNDING = 16


def tolerance(dtype: torch.dtype, longest_reduction: int) -> float:
    """The relative error allowed in the logits of a model computing in ``dtype``."""
    return ERROR_PER_ROUNDING * torch.finfo(dtype).eps * math.sqrt(longest_reduction)


def randomized(spec: Spec) -> torch.nn.Module:
    """The model with seeded weights: norms get random gains (their zero init would hide the
    1 + w offset), everything else keeps torch's seeded default init."""
    model = spec.build().eval()
    generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model


@cache
def compiled(name: str) -> tuple[torch.nn.Module, tessera.CompiledModel]:
    """The model and its one compile, shared by the tests of that model (built under its own
    seed, whichever test asks first)."""
    with torch.random.fork_rng():
        torch.manual_seed(seeds.derive(seeds.session_seed(), "own_way_models", name))
        model = randomized(SPECS[name])
    return model, tessera.compile(model, target="cpu")


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out.double() - reference.double()).norm() / reference.double().norm())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPECS))
def test_logits_match_eager_at_two_lengths_with_one_compile(name: str) -> None:
    model, program = compiled(name)
    # Batch and sequence stay dynamic: the one program serves every length.
    assert re.search(r"func\.func @forward\(%\w+: tensor<\?x\?xi64>", program.ir("high"))
    vocab = model.embed.weight.shape[0]
    bound = tolerance(torch.float32, SPECS[name].longest_reduction)
    for length in LENGTHS:
        ids = torch.randint(0, vocab, (BATCH, length), generator=seeds.generator())
        with torch.no_grad():
            reference = model(ids)
        out = program(ids).logits
        assert out.shape == reference.shape == (BATCH, length, vocab)
        error = relative_error(out, reference)
        assert error <= bound, (name, length, error, bound)


def _fused_ops(text: str) -> dict[str, list[str]]:
    """Each tessera op of the fused IR (but regions) with its attribute text."""
    found: dict[str, list[str]] = {}
    for match in re.finditer(r'"tessera\.([a-z_.]+)"\(([^)]*)\)[^{\n]*(\{[^}\n]*\})?', text):
        name = match.group(1)
        if name not in ("region", "yield"):
            found.setdefault(name, []).append(match.group(3) or "")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPECS))
def test_fused_ir_holds_gemmas_ops(name: str) -> None:
    spec = SPECS[name]
    _, program = compiled(name)
    fused = _fused_ops(program.ir("mid"))
    counts = {op: len(fused.get(op, [])) for op in spec.fused}
    assert counts == spec.fused, name
    attention = fused.get("attention.flash", [])
    if not attention:
        return
    windows = [re.search(r"window = (\d+)", a) for a in attention]
    assert [int(w.group(1)) if w else None for w in windows] == list(spec.windows)
    assert all("causal = true" in a for a in attention)
    for attributes in attention:
        softcap = re.search(r"softcap = ([0-9.e+-]+)", attributes)
        assert (float(softcap.group(1)) if softcap else None) == spec.softcap


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPECS))
def test_regions_are_sliding_where_the_mask_has_a_window(name: str) -> None:
    _, program = compiled(name)
    kinds = re.findall(r'kind = "(\w+)"', program.ir("high"))
    assert kinds == ["global" if w is None else "sliding" for w in SPECS[name].windows]


# -- what is refused --------------------------------------------------------------------------


class ComplexRotary(torch.nn.Module):
    """Rotary embedding through complex numbers: Tessera has no complex dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        angles = torch.outer(torch.arange(length).float(), torch.ones(4))
        rotation = torch.polar(torch.ones_like(angles), angles)
        pairs = torch.view_as_complex(self.proj(x).reshape(*x.shape[:-1], 4, 2))
        return torch.view_as_real(pairs * rotation).flatten(-2)


class SortedPositions(torch.nn.Module):
    """Positions through a sort: a size-only computation with no symbolic form."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(torch.arange(x.shape[1]) % 3)
        return x + order[None, :, None].float()


class Tiny(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)
        self.blocks = torch.nn.ModuleList([inner])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x)
        return x


@pytest.mark.parametrize(
    ("inner", "op"),
    [
        (ComplexRotary, "aten.polar.default"),
        (SortedPositions, "aten.argsort.default"),
    ],
)
def test_unsupported_ops_name_the_op_and_module(inner: type[torch.nn.Module], op: str) -> None:
    with pytest.raises(UnsupportedOpError) as caught:
        trace(Tiny(inner()).eval(), make_context())
    assert caught.value.op == op
    assert caught.value.module_path == "blocks.0"
    assert f"'{op}'" in str(caught.value) and "'blocks.0'" in str(caught.value)
