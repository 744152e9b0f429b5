"""A module's fingerprint (what its traced IR follows from) is stable for equal modules and
changes with everything tracing reads, but not with parameter values (bound at run time)."""

from __future__ import annotations

import torch

from tessera.models.tiny import tiny_gemma
from tessera.module_key import module_fingerprint, weights_by_name


def test_equal_modules_have_equal_fingerprints() -> None:
    assert module_fingerprint(tiny_gemma("gemma2-gqa")) == module_fingerprint(
        tiny_gemma("gemma2-gqa")
    )


def test_parameter_values_do_not_count_but_shapes_config_and_buffers_do() -> None:
    model = tiny_gemma("gemma3-gqa")
    base = module_fingerprint(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert module_fingerprint(model) == base
    assert module_fingerprint(tiny_gemma("gemma2-gqa")) != base
    assert module_fingerprint(tiny_gemma("gemma3-gqa", dtype=torch.bfloat16)) != base
    name, buffer = next(iter(model.named_buffers()))
    buffer.mul_(2.0)
    assert module_fingerprint(model) != base, name
    model = tiny_gemma("gemma3-gqa")
    model.config.rope_theta = 1234.0
    assert module_fingerprint(model) != base


def test_a_class_without_source_has_no_fingerprint() -> None:
    cls = type("Built", (torch.nn.Linear,), {})  # made at run time: no source to read
    assert module_fingerprint(cls(2, 2)) is None


def test_weights_by_name_finds_tied_weights_and_refuses_unknown_names() -> None:
    model = tiny_gemma("gemma1-mqa")
    found = weights_by_name(model, ["lm_head.weight", "model.embed_tokens.weight"])
    assert found is not None
    assert found["lm_head.weight"].data_ptr() == found["model.embed_tokens.weight"].data_ptr()
    assert weights_by_name(model, ["model.nothing.weight"]) is None
