"""One rank calling the runtime's collective callback through its address, as compiled code
does (``lowering/cpu/collectives.py``), on buffers it owns.

    RANK=r WORLD_SIZE=n MASTER_ADDR=... MASTER_PORT=... python collectives_worker.py RESULT

torch.distributed is initialised by ``init_from_env``. Rank r's inputs are ``inputs(r)``;
RESULT holds what each collective wrote.
"""

from __future__ import annotations

import sys

import torch

from tessera.runtime import collectives


def inputs(rank: int) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s tensors: distinct values per rank, so that a sum or an order shows."""
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    return {
        "f32": base + 100 * rank,
        "bf16": (base / 8 + rank).to(torch.bfloat16),
    }


def call(kind: int, dtype: str, source: torch.Tensor, target: torch.Tensor, axis: int) -> int:
    """The callback as the compiled code calls it: [outer, inner] split at ``axis``."""
    handle = collectives.communicator().handle
    function = collectives.CollectiveFunction(int(handle[0]))
    outer = int(torch.tensor(source.shape[:axis]).prod().item()) if axis else 1
    inner = source.numel() // outer
    status = function(
        kind,
        collectives.DTYPE_CODES[dtype],
        source.data_ptr(),
        target.data_ptr(),
        outer,
        inner,
    )
    return int(status)


def main(result_path: str) -> None:
    collectives.init_from_env()
    rank = torch.distributed.get_rank()
    ranks = torch.distributed.get_world_size()
    mine = inputs(rank)
    results: dict[str, object] = {}
    for dtype in ("f32", "bf16"):
        source = mine[dtype]
        summed = torch.empty_like(source)
        results[f"all_reduce_{dtype}"] = (
            call(collectives.ALL_REDUCE, dtype, source, summed, 2),
            summed,
        )
    source = mine["f32"]
    # Along the middle axis: every rank's [3] rows of each of the 2 outer slices side by side.
    gathered = torch.empty((2, 3 * ranks, 4), dtype=torch.float32)
    results["all_gather_axis1"] = (
        call(collectives.ALL_GATHER, "f32", source, gathered, 1),
        gathered,
    )
    # A kind the callback does not know: a nonzero status, never an exception into C.
    unknown = torch.empty_like(source)
    results["unknown_kind"] = call(7, "f32", source, unknown, 2)
    torch.save(results, result_path)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
