"""Whole-model prefill on the GPU: Tessera against transformers (sdpa), eager and under
``torch.compile``, on the same card, in the same process, same weights (seeded random, bf16),
and the bf16 logits checked against transformers'. Reads the artifacts of
bench/gpu_build.py; writes rows in the results format (bench/results/*.json: device, date,
commit, rows with the peers measured in the same run).

    python bench/gpu.py build/bench --out results.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

import torch

from tessera import runtime
from tessera.models.tiny import tiny_gemma

CASES = {"gemma-2b": (2048, 8192), "gemma3-1b": (2048, 8192)}


def timed_ms(run, repeats: int = 10) -> float:  # type: ignore[no-untyped-def]
    """Median of ``repeats`` timed runs (CUDA events) after two warm-ups."""
    for _ in range(2):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench_model(folder: Path, entry: dict, compiled_peer: bool) -> list[dict]:
    name = entry["name"]
    model = tiny_gemma(name, dtype=torch.bfloat16, attn_implementation="sdpa", device="cuda")
    # One compiled module per sequence length (static shapes: the fastest torch.compile
    # prefill, and what a serving stack compiles per bucket).
    compiled = torch.compile(model, dynamic=False) if compiled_peer else None
    artifact = runtime.load(folder / entry["folder"])
    artifact.bind(dict(model.state_dict()))
    prefill = artifact["prefill"]
    rows = []
    for length in CASES.get(name, (2048,)):
        ids = torch.randint(0, model.config.vocab_size, (1, length), device="cuda")
        with torch.no_grad():
            theirs = model(ids).logits
        (ours,) = prefill(ids)
        scale = float(theirs.float().abs().max())
        difference = float((ours.float() - theirs.float()).abs().max()) / scale
        agree = float((ours.argmax(-1) == theirs.argmax(-1)).float().mean())
        graph = prefill.graph(ids)
        with torch.no_grad():
            ours_ms = timed_ms(lambda ids=ids: prefill(ids))
            graph_ms = timed_ms(graph)
            theirs_ms = timed_ms(lambda ids=ids: model(ids))
            peers = [{"name": "transformers sdpa (eager)", "ms": round(theirs_ms, 3)}]
            if compiled is not None:
                compiled_ms = timed_ms(lambda ids=ids: compiled(ids))
                peers.append(
                    {"name": "transformers sdpa (torch.compile)", "ms": round(compiled_ms, 3)}
                )
        row = {
            "bench": "prefill",
            "case": f"{name} B1 S{length} bf16",
            "tessera_ms": round(ours_ms, 3),
            "tessera_graph_ms": round(graph_ms, 3),
            "max_logit_difference_vs_transformers": round(difference, 5),
            "greedy_agreement_vs_transformers": round(agree, 4),
            "compile_cold_s": entry.get("compile_cold_s"),
            "compile_warm_s": entry.get("compile_warm_s"),
            "peers": peers,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--commit", default="unknown", help="the commit the artifacts came from")
    parser.add_argument(
        "--no-compile-peer", action="store_true", help="leave out the torch.compile peer"
    )
    args = parser.parse_args()
    entries = json.loads((args.artifacts / "models.json").read_text())
    rows = []
    for entry in entries:
        rows += bench_model(args.artifacts, entry, not args.no_compile_peer)
        torch.cuda.empty_cache()
    result = {
        "device": torch.cuda.get_device_name(),
        "date": datetime.date.today().isoformat(),
        "commit": args.commit,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        graph = row["tessera_graph_ms"]
        line = f"{row['case']:28} tessera {row['tessera_ms']:8.2f} ms (graph {graph:8.2f})"
        for peer in row["peers"]:
            line += f"  {peer['name']} {peer['ms']:8.2f} ms ({peer['ms'] / graph:.2f}x)"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
