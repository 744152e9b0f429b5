"""Helpers shared by the runtime tests: a CPU artifact whose shared object is written in C, so
the runtime is tested without the compiler. Its functions follow the calling convention the
compiler emits (MLIR's packed C interface over memref descriptors)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tessera.runtime import (
    ArgRef,
    BinarySpec,
    HostCall,
    Manifest,
    ProgramSpec,
    SymbolSpec,
    TensorSpec,
)
from tessera.runtime.cpu import BINARY_KIND, host_target
from tessera.runtime.manifest import MANIFEST_FILE

C_SOURCE = r"""
#include <stdint.h>

#define MEMREF(R) struct { void *allocated, *aligned; int64_t offset, sizes[R], strides[R]; }
typedef MEMREF(1) memref1;
typedef MEMREF(2) memref2;
typedef MEMREF(3) memref3;
/* args[i] points at a pointer to the descriptor of argument i. */
#define ARG(T, i) (*(T **)args[i])
#define DATA(T, m) ((T *)(m)->aligned + (m)->offset)

/* y[b, j] = x[b, j] * w[j] + 1 */
void _mlir__mlir_ciface_affine(void **args) {
  memref2 *x = ARG(memref2, 0), *y = ARG(memref2, 2);
  memref1 *w = ARG(memref1, 1);
  const float *xp = DATA(float, x), *wp = DATA(float, w);
  float *yp = DATA(float, y);
  for (int64_t b = 0; b < x->sizes[0]; ++b)
    for (int64_t j = 0; j < x->sizes[1]; ++j)
      yp[b * y->strides[0] + j * y->strides[1]] =
          xp[b * x->strides[0] + j * x->strides[1]] * wp[j * w->strides[0]] + 1.0f;
}

/* y[b, s, :] = table[ids[b, s], :], reading wherever ids point: the runtime must check them. */
void _mlir__mlir_ciface_gather(void **args) {
  memref2 *ids = ARG(memref2, 0), *table = ARG(memref2, 1);
  memref3 *y = ARG(memref3, 2);
  const int64_t *ip = DATA(int64_t, ids);
  const float *tp = DATA(float, table);
  float *yp = DATA(float, y);
  for (int64_t b = 0; b < y->sizes[0]; ++b)
    for (int64_t s = 0; s < y->sizes[1]; ++s) {
      int64_t row = ip[b * ids->strides[0] + s * ids->strides[1]];
      for (int64_t d = 0; d < y->sizes[2]; ++d)
        yp[b * y->strides[0] + s * y->strides[1] + d * y->strides[2]] =
            tp[row * table->strides[0] + d * table->strides[1]];
    }
}

/* Does nothing: what a call costs besides the work. */
void _mlir__mlir_ciface_noop(void **args) { (void)args; }
"""

LIBRARY = "kernels.so"
VOCAB = 16


def build_library(path: Path) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the test library")
    source = path.with_suffix(".c")
    source.write_text(C_SOURCE)
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(path), str(source)],
        check=True,
        capture_output=True,
    )
    source.unlink()


def _call(symbol: str, *args: tuple[str, str]) -> tuple[HostCall, ...]:
    return (HostCall("kernels", f"_mlir__mlir_ciface_{symbol}", tuple(ArgRef(*a) for a in args)),)


def programs() -> tuple[ProgramSpec, ...]:
    """affine: y = x * w + 1; gather: y = table[ids]; noop: y left as allocated."""
    batch = SymbolSpec("B", 1, 8)
    return (
        ProgramSpec(
            "affine",
            (batch,),
            (TensorSpec("x", "f32", ("B", 4)),),
            (TensorSpec("w", "f32", (4,)),),
            (TensorSpec("y", "f32", ("B", 4)),),
            _call("affine", ("input", "x"), ("weight", "w"), ("output", "y")),
        ),
        ProgramSpec(
            "gather",
            (batch, SymbolSpec("S", 1, 32)),
            (TensorSpec("ids", "i64", ("B", "S"), (0, VOCAB)),),
            (TensorSpec("table", "f32", (VOCAB, 4)),),
            (TensorSpec("y", "f32", ("B", "S", 4)),),
            _call("gather", ("input", "ids"), ("weight", "table"), ("output", "y")),
        ),
        ProgramSpec(
            "noop",
            (SymbolSpec("N"),),
            (TensorSpec("x", "f32", ("N",)),),
            (),
            (TensorSpec("y", "f32", ("N",)),),
            _call("noop", ("input", "x"), ("output", "y")),
        ),
    )


def write_artifact(directory: Path) -> dict[str, Any]:
    """Writes the C-backed artifact into ``directory``; returns its manifest as JSON data."""
    directory.mkdir(parents=True, exist_ok=True)
    library = directory / LIBRARY
    build_library(library)
    digest = hashlib.sha256(library.read_bytes()).hexdigest()
    manifest = Manifest(
        compiler_version="0.1.0",
        target=host_target(),
        binaries=(BinarySpec("kernels", LIBRARY, BINARY_KIND, digest),),
        programs=programs(),
    )
    data = manifest.to_json()
    write_manifest(directory, data)
    return data


def write_manifest(directory: Path, data: Any) -> None:
    (directory / MANIFEST_FILE).write_text(json.dumps(data, indent=2))
