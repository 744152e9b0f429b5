"""Helpers shared by the tensor-parallel tests: starting one process per rank as torchrun
does (``tp_worker.py``), the single-process references, and the tolerance for comparing them."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from test_cpu_support import tolerance
from test_generate_support import varied

import tessera
from tessera.models.tiny import CONFIGS, tiny_gemma

_HERE = Path(__file__).resolve().parent
# The CPU lowering tests' folder (their helpers run a lowered module through the JIT).
CPU_TESTS = _HERE.parent / "cpu"
WORKER = _HERE / "tp_worker.py"
# A rank compiles its shard (tens of seconds on a busy machine), then runs and generates.
TIMEOUT = 1500


def free_port() -> int:
    """A TCP port nothing listens on now (for torch.distributed's rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def launch(script: Path, ranks: int, arguments: list[list[str]]) -> list[str]:
    """Runs ``script`` once per rank, as torchrun would (RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT set), rank r with ``arguments[r]``; returns their outputs. A rank that fails
    fails the call, showing its output."""
    port = free_port()
    processes = []
    for rank in range(ranks):
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE=str(ranks),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, str(script), *arguments[rank]],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=TIMEOUT)
            outputs.append(output)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for rank, (process, output) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 0, f"rank {rank} exited with {process.returncode}:\n{output}"
    return outputs


def run_ranks(ranks: int, models: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``tp_worker.py`` on ``models`` in ``ranks`` processes; each rank's results."""
    with tempfile.TemporaryDirectory(prefix="tessera-tp-") as folder:
        request = Path(folder) / "request.pt"
        torch.save({"ranks": ranks, "models": models}, request)
        results = [str(Path(folder) / f"{rank}.pt") for rank in range(ranks)]
        launch(WORKER, ranks, [[str(request), result] for result in results])
        return [torch.load(result) for result in results]


@functools.cache
def single_process(name: str) -> tuple[torch.nn.Module, tessera.CompiledModel]:
    """The model the workers build (``varied`` weights) and its single-process compile."""
    model = varied(tiny_gemma(name))
    return model, tessera.compile(model)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def parallel_tolerance(name: str) -> float:
    """How far f32 logits computed by ranks may be from a single process's.

    Sharding changes the order of the sums that each block half's all-reduce completes (the
    output projection's over the query heads' features, the MLP's down projection's over the
    intermediate size): a sum of n terms in another order differs by about n·u(f32) of its
    size (``tolerance``). One such sum per block half, 2·layers of them, each perturbing the
    residual stream that the rest of the model reads, bound the whole model's difference."""
    config = CONFIGS[name]
    features = max(config["num_attention_heads"] * config["head_dim"], config["intermediate_size"])
    return 2 * config["num_hidden_layers"] * tolerance("f32", features)
