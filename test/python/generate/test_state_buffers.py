"""The cache programs in the artifact: ``state`` buffers in the manifest (a decode program next
to prefill), bound once and checked like weights, the layout in the metadata, and generation
from a saved artifact with the runtime alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import seeds
import torch
from test_generate_support import compiled, left_padded

import tessera
from tessera import RuntimeInputError, runtime
from tessera.runtime import generate, kv_layout
from tessera.runtime.manifest import ArtifactError
from tessera.runtime.sampling import Sampling


def test_the_manifest_holds_prefill_prefill_kv_and_decode() -> None:
    model, cm = compiled("gemma2-gqa")
    manifest = cm.manifest
    assert [p.name for p in manifest.programs] == ["prefill", "prefill_kv", "decode"]
    assert manifest.program("prefill").buffers == ()
    decode = manifest.program("decode")
    config = model.config
    states = {b.name: b for b in decode.buffers}
    assert set(states) == {f"kv.{i}.{p}" for i in range(config.num_hidden_layers) for p in "kv"}
    assert all(b.kind == "state" for b in decode.buffers)
    # Layer 0 is sliding, layer 1 global (Gemma 2 alternates).
    assert states["kv.0.k"].shape == ("blocks_sliding", 2, 16, config.head_dim)
    assert states["kv.1.v"].shape == ("blocks_global", 2, 16, config.head_dim)
    inputs = {t.name: t.shape for t in decode.inputs}
    assert inputs["input_ids"] == ("B", 1) and inputs["positions"] == ("B", 1)
    assert inputs["block_table.sliding"] == ("B", "table_sliding")
    assert decode.outputs[0].shape == ("B", 1, config.vocab_size)
    layout = kv_layout.KvLayout.from_json(manifest.metadata[kv_layout.METADATA_KEY])
    assert layout.group("sliding").window == config.sliding_window
    assert layout.group("global").window is None
    assert [layer.group for layer in layout.layers] == ["sliding", "global", "sliding"]
    assert runtime.parse_manifest(manifest.to_json()) == manifest


def test_a_program_with_state_refuses_calls_until_it_is_bound() -> None:
    _, cm = compiled("gemma1-mqa")
    decode = cm._load()["decode"]
    assert isinstance(decode, runtime.Program)
    with pytest.raises(RuntimeInputError, match=r"reads and writes state buffers .* bind_state"):
        decode(torch.zeros((1, 1), dtype=torch.int64))


def state_for(
    cm: tessera.CompiledModel, blocks: int, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    spec = cm.manifest.program("decode")
    return {
        b.name: torch.zeros([blocks if isinstance(d, str) else d for d in b.shape], dtype=dtype)
        for b in spec.buffers
    }


def test_state_is_checked_when_bound() -> None:
    _, cm = compiled("gemma1-mqa")
    decode = cm._load()["decode"]
    assert isinstance(decode, runtime.Program)
    good = state_for(cm, 4)
    decode.bind_state(good)
    decode.unbind_state()
    missing = dict(good)
    missing.pop("kv.1.v")
    with pytest.raises(RuntimeInputError, match=r"missing state buffers: kv\.1\.v"):
        decode.bind_state(missing)
    with pytest.raises(RuntimeInputError, match=r"has no state buffers kv\.9\.k"):
        decode.bind_state({**good, "kv.9.k": good["kv.0.k"]})
    with pytest.raises(RuntimeInputError, match=r"state 'kv.0.k' .* expected f32\["):
        decode.bind_state({**good, "kv.0.k": good["kv.0.k"].bfloat16()})
    strided = torch.zeros(good["kv.0.k"].shape[::-1]).transpose(0, 3)
    with pytest.raises(RuntimeInputError, match="must be contiguous"):
        decode.bind_state({**good, "kv.0.k": strided})
    with pytest.raises(RuntimeInputError, match=r"\(blocks_global\) is 5, but state 'kv.0.k'"):
        decode.bind_state({**good, "kv.0.v": state_for(cm, 5)["kv.0.v"]})
    with pytest.raises(RuntimeInputError, match="must be at least 1"):
        decode.bind_state(state_for(cm, 0))


def test_the_layout_in_the_metadata_is_checked() -> None:
    with pytest.raises(ArtifactError, match=r"metadata\.kv_cache: malformed"):
        kv_layout.KvLayout.from_json({"block_size": 16, "groups": [{"name": "g"}], "layers": []})
    with pytest.raises(ArtifactError, match="names group 'x'"):
        kv_layout.KvLayout.from_json(
            {
                "block_size": 16,
                "groups": [{"name": "global", "window": None}],
                "layers": [{"layer": 0, "group": "x", "k": "a", "v": "b"}],
            }
        )


def test_a_saved_artifact_generates_with_the_runtime_alone(tmp_path: Path) -> None:
    model, cm = compiled("gemma3-gqa")
    ids, mask = left_padded([9, 5], model.config.vocab_size, seeds.generator())
    expected = cm.generate(ids, 8, attention_mask=mask, eos_token_id=None)
    folder = cm.save(tmp_path / "saved")
    artifact = runtime.load(folder)
    artifact.bind(model.state_dict())
    programs = generate.cached_programs(artifact.manifest, artifact.programs)
    request = generate.Request(8, Sampling(), None, frozenset(), 0)
    steps = generate.decode_steps(programs, ids, mask.bool(), request)
    tokens = torch.stack([step.tokens for step in steps], dim=1)
    assert torch.equal(tokens, expected[:, ids.shape[1] :])
