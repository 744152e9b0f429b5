"""CPU benchmark: the compiled model against PyTorch eager on the same weights, same process.

    python bench/cpu.py [--models gemma2-gqa gemma1-small] [--seq 128] [--json out.json]

Prefill: one forward over a [1, seq] prompt. Decode step: the time to produce one more token
after a [1, seq] prefix. Tessera's is its decode program over the paged KV cache (the time
between two tokens of ``cm.stream``, greedy choice included); it is compared both with
PyTorch's own decode step (transformers' KV cache) and with PyTorch recomputing the prefix.
Ratios are PyTorch time / Tessera time: above 1 means Tessera is faster.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import statistics
import subprocess
import time

import torch

import tessera
from tessera.cli_bench import device_description
from tessera.models.tiny import tiny_gemma

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def result_rows(rows: list[dict], peer: str) -> list[dict]:
    """The figures in the results format (bench/results/*.json): a row per case with
    ``bench``, ``case``, ``tessera_ms`` and the peers measured in the same run."""
    out = []
    for row in rows:
        case = f"{row['model']} B1 S{row['seq']} {row['dtype']}"
        out.append(
            {
                "bench": "prefill",
                "case": case,
                "tessera_ms": row["tessera_prefill_ms"],
                "peers": [{"name": peer, "ms": row["eager_prefill_ms"]}],
            }
        )
        out.append(
            {
                "bench": "decode",
                "case": case,
                "tessera_ms": row["tessera_decode_step_ms"],
                "peers": [
                    {"name": f"{peer}, KV cache", "ms": row["eager_decode_step_kv_cache_ms"]},
                    {"name": f"{peer}, recomputing", "ms": row["eager_decode_step_recompute_ms"]},
                ],
            }
        )
    return out


def median_seconds(run, repeats: int) -> float:
    run()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_model(name: str, dtype: str, seq: int, repeats: int) -> dict[str, object]:
    model = tiny_gemma(name, dtype=DTYPES[dtype])
    compiled = tessera.compile(model)
    vocab = model.config.vocab_size
    prompt = torch.randint(0, vocab, (1, seq))
    longer = torch.randint(0, vocab, (1, seq + 1))
    with torch.no_grad():
        eager_prefill = median_seconds(lambda: model(prompt, use_cache=False), repeats)
        prefix_cache = model(prompt, use_cache=True).past_key_values
        step = longer[:, -1:]
        samples = []
        for _ in range(repeats + 1):
            # A fresh copy of the prefix's cache per step (copied outside the timed region).
            cache = copy.deepcopy(prefix_cache)
            start = time.perf_counter()
            model(step, past_key_values=cache, use_cache=True)
            samples.append(time.perf_counter() - start)
        eager_step_cached = statistics.median(samples[1:])
        eager_step_recompute = median_seconds(lambda: model(longer, use_cache=False), repeats)
    ours_prefill = median_seconds(lambda: compiled(prompt), repeats)
    ours_step = decode_step_seconds(compiled, prompt, repeats)
    return {
        "model": name,
        "dtype": dtype,
        "seq": seq,
        "tessera_prefill_ms": ours_prefill * 1e3,
        "eager_prefill_ms": eager_prefill * 1e3,
        "prefill_ratio": eager_prefill / ours_prefill,
        "tessera_decode_step_ms": ours_step * 1e3,
        "eager_decode_step_kv_cache_ms": eager_step_cached * 1e3,
        "eager_decode_step_recompute_ms": eager_step_recompute * 1e3,
        "decode_ratio_vs_kv_cache": eager_step_cached / ours_step,
        "decode_ratio_vs_recompute": eager_step_recompute / ours_step,
    }


def decode_step_seconds(
    compiled: tessera.CompiledModel, prompt: torch.Tensor, repeats: int
) -> float:
    """The median time between two tokens of a greedy stream after ``prompt`` (the first
    token, which includes the prefill, is not counted)."""
    steps = compiled.stream(prompt, repeats + 1, eos_token_id=None)
    next(steps)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        next(steps)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gemma2-gqa", "gemma1-small"])
    parser.add_argument("--dtypes", nargs="+", default=["f32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [
        bench_model(name, dtype, args.seq, args.repeats)
        for name in args.models
        for dtype in args.dtypes
    ]
    print("times in ms, Tessera vs PyTorch eager; ratio = PyTorch / Tessera")
    print(
        f"{'model':14s} {'dtype':5s} {'prefill':>20s} {'ratio':>6s}   "
        f"{'decode step (PyTorch: kv cache / recompute)':>44s}  ratios"
    )
    for row in rows:
        print(
            f"{row['model']:14s} {row['dtype']:5s} "
            f"{row['tessera_prefill_ms']:8.2f} vs {row['eager_prefill_ms']:8.2f} "
            f"{row['prefill_ratio']:6.2f}   {row['tessera_decode_step_ms']:8.2f} vs "
            f"{row['eager_decode_step_kv_cache_ms']:8.2f} / "
            f"{row['eager_decode_step_recompute_ms']:8.2f}"
            f"{row['decode_ratio_vs_kv_cache']:14.2f} / {row['decode_ratio_vs_recompute']:.2f}"
        )
    if args.json:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        record = {
            "device": device_description("cpu"),
            "date": datetime.date.today().isoformat(),
            "commit": commit,
            "torch_threads": torch.get_num_threads(),
            "rows": result_rows(rows, f"PyTorch {torch.__version__} eager"),
            "detail": rows,
        }
        with open(args.json, "w") as stream:
            json.dump(record, stream, indent=2)


if __name__ == "__main__":
    main()
