"""Tensor parallelism end to end on the CPU: two processes (gloo), each compiling and running
its rank's shard of a tiny Gemma 1, 2 and 3, against the same model compiled and run in one
process.

The configurations' head counts, intermediate sizes and vocabularies all divide by 2:
gemma1-mha (4 query and 4 kv heads), gemma2-gqa and gemma3-gqa (4 query heads, 2 kv heads;
Gemma 2's post-attention and post-feedforward norms and softcaps, Gemma 3's QK-norm). A
4-way run of gemma3-gqa has fewer kv heads than ranks, so pairs of ranks keep one kv head.
"""

from __future__ import annotations

from typing import Any

import pytest
import seeds
import torch
from test_tensor_parallel_support import (
    parallel_tolerance,
    relative_error,
    run_ranks,
    single_process,
)

from tessera.models.tiny import CONFIGS

# Each launch compiles every model once per rank (minutes on a small machine).
pytestmark = pytest.mark.slow

TWO_WAY = ("gemma1-mha", "gemma2-gqa", "gemma3-gqa")
NEW_TOKENS = 4


def _prompts(name: str) -> torch.Tensor:
    # Two rows, long enough to cross Gemma 2's and 3's sliding windows (6 and 5).
    vocab = CONFIGS[name]["vocab_size"]
    return torch.randint(0, vocab, (2, 11), generator=seeds.generator())


def _request(name: str) -> dict[str, Any]:
    return {"name": name, "vary": True, "ids": _prompts(name), "new_tokens": NEW_TOKENS}


@pytest.fixture(scope="module")
def two_way() -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each model's request and the results of its two ranks (one launch for all models)."""
    requests = [_request(name) for name in TWO_WAY]
    ranks = run_ranks(2, requests)
    return {
        request["name"]: (request, [results[i] for results in ranks])
        for i, request in enumerate(requests)
    }


@pytest.fixture(scope="module")
def four_way() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    request = _request("gemma3-gqa")
    ranks = run_ranks(4, [request])
    return request, [results[0] for results in ranks]


def _check_against_one_process(
    name: str, request: dict[str, Any], results: list[dict[str, Any]]
) -> None:
    _, compiled = single_process(name)
    ids = request["ids"]
    reference = compiled(ids, return_dict=False)
    expected = compiled.generate(ids, NEW_TOKENS, eos_token_id=None)
    # The weights really differ between ranks: the tokens must come from the collectives.
    assert len({tuple(sorted(r["shards"].items())) for r in results}) == len(results)
    for rank, result in enumerate(results):
        assert result["rank"] == rank
        logits = result["logits"]
        assert logits.shape == reference.shape and logits.dtype == torch.float32
        error = relative_error(logits, reference)
        assert error <= parallel_tolerance(name), f"rank {rank}: relative error {error:.3g}"
        assert torch.equal(logits.argmax(-1), reference.argmax(-1))
        assert torch.equal(result["sequences"], expected), f"rank {rank} generated otherwise"
        # Every rank ends with the same full logits (the all-gather and all-reduces agree).
        assert torch.equal(logits, results[0]["logits"])


@pytest.mark.parametrize("name", TWO_WAY)
def test_two_ranks_match_one_process(
    name: str, two_way: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]
) -> None:
    request, results = two_way[name]
    _check_against_one_process(name, request, results)


@pytest.mark.parametrize("name", TWO_WAY)
def test_each_rank_binds_its_slices(
    name: str, two_way: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]
) -> None:
    config = CONFIGS[name]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    depth, hidden = config["head_dim"], config["intermediate_size"]
    vocab = config["vocab_size"]
    _, results = two_way[name]
    for rank, result in enumerate(results):
        shards = result["shards"]
        layer = "model.layers.1."
        assert shards[layer + "self_attn.q_proj.weight"] == (
            0,
            rank * heads // 2 * depth,
            heads // 2 * depth,
        )
        assert shards[layer + "self_attn.k_proj.weight"] == (
            0,
            rank * kv_heads // 2 * depth,
            kv_heads // 2 * depth,
        )
        assert shards[layer + "self_attn.o_proj.weight"] == (
            1,
            rank * heads // 2 * depth,
            heads // 2 * depth,
        )
        assert shards[layer + "mlp.gate_proj.weight"] == (0, rank * hidden // 2, hidden // 2)
        assert shards[layer + "mlp.down_proj.weight"] == (1, rank * hidden // 2, hidden // 2)
        vocab_shards = [s for n, s in shards.items() if "embed" in n or "lm_head" in n]
        assert vocab_shards == [(0, rank * vocab // 2, vocab // 2)]
        # Norms are computed whole on every rank.
        assert not any("norm" in n for n in shards)
        # One all-reduce per block half and the lookup, one all-gather of the logits.
        layers = config["num_hidden_layers"]
        assert result["fused"]["tessera.collective.all_reduce"] == 2 * layers + 1
        assert result["fused"]["tessera.collective.all_gather"] == 1


def test_four_ranks_share_kv_heads(
    four_way: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    request, results = four_way
    _check_against_one_process("gemma3-gqa", request, results)
    depth = CONFIGS["gemma3-gqa"]["head_dim"]
    # Two kv heads over four ranks: ranks 0 and 1 keep kv head 0, ranks 2 and 3 kv head 1.
    for rank, result in enumerate(results):
        k = result["shards"]["model.layers.0.self_attn.k_proj.weight"]
        assert k == (0, (rank // 2) * depth, depth)
