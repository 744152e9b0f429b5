"""The tessera-fuse named pipeline, end to end on a miniature Gemma 2 forward."""

from __future__ import annotations

from pathlib import Path

from test_fuse_norm_mlp_proj_ir import (
    assert_fusion_preserves,
    op_names,
    parse,
    random_inputs,
    run,
)

from tessera.pass_registry import PIPELINES, load_all
from tessera.pipeline import expand, parse_pipeline

FORWARD = Path(__file__).parents[2] / "lit" / "passes" / "tessera-fuse.mlir"


def test_pipeline_lists_the_fusions_in_order() -> None:
    load_all()
    elements, _ = PIPELINES["tessera-fuse"]
    assert elements == (
        "canonicalize",
        "cse",
        "tessera-fuse-attention",
        "tessera-fuse-rope",
        "tessera-fuse-rms-norm",
        "tessera-fuse-gated-mlp",
        "tessera-fuse-proj",
        "tessera-fuse-lookup",
        "canonicalize",
        "cse",
    )


def test_pipeline_expands_with_the_tessera_cleanups() -> None:
    names = [e.name for e in expand(parse_pipeline("builtin.module(tessera-fuse)"))]
    assert names[:4] == ["canonicalize", "tessera-dce", "cse", "tessera-cse"]
    assert names[-4:] == ["canonicalize", "tessera-dce", "cse", "tessera-cse"]


def test_forward_is_fused_and_computes_the_same_logits() -> None:
    text = FORWARD.read_text()
    inputs = random_inputs(text, sizes=(2, 3))
    fused = assert_fusion_preserves(text, "tessera-fuse", inputs, rtol=2e-2)
    tessera_ops = [n for n in op_names(fused) if n.startswith("tessera.")]
    assert sorted(tessera_ops) == sorted(
        [
            "tessera.tensor.lookup",
            "tessera.norm.rms",
            "tessera.mlp.swi_glu",
            "tessera.yield",
            "tessera.region",
            "tessera.norm.rms",
            "tessera.mma.proj",
        ]
    )
    assert not any(n.startswith("linalg.") for n in op_names(fused))


def test_fusing_twice_changes_nothing() -> None:
    once = str(run(FORWARD.read_text(), "tessera-fuse"))
    assert str(run(once, "tessera-fuse")) == once
    assert str(parse(once)) == once
