"""One rank of a tensor-parallel run, as torchrun would start it.

    RANK=r WORLD_SIZE=n MASTER_ADDR=... MASTER_PORT=... python tp_worker.py REQUEST RESULT

REQUEST (torch.save'd): ``ranks`` and a list of ``models``, each a dict of the tiny
configuration's ``name``, ``vary`` (weights whose greedy continuations change token), the
prompt ``ids`` and ``new_tokens`` to generate. torch.distributed is left to
``tessera.compile`` to initialise from the environment. The rank writes RESULT: per model, its
``logits`` for ``ids``, its greedy ``sequences``, the rank and weight slices its artifact
records and the tessera ops of its mid-level IR.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

_TESTS = Path(__file__).resolve().parent.parent
for _folder in (_TESTS, _TESTS / "generate"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from test_generate_support import varied  # noqa: E402

import tessera  # noqa: E402
from tessera.models.tiny import tiny_gemma  # noqa: E402
from tessera.runtime.collectives import layout_of  # noqa: E402


def run(ranks: int, request: dict[str, Any]) -> dict[str, Any]:
    model = tiny_gemma(request["name"])
    if request["vary"]:
        varied(model)
    compiled = tessera.compile(model, tensor_parallel=ranks)
    ids = request["ids"]
    logits = compiled(ids, return_dict=False)
    sequences = compiled.generate(ids, request["new_tokens"], eos_token_id=None)
    layout = layout_of(compiled.manifest.metadata)
    assert layout is not None, "a tensor-parallel compile records its shard layout"
    return {
        "logits": logits,
        "sequences": sequences,
        "rank": layout.rank,
        "shards": {name: (s.axis, s.offset, s.size) for name, s in layout.shards.items()},
        "fused": compiled.fused_ops(),
    }


def main(request_path: str, result_path: str) -> None:
    request = torch.load(request_path)
    results = [run(int(request["ranks"]), model) for model in request["models"]]
    torch.save(results, result_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
