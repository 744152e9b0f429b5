"""Peak host memory while loading a checkpoint of a few hundred MB.

Each case runs in a fresh Python process, which reports its resident set before the case (after
every import) and its peak after it; the increase is what the case cost at its worst moment. The
peak is /proc's ``VmHWM``, the high-water mark of the process's own memory: ``ru_maxrss`` would
not do, since Linux carries it across ``exec`` from the forking process (here, pytest itself).

The bounds derive from the checkpoint's size: streaming and tracing hold no more than a tensor at
a time (well under half the checkpoint), and loading into a model adds the model and not a second
copy of it (file pages kept mapped, a second model).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import seeds
import torch
from safetensors.torch import save_file
from transformers import GemmaConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path("/proc/self/status").is_file(), reason="reads the resident set from /proc"
    ),
]

# 4 layers of hidden size 1024 (MLP 4096) and an 8192-token vocabulary: 273 MB in float32,
# the largest tensor (the embedding) 34 MB; as safetensors, one shard per layer.
CONFIG = dict(
    vocab_size=8192,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=1,
    head_dim=128,
    max_position_embeddings=256,
)

MEASURE = textwrap.dedent(
    """
    import sys
    import torch, transformers
    from tessera.checkpoints import load_hf_checkpoint, open_checkpoint

    transformers.GemmaForCausalLM  # import the model's code before the baseline

    def status(field: str) -> int:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {field} in /proc/self/status")

    case, path = sys.argv[1], sys.argv[2]
    before = status("VmRSS")
    if case == "stream":
        # Each tensor is read through, as an upload to a device would.
        checksum = 0.0
        for item, tensor in open_checkpoint(path).tensors():
            checksum += float(tensor.sum())
        print("checksum", checksum)
    elif case == "tracing-model":
        model = open_checkpoint(path).model_for_tracing()
    elif case == "load":
        model = load_hf_checkpoint(path)
        assert not any(parameter.is_meta for parameter in model.parameters())
    peak = status("VmHWM")
    print("increase", peak - before)
    """
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """The same float32 Gemma weights as a sharded safetensors checkpoint and as a gemma_pytorch
    .ckpt; returns both folders and the bytes of the weights."""
    folder = tmp_path_factory.mktemp("big-checkpoint")
    ckpt = tmp_path_factory.mktemp("big-ckpt")
    config = GemmaConfig(**CONFIG)
    config.save_pretrained(folder)
    config.save_pretrained(ckpt)
    generator = seeds.generator()
    hidden, mlp, heads = config.hidden_size, config.intermediate_size, 8 * 128

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.02

    shards = [{"model.embed_tokens.weight": draw(config.vocab_size, hidden)}]
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        shards.append(
            {
                prefix + "self_attn.q_proj.weight": draw(heads, hidden),
                prefix + "self_attn.k_proj.weight": draw(128, hidden),
                prefix + "self_attn.v_proj.weight": draw(128, hidden),
                prefix + "self_attn.o_proj.weight": draw(hidden, heads),
                prefix + "mlp.gate_proj.weight": draw(mlp, hidden),
                prefix + "mlp.up_proj.weight": draw(mlp, hidden),
                prefix + "mlp.down_proj.weight": draw(hidden, mlp),
                prefix + "input_layernorm.weight": draw(hidden),
                prefix + "post_attention_layernorm.weight": draw(hidden),
            }
        )
    shards[-1]["model.norm.weight"] = draw(hidden)
    weight_map: dict[str, str] = {}
    size = 0
    for number, shard in enumerate(shards, 1):
        name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        size += sum(tensor.numel() * tensor.element_size() for tensor in shard.values())
    index = {"metadata": {"total_size": size}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert 200e6 < size < 400e6
    state = {key: tensor for shard in shards for key, tensor in shard.items()}
    state["embedder.weight"] = state.pop("model.embed_tokens.weight")
    for layer in range(config.num_hidden_layers):
        attention = f"model.layers.{layer}.self_attn."
        parts = [state.pop(attention + f"{name}.weight") for name in ("q_proj", "k_proj", "v_proj")]
        state[attention + "qkv_proj.weight"] = torch.cat(parts)
    torch.save({"model_state_dict": state}, ckpt / "model.ckpt")
    return folder, ckpt, size


def increase(case: str, folder: Path) -> int:
    """The peak resident-set increase, in bytes, of ``case`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, case, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    print(f"{case} ({folder.name}): peak increase {int(lines['increase']) / 2**20:.0f} MiB")
    return int(lines["increase"])


FORMATS = ["safetensors", "ckpt"]


def folder_of(checkpoint: tuple[Path, Path, int], kind: str) -> Path:
    return checkpoint[0] if kind == "safetensors" else checkpoint[1]


@pytest.mark.parametrize("kind", FORMATS)
def test_streaming_holds_one_tensor_at_a_time(
    checkpoint: tuple[Path, Path, int], kind: str
) -> None:
    assert increase("stream", folder_of(checkpoint, kind)) < 0.5 * checkpoint[2]


@pytest.mark.parametrize("kind", FORMATS)
def test_tracing_model_reads_no_weights(checkpoint: tuple[Path, Path, int], kind: str) -> None:
    assert increase("tracing-model", folder_of(checkpoint, kind)) < 0.1 * checkpoint[2]


@pytest.mark.parametrize("kind", FORMATS)
def test_loading_into_a_model_adds_the_model_only(
    checkpoint: tuple[Path, Path, int], kind: str
) -> None:
    assert increase("load", folder_of(checkpoint, kind)) < 1.25 * checkpoint[2]
