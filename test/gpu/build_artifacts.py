"""Compiles the models the GPU suite checks, for CUDA, into one folder to take to a GPU machine.

    python test/gpu/build_artifacts.py build/gpu            # then, on the GPU machine:
    python -m pytest test/gpu -q --artifacts build/gpu

MLIR is needed here, not there: each artifact holds the manifest, cubin and PTX; the GPU side
rebuilds the same transformers model with seeded weights and binds them.
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
from tessera.models.tiny import tiny_gemma

# (config, dtype, attention implementation of the transformers peer)
MODELS = (
    ("gemma1-mqa", "f32", "eager"),
    ("gemma1-mha", "bf16", "sdpa"),
    ("gemma2-gqa", "f32", "eager"),
    ("gemma2-gqa", "bf16", "eager"),
    ("gemma3-gqa", "f32", "sdpa"),
    ("gemma3-gqa", "bf16", "eager"),
    ("gemma3-mqa-odd", "f32", "sdpa"),
    ("gemma3-mqa-odd", "bf16", "sdpa"),
)
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--arch", default="sm_90a")
    parser.add_argument("--only", nargs="*", help="config names to build")
    parser.add_argument("--keep-ir", action="store_true", help="keep every stage's IR too")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    index = []
    for name, dtype, attention in MODELS:
        if args.only and name not in args.only:
            continue
        folder = args.out / f"{name}-{dtype}"
        started = time.perf_counter()
        model = tiny_gemma(name, dtype=DTYPES[dtype], attn_implementation=attention)
        compiled = tessera.compile(model, target=f"cuda:{args.arch}", max_seq_len=4096)
        if folder.exists():
            shutil.rmtree(folder)
        compiled.save(folder)
        if not args.keep_ir:
            shutil.rmtree(folder / "ir")  # the GPU side needs the manifest and binaries only
        seconds = time.perf_counter() - started
        index.append(
            {
                "name": name,
                "dtype": dtype,
                "attention": attention,
                "folder": folder.name,
                "compile_seconds": round(seconds, 2),
                "cache_hit": compiled.cache_hit,
            }
        )
        print(f"{name} {dtype}: {seconds:.1f} s -> {folder}", file=sys.stderr)
    (args.out / "models.json").write_text(json.dumps(index, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
