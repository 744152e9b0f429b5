"""CPU benchmark: the compiled model against PyTorch eager on the same weights, same process.

    python bench/cpu.py [--models gemma2-gqa gemma1-small] [--seq 128] [--json out.json]

Prefill: one forward over a [1, seq] prompt. Decode step: the time to produce the logits of
one more token after a [1, seq] prefix. The compiled CPU model has no KV cache yet, so its
decode step recomputes the whole prefix; it is compared both with PyTorch's own decode step
(transformers' KV cache) and with PyTorch recomputing the prefix the same way.
Ratios are PyTorch time / Tessera time: above 1 means Tessera is faster.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import time

import torch

import tessera
from tessera.models.tiny import tiny_gemma


def median_seconds(run, repeats: int) -> float:
    run()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_model(name: str, seq: int, repeats: int) -> dict[str, object]:
    model = tiny_gemma(name)
    compiled = tessera.compile(model)
    vocab = model.config.vocab_size
    prompt = torch.randint(0, vocab, (1, seq))
    longer = torch.randint(0, vocab, (1, seq + 1))
    with torch.no_grad():
        eager_prefill = median_seconds(lambda: model(prompt, use_cache=False), repeats)
        cache = model(prompt, use_cache=True).past_key_values
        step = longer[:, -1:]

        def eager_decode() -> None:
            # Crop the cache back to the prefix so every repeat does the same work.
            model(step, past_key_values=cache, use_cache=True)
            cache.crop(seq)

        eager_step_cached = median_seconds(eager_decode, repeats)
        eager_step_recompute = median_seconds(lambda: model(longer, use_cache=False), repeats)
    ours_prefill = median_seconds(lambda: compiled(prompt), repeats)
    ours_step = median_seconds(lambda: compiled(longer), repeats)
    return {
        "model": name,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gemma2-gqa", "gemma1-small"])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [bench_model(name, args.seq, args.repeats) for name in args.models]
    print(
        f"{'model':14s} {'prefill ms':>22s} {'ratio':>6s} {'decode step ms':>34s} "
        f"{'ratio (kv / recompute)':>24s}"
    )
    for row in rows:
        print(
            f"{row['model']:14s} {row['tessera_prefill_ms']:9.2f} vs {row['eager_prefill_ms']:9.2f}"
            f" {row['prefill_ratio']:6.2f} {row['tessera_decode_step_ms']:9.2f} vs "
            f"{row['eager_decode_step_kv_cache_ms']:9.2f} / "
            f"{row['eager_decode_step_recompute_ms']:9.2f} "
            f"{row['decode_ratio_vs_kv_cache']:10.2f} / {row['decode_ratio_vs_recompute']:.2f}"
        )
    if args.json:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        record = {
            "date": datetime.date.today().isoformat(),
            "commit": commit,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "torch_threads": torch.get_num_threads(),
            "peer": f"PyTorch {torch.__version__} eager (transformers), same process",
            "results": rows,
        }
        with open(args.json, "w") as stream:
            json.dump(record, stream, indent=2)


if __name__ == "__main__":
    main()
