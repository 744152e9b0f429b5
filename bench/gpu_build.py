"""Compiles the real-shape models the GPU benchmarks run (Gemma-2B and Gemma-3-1B shapes,
bf16) for CUDA, and records how long compiling took on this machine (cold, then warm from the
cache). Weights are not needed to compile: the GPU side builds the model with seeded random
weights and binds them.

    python bench/gpu_build.py build/bench     # then, on the GPU: python bench/gpu.py build/bench

``--prefetch-kib N ...`` also compiles each model with the decode step's L2 weight prefetch
(``lowering/cuda/weight_prefetch.py``) at a budget of N KiB, through a tuning table that
holds only that entry over the shipped one; bench/decode.py times each such build as a peer
of the model's own rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

import tessera
from tessera.lowering.cuda import tuning
from tessera.lowering.cuda.weight_prefetch import L2_PREFETCH_KEY
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
    parser.add_argument("--prefetch-kib", nargs="*", type=int, default=[])
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
        variants = []
        for kib in args.prefetch_kib:
            variant = f"{name}-l2-prefetch-{kib}k"
            with_prefetch(model, args.arch, kib).save(args.out / variant)
            shutil.rmtree(args.out / variant / "ir")
            variants.append({"label": f"L2 weight prefetch, {kib} KiB", "folder": variant})
        if variants:
            entry["variants"] = variants
        index.append(entry)
        print(json.dumps(entry), file=sys.stderr)
        del model
    (args.out / "models.json").write_text(json.dumps(index, indent=2) + "\n")
    return 0


def with_prefetch(model: torch.nn.Module, arch: str, kib: int) -> tessera.CompiledModel:
    """``model`` compiled with the decode step's L2 weight prefetch at ``kib`` KiB (a user
    tuning table of that one entry, laid over the shipped table)."""
    previous = os.environ.get(tuning.USER_ENV)
    with tempfile.TemporaryDirectory() as folder:
        table = tuning.table_json(arch, "any", "-", "-", {L2_PREFETCH_KEY: {"budget_kib": kib}})
        (Path(folder) / f"{arch}.json").write_text(table)
        os.environ[tuning.USER_ENV] = folder
        try:
            return tessera.compile(model, target=f"cuda:{arch}", max_seq_len=8192)
        finally:
            if previous is None:
                os.environ.pop(tuning.USER_ENV)
            else:
                os.environ[tuning.USER_ENV] = previous


if __name__ == "__main__":
    sys.exit(main())
