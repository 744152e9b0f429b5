"""Where a whole prefill and a decode step spend their time on the GPU, kernel by kernel: each
launch timed by CUDA events on the stream (``CudaProgram.launch_times``), grouped by kernel
(``runtime/profile.py``). Reads the artifacts of bench/gpu_build.py (random bf16 weights);
writes rows in the results format (bench/results/*.json), one per program and size, each with
its kernels' milliseconds and shares.

    python bench/kernel_profile.py build/bench --out profile.json

Cases: ``prefill`` (the forward program) over 2048 tokens, and the greedy decode step (or the
decode step, where the artifact has no greedy one) of one sequence with 2048 tokens cached;
each variant build of a model (bench/gpu_build.py --prefetch-kib) adds its decode step's row.
Peers from the same run: the same call replayed as one CUDA graph (the events between launches
cost a few microseconds each, so this is the call's own time), and for the prefill
transformers' eager forward.

Each row also carries ``timeline``: the graph replays as the GPU ran them (torch.profiler's
device trace), each kernel's exclusive time and the idle time between kernels
(``runtime/profile.py``'s ``timeline_profile``); ``null`` where the trace holds no kernel of
the call.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from gpu import timed_ms  # bench/gpu.py, beside this script

from tessera import runtime
from tessera.models.tiny import tiny_gemma
from tessera.runtime import kv_layout
from tessera.runtime.generate import cached_programs
from tessera.runtime.profile import Timeline, format_profile, kernel_profile, timeline_profile

LENGTH = 2048
REPEATS = 20


def device_timeline(
    replay: Callable[[], object], kernels: Sequence[str], repeats: int
) -> Timeline | None:
    """``repeats`` replays of a captured call as the GPU's trace records them: the spans of the
    call's own kernels (other device work, such as a copy torch adds, is left out); ``None``
    where the trace has none of them."""
    from torch.profiler import ProfilerActivity, profile

    replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        for _ in range(repeats):
            replay()
        torch.cuda.synchronize()
    device = [e for e in trace.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    names = set(kernels)
    spans = [
        (event.name, float(event.time_range.start), float(event.time_range.end))
        for event in device
        if event.name in names
    ]
    if len(spans) != repeats * len(kernels):
        seen = sorted({event.name for event in device})[:8]
        print(
            f"device trace: {len(spans)} kernel spans for {repeats} calls of {len(kernels)}"
            f" launches; device events seen: {seen}"
        )
        return None
    return timeline_profile(spans, len(kernels))


def profile_row(
    case: str, program: runtime.cuda.CudaProgram, inputs: dict, peers: list[dict]
) -> dict:
    """The profile of ``program`` on ``inputs``, with the same call replayed as one CUDA graph
    (no events between its launches) as the first peer, then ``peers``."""
    kernels = program.launched_kernels(**inputs)
    rows = kernel_profile(kernels, program.launch_times(repeats=REPEATS, **inputs))
    print(f"{case}\n{format_profile(rows)}", flush=True)
    replay = program.graph(*(inputs[spec.name] for spec in program.spec.inputs))
    graph = {"name": "tessera, the same call as one CUDA graph", "ms": round(timed_ms(replay), 4)}
    timeline = device_timeline(replay, kernels, REPEATS)
    if timeline is not None:
        print(
            f"as the GPU ran it: {timeline.wall_ms:.4f} ms, {timeline.idle_ms:.4f} idle\n"
            f"{format_profile(timeline.rows)}",
            flush=True,
        )
    return {
        "bench": "profile",
        "case": case,
        "tessera_ms": round(sum(r.ms for r in rows), 4),
        "launches": sum(r.launches for r in rows),
        "kernels": [r.to_json() for r in rows],
        "peers": [graph, *peers],
        "timeline": timeline.to_json() if timeline is not None else None,
    }


def profile_model(folder: Path, entry: dict) -> list[dict]:
    name = entry["name"]
    model = tiny_gemma(name, dtype=torch.bfloat16, device="cuda")
    artifact = runtime.load(folder / entry["folder"])
    artifact.bind(dict(model.state_dict()))
    ids = torch.randint(0, model.config.vocab_size, (1, LENGTH), device="cuda")
    with torch.no_grad():
        eager = {
            "name": "transformers forward (eager)",
            "ms": round(timed_ms(lambda: model(ids)), 4),
        }
    rows = [
        profile_row(
            f"{name} prefill B1 S{LENGTH} bf16", artifact["prefill"], {"input_ids": ids}, [eager]
        )
    ]
    rows.append(profile_decode(name, artifact, ids))
    for variant in entry.get("variants", []):
        # Another build of the model (bench/gpu_build.py --prefetch-kib): its decode step.
        other = runtime.load(folder / variant["folder"])
        other.bind(dict(model.state_dict()))
        rows.append(profile_decode(name, other, ids, f" ({variant['label']})"))
    return rows


def profile_decode(name: str, artifact: Any, ids: torch.Tensor, suffix: str = "") -> dict:
    """The row of ``artifact``'s greedy decode step (or its decode step) for one sequence
    with LENGTH tokens cached."""
    programs = cached_programs(artifact.manifest, artifact.programs)
    step_name = kv_layout.GREEDY_DECODE_PROGRAM if programs.greedy else kv_layout.DECODE_PROGRAM
    step = artifact[step_name]
    # One sequence whose first LENGTH tokens are cached (their values do not change the time).
    cache = programs.new_cache(1, LENGTH + 1, programs.chunk(LENGTH))
    cache.reserve(0, LENGTH + 1)
    step.bind_state(cache.state())
    inputs = {
        kv_layout.INPUT_IDS: ids[:, :1],
        kv_layout.POSITIONS: torch.full((1, 1), LENGTH, dtype=torch.int64),
        kv_layout.CACHE_INDEX: torch.full((1,), LENGTH, dtype=torch.int64),
        kv_layout.KV_START: torch.zeros(1, dtype=torch.int64),
        **cache.block_tables([0]),
    }
    row = profile_row(f"{name} {step_name} B1 T{LENGTH} bf16{suffix}", step, inputs, [])
    step.unbind_state()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--commit", default="unknown")
    args = parser.parse_args()
    entries = json.loads((args.artifacts / "models.json").read_text())
    rows = [row for entry in entries for row in profile_model(args.artifacts, entry)]
    result = {
        "device": torch.cuda.get_device_name(),
        "date": datetime.date.today().isoformat(),
        "commit": args.commit,
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
