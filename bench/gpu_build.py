"""Compiles the real-shape models the GPU benchmarks run (Gemma-2B and Gemma-3-1B shapes,
bf16) for CUDA, and records how long compiling took on this machine (cold, then warm from the
cache). Weights are not needed to compile: the GPU side builds the model with seeded random
weights and binds them.

    python bench/gpu_build.py build/bench     # then, on the GPU: python bench/gpu.py build/bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

import tessera
from tessera.models.tiny import tiny_config

MODELS = ("gemma-2b", "gemma3-1b")


def shape_model(name: str) -> torch.nn.Module:
    """The model of ``name`` in bf16 on the CPU, weights left as initialised (compiling reads
    shapes and the buffers computed from the config, not the weights)."""
    config, model_class, _ = tiny_config(name, "sdpa")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cpu"):
            model = model_class(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--arch", default="sm_90a")
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    index = []
    for name in MODELS:
        if args.only and name not in args.only:
            continue
        model = shape_model(name)
        started = time.perf_counter()
        compiled = tessera.compile(model, target=f"cuda:{args.arch}", max_seq_len=8192)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        again = tessera.compile(model, target=f"cuda:{args.arch}", max_seq_len=8192)
        warm = time.perf_counter() - started
        folder = args.out / name
        if folder.exists():
            shutil.rmtree(folder)
        compiled.save(folder)
        shutil.rmtree(folder / "ir")
        entry = {
            "name": name,
            "folder": name,
            "compile_cold_s": round(cold, 2),
            "compile_warm_s": round(warm, 2),
            "cold_was_cache_hit": compiled.cache_hit,
            "warm_was_cache_hit": again.cache_hit,
        }
        index.append(entry)
        print(json.dumps(entry), file=sys.stderr)
        del model
    (args.out / "models.json").write_text(json.dumps(index, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
