"""The runtime side of tensor parallelism (``runtime/collectives.py``): the callback's
collectives over two gloo processes, the weight slices a rank binds, the layout a manifest
records, and the errors for a process that is not the artifact's rank."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from collectives_worker import inputs
from test_tensor_parallel_support import free_port, launch

import tessera
from tessera.errors import RuntimeInputError, TesseraError
from tessera.models.tiny import tiny_gemma
from tessera.runtime import ArtifactError
from tessera.runtime.collectives import (
    COMMUNICATOR,
    METADATA_KEY,
    RankWeights,
    ShardLayout,
    WeightShard,
    layout_of,
    rank_weights,
    world,
)

WORKER = Path(__file__).resolve().parent / "collectives_worker.py"


def test_the_callback_reduces_and_gathers_across_processes() -> None:
    with tempfile.TemporaryDirectory(prefix="tessera-collectives-") as folder:
        paths = [str(Path(folder) / f"{rank}.pt") for rank in range(2)]
        launch(WORKER, 2, [[path] for path in paths])
        results = [torch.load(path) for path in paths]
    ranks = [inputs(rank) for rank in range(2)]
    for result in results:
        for dtype in ("f32", "bf16"):
            status, summed = result[f"all_reduce_{dtype}"]
            assert status == 0
            assert torch.equal(summed, ranks[0][dtype] + ranks[1][dtype])
        status, gathered = result["all_gather_axis1"]
        assert status == 0
        assert torch.equal(gathered, torch.cat([ranks[0]["f32"], ranks[1]["f32"]], dim=1))
        # An exception inside the callback comes back as a status, not a crash.
        assert result["unknown_kind"] == 1


def test_a_shard_takes_its_slice_as_its_own_tensor() -> None:
    full = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    rows = WeightShard(axis=0, offset=2, size=2).take("w", full)
    columns = WeightShard(axis=1, offset=4, size=4).take("w", full)
    assert torch.equal(rows, full[2:4]) and torch.equal(columns, full[:, 4:])
    assert columns.is_contiguous()
    # A copy: the full tensor's memory can go once the caller drops it.
    assert rows.untyped_storage().data_ptr() != full.untyped_storage().data_ptr()


def test_a_weight_without_the_slice_is_named() -> None:
    with pytest.raises(RuntimeInputError, match=r"weight 'w' is \[6, 8\]; this rank binds rows"):
        WeightShard(axis=0, offset=6, size=2).take("w", torch.zeros(6, 8))


def test_rank_weights_slice_what_the_layout_names() -> None:
    layout = ShardLayout(2, 1, {"q": WeightShard(0, 3, 3)})
    handle = torch.tensor([1234], dtype=torch.int64)
    full = {"q": torch.arange(12.0).reshape(6, 2), "norm": torch.ones(2)}
    weights = RankWeights(layout, full, handle)
    assert torch.equal(weights["q"], full["q"][3:])
    assert weights["norm"] is full["norm"]
    assert weights[COMMUNICATOR] is handle
    assert set(weights) == {"q", "norm", COMMUNICATOR} and len(weights) == 3


def test_the_layout_survives_the_manifest() -> None:
    layout = ShardLayout(4, 3, {"a": WeightShard(1, 12, 4)})
    data = layout.to_json()
    assert data["communicator"] == COMMUNICATOR
    assert layout_of({METADATA_KEY: data}) == layout
    assert layout_of({}) is None


@pytest.mark.parametrize(
    "data,problem",
    [
        ({"ranks": 0, "rank": 0, "shards": {}}, "ranks must be a positive integer"),
        ({"ranks": 2, "rank": 2, "shards": {}}, r"rank must be an integer in \[0, 2\)"),
        ({"ranks": 2, "rank": 0, "shards": []}, "shards must be an object"),
        (
            {"ranks": 2, "rank": 0, "shards": {"w": {"axis": 0, "offset": 0, "size": 0}}},
            "size positive",
        ),
    ],
)
def test_a_malformed_layout_names_the_field(data: object, problem: str) -> None:
    with pytest.raises(ArtifactError, match=problem) as raised:
        layout_of({METADATA_KEY: data})
    assert f"metadata.{METADATA_KEY}" in str(raised.value)


def test_binding_a_shard_outside_a_process_group_says_which_rank_it_is() -> None:
    assert not dist.is_initialized()
    metadata = ShardLayout(2, 1, {}).to_json()
    with pytest.raises(RuntimeInputError, match="rank 1's shard of a 2-way tensor-parallel"):
        rank_weights({METADATA_KEY: metadata}, {})
    # An unsharded artifact binds the state dict as it is.
    weights = {"w": torch.zeros(1)}
    assert rank_weights({}, weights) is weights


def test_without_a_process_group_or_torchrun_the_variables_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeInputError, match="RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT"):
        world(2)


# Registered before ``init_from_env``, so that atexit (last in, first out) runs it after the
# runtime's own handler: it reports whether the process group was still alive at exit.
_EXIT_CHECK = """
import atexit, sys
import torch.distributed as dist
atexit.register(lambda: print("alive at exit:", dist.is_initialized()))
from tessera.runtime.collectives import world
print("rank", world(1))
"""


def test_a_group_the_runtime_initialised_is_closed_before_exit() -> None:
    # Gloo's threads outliving the interpreter abort the process at random; closing the group
    # at exit is what prevents it, so the test checks the close itself, which is deterministic.
    env = dict(os.environ, RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    env["MASTER_PORT"] = str(free_port())
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_CHECK], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["rank", "0", "alive", "at", "exit:", "False"], done.stdout


@pytest.mark.parametrize(
    "value,target,problem",
    [
        (0, "cpu", "tensor_parallel must be at least 1, found 0"),
        ("2", "cpu", "tensor_parallel must be a number of ranks, found '2'"),
        (2, "cuda:sm_90", "runs on the cpu target only"),
    ],
)
def test_compile_refuses_a_bad_tensor_parallel(value: object, target: str, problem: str) -> None:
    with pytest.raises(TesseraError, match=problem):
        tessera.compile(tiny_gemma("gemma2-gqa"), target, tensor_parallel=value)  # type: ignore[arg-type]
