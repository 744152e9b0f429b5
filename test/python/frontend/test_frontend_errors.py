"""What the front end refuses, and how it says so."""

from __future__ import annotations

import pytest
import torch

from tessera.context import make_context
from tessera.errors import UnsupportedOpError
from tessera.frontend import trace
from tessera.frontend.registry import TRANSLATIONS, supported_ops


class Mixer(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=-1)  # a scan over data: no translation


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mixer = Mixer()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(self.mixer(x))


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)
        self.blocks = torch.nn.ModuleList([Block(), Block()])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x)
        return x


def test_untranslated_op_names_op_and_module_path() -> None:
    with pytest.raises(UnsupportedOpError) as caught:
        trace(Net().eval(), make_context())
    assert caught.value.op == "aten.cumsum.default"
    assert caught.value.module_path == "blocks.0.mixer"
    assert "'aten.cumsum.default'" in str(caught.value)
    assert "'blocks.0.mixer'" in str(caught.value)


def test_dropout_in_training_mode_is_refused() -> None:
    class Noisy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(16, 8)
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.drop(self.embed(input_ids))

    with pytest.raises(UnsupportedOpError, match=r"model\.eval\(\)"):
        trace(Noisy().train(), make_context())


def test_registry_is_keyed_by_overloads() -> None:
    """Nodes carry an overload (aten.add.Tensor), never a packet (aten.add): a packet key
    would never match."""
    assert all(isinstance(op, torch._ops.OpOverload) for op in TRANSLATIONS)
    names = supported_ops()
    assert "aten.linear.default" in names
    assert "aten.scaled_dot_product_attention.default" in names
