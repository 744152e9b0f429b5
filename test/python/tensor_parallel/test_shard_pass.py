"""tessera-shard-tensor-parallel on the mid-level IR of the tiny models: the errors for ranks
that do not divide what they must (naming the size and the ranks), the layout it records,
and the input range the CPU manifest takes from it."""

from __future__ import annotations

import functools

import pytest

import tessera
from tessera.context import make_context, parse_module
from tessera.errors import PassError
from tessera.lowering.cpu.entry_describe import describe_entry
from tessera.models.tiny import CONFIGS, tiny_gemma
from tessera.passes.tp_signature import shard_layout
from tessera.pipeline import run_pipeline
from tessera.runtime.collectives import COMMUNICATOR


@functools.cache
def mid_ir(name: str) -> str:
    return tessera.compile(tiny_gemma(name)).ir("mid")


def sharded(name: str, ranks: int, rank: int) -> object:
    module = parse_module(mid_ir(name), make_context(), f"{name}.mlir")
    run_pipeline(
        module,
        f"builtin.module(tessera-shard-tensor-parallel{{ranks={ranks} rank={rank}}}, "
        "canonicalize, cse)",
    )
    return module


@pytest.mark.parametrize(
    "name,ranks,message",
    [
        ("gemma2-gqa", 3, "the query heads (4) are not divisible by ranks=3"),
        ("gemma3-gqa", 8, "the query heads (4) are not divisible by ranks=8"),
        ("gemma3-mqa-odd", 2, "the query heads (3) are not divisible by ranks=2"),
        ("gemma1-mqa", 2, "the vocabulary (203 rows of"),
    ],
)
def test_sizes_the_ranks_do_not_divide_are_named(name: str, ranks: int, message: str) -> None:
    with pytest.raises(PassError) as raised:
        sharded(name, ranks, 0)
    assert message in str(raised.value)
    assert f"ranks={ranks}" in str(raised.value)
    # The error points at the model's source (the op's location), not at the pass.
    assert raised.value.location is not None


def test_the_layout_names_every_slice() -> None:
    config = CONFIGS["gemma2-gqa"]
    layout = shard_layout(sharded("gemma2-gqa", 2, 1).operation)
    assert layout is not None and (layout.ranks, layout.rank) == (2, 1)
    depth, heads = config["head_dim"], config["num_attention_heads"]
    q = layout.shards["model.layers.2.self_attn.q_proj.weight"]
    assert (q.axis, q.offset, q.size) == (0, heads // 2 * depth, heads // 2 * depth)
    up = layout.shards["model.layers.0.mlp.up_proj.weight"]
    half = config["intermediate_size"] // 2
    assert (up.axis, up.offset, up.size) == (0, half, half)
    # Norm weights, and the communicator, are bound whole.
    assert not any("norm" in name for name in layout.shards)
    assert COMMUNICATOR not in layout.shards


def test_an_unsharded_module_has_no_layout() -> None:
    module = parse_module(mid_ir("gemma2-gqa"), make_context(), "gemma2-gqa.mlir")
    assert shard_layout(module.operation) is None
    run_pipeline(module, "builtin.module(tessera-shard-tensor-parallel{ranks=1 rank=0})")
    assert shard_layout(module.operation) is None


def test_sharding_twice_is_refused() -> None:
    module = sharded("gemma3-gqa", 2, 0)
    with pytest.raises(PassError, match="already sharded"):
        run_pipeline(module, "builtin.module(tessera-shard-tensor-parallel{ranks=2 rank=0})")


def test_the_manifest_keeps_the_full_vocabulary_as_the_token_range() -> None:
    # The vocabulary shard's lookup reads clamped ids, so the range comes from the pass's
    # record, not from the (halved) table: ids of the other rank's half stay valid.
    module = sharded("gemma3-gqa", 2, 0)
    run_pipeline(module, "builtin.module(tessera-cpu-entry-abi)")
    spec = describe_entry(module, "forward", "prefill", dims={"input_ids": ["B", "S"]})
    (ids,) = spec.inputs
    assert ids.range == (0, CONFIGS["gemma3-gqa"]["vocab_size"])
    assert [w.name for w in spec.weights][-1] == COMMUNICATOR
    communicator = spec.weights[-1]
    assert (communicator.dtype, communicator.shape) == ("i64", (1,))
