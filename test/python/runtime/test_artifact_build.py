"""Building CPU artifacts from tensor-level modules and running them: in a fresh process that
cannot import MLIR or the compiler, in process through the JIT, and the toolchain's failures."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import seeds
import torch
from mlir import ir
from test_artifact_support import AFFINE, GATHER, MATMUL, OVERWRITE, prepare

import tessera.runtime as rt
from tessera import LoweringError, RuntimeInputError, ToolchainError
from tessera.lowering.cpu import artifact as cpu_artifact
from tessera.lowering.cpu.artifact import build_artifact, jit_programs

SAMPLES = {
    "affine_f32": (AFFINE.format(t="f32"), {"dims": {"x": ["B", 4]}, "bounds": {"B": (1, 64)}}),
    "affine_bf16": (AFFINE.format(t="bf16"), {"dims": {"x": ["B", 4]}}),
    "matmul": (MATMUL, {"dims": {"x": ["B", 4]}}),
    "gather": (GATHER, {"dims": {"input_ids": ["B", "S"]}}),
}


def _prepare(name: str) -> tuple[ir.Module, rt.ProgramSpec]:
    text, describe = SAMPLES[name]
    return prepare(text, **describe)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    built = {}
    for name in SAMPLES:
        module, spec = _prepare(name)
        directory = tmp_path_factory.mktemp(name)
        build_artifact(module, [spec], directory, metadata={"sample": name})
        built[name] = directory
    return built


def test_artifact_folder_holds_the_library_and_manifest(artifacts: dict[str, Path]) -> None:
    directory = artifacts["matmul"]
    assert sorted(os.listdir(directory)) == ["manifest.json", "model.so"]
    data = json.loads((directory / "manifest.json").read_text())
    assert data["version"] == rt.manifest.VERSION
    assert data["compiler"] == {"name": "tessera", "version": "0.1.0"}
    assert data["target"]["kind"] == "cpu"
    # Code compiled for this machine's CPU: the features it may use are recorded.
    assert data["target"]["cpu"] and "sse2" in data["target"]["features"]
    assert data["metadata"] == {"sample": "matmul"}
    library = directory / "model.so"
    assert data["binaries"]["model"]["sha256"] == hashlib.sha256(library.read_bytes()).hexdigest()
    loaded = ctypes.CDLL(os.fspath(library), mode=os.RTLD_LOCAL)
    for symbol in ("_mlir_ciface_forward", "_mlir__mlir_ciface_forward"):
        assert ctypes.cast(loaded[symbol], ctypes.c_void_p).value
    program = data["programs"]["prefill"]
    assert program["outputs"] == [{"name": "output0", "dtype": "f32", "shape": ["B", 8]}]


# Runs in a fresh interpreter where MLIR, llvmlite and tessera's compiler cannot be imported.
RUN_WITHOUT_COMPILER = r"""
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top, _, rest = name.partition(".")
        allowed = rest.split(".")[0] in ("", "errors", "runtime")
        if top in ("mlir", "llvmlite") or (top == "tessera" and not allowed):
            raise ImportError(name + " is not available to the runtime")
        return None

sys.meta_path.insert(0, Block())
import torch
import tessera.runtime as rt
from tessera import RuntimeInputError

dirs = json.loads(sys.argv[1])
torch.manual_seed(int(sys.argv[2]))
report = {}

def relative(y, ref):
    return float((y.double() - ref).norm() / ref.norm())

for name, dtype in (("affine_f32", torch.float32), ("affine_bf16", torch.bfloat16)):
    art = rt.load(dirs[name])
    w = torch.randn(4).to(dtype)
    art.bind({"w": w})
    for batch in (1, 5):
        x = torch.randn(batch, 4).to(dtype)
        (y,) = art["prefill"](x)
        report[f"{name}/{batch}"] = [str(y.dtype), list(y.shape),
                                     relative(y, x.double() * w.double() + 1)]

art = rt.load(dirs["matmul"])
w = torch.randn(4, 8)
art.bind([w])
x = torch.randn(3, 4)
(y,) = art["prefill"](x=x)
report["matmul"] = [str(y.dtype), list(y.shape), relative(y, x.double() @ w.double())]

art = rt.load(dirs["gather"])
table = torch.randn(16, 8).to(torch.bfloat16)
art.bind({"embed": table})
ids = torch.randint(0, 16, (2, 7))
(y,) = art["prefill"](ids)
report["gather"] = [str(y.dtype), list(y.shape), relative(y, table[ids].double() * 2)]
try:
    art["prefill"](torch.tensor([[3, 16]]))
except RuntimeInputError as error:
    report["gather/out of range"] = str(error)

report["modules"] = sorted(m for m in sys.modules if m.startswith(("mlir", "llvmlite", "tessera")))
print(json.dumps(report))
"""


def test_artifacts_run_where_the_compiler_cannot_be_imported(artifacts: dict[str, Path]) -> None:
    dirs = json.dumps({name: os.fspath(path) for name, path in artifacts.items()})
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_COMPILER, dirs, str(seeds.generator().initial_seed())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for batch in (1, 5):
        dtype, shape, error = report[f"affine_f32/{batch}"]
        assert (dtype, shape) == ("torch.float32", [batch, 4]) and error <= 1e-6
        dtype, shape, error = report[f"affine_bf16/{batch}"]
        assert (dtype, shape) == ("torch.bfloat16", [batch, 4]) and error <= 1e-2
    dtype, shape, error = report["matmul"]
    assert (dtype, shape) == ("torch.float32", [3, 8]) and error <= 1e-6
    dtype, shape, error = report["gather"]
    assert (dtype, shape) == ("torch.bfloat16", [2, 7, 8]) and error == 0.0
    assert report["gather/out of range"] == (
        "input 'input_ids' holds 16 at index [0, 1], outside [0, 16)"
    )
    assert not [m for m in report["modules"] if m.startswith(("mlir", "llvmlite"))]


def test_jit_runs_the_same_plan_as_the_shared_object(artifacts: dict[str, Path]) -> None:
    module, spec = _prepare("matmul")
    jitted = jit_programs(module, [spec])["prefill"]
    loaded = rt.load(artifacts["matmul"])["prefill"]
    w = torch.randn(4, 8)
    jitted.bind({"w": w})
    loaded.bind({"w": w})
    x = torch.randn(6, 4)
    torch.testing.assert_close(jitted(x)[0], loaded(x)[0], rtol=0, atol=0)
    with pytest.raises(RuntimeInputError, match="input 'x' dim 1 is 5, expected 4"):
        jitted(torch.randn(2, 5))


def test_the_callers_input_is_never_written() -> None:
    module, spec = prepare(OVERWRITE)
    program = jit_programs(module, [spec])["prefill"]
    program.bind({})
    x = torch.zeros(3)
    (y,) = program(x)
    torch.testing.assert_close(y, torch.tensor([7.0, 0.0, 0.0]))
    torch.testing.assert_close(x, torch.zeros(3))


def test_rebuilding_replaces_the_files(tmp_path: Path) -> None:
    for _ in range(2):
        module, spec = _prepare("affine_f32")
        build_artifact(module, [spec], tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["manifest.json", "model.so"]
    loaded = rt.load(tmp_path)
    loaded.bind({"w": torch.ones(4)})
    torch.testing.assert_close(loaded["prefill"](torch.ones(2, 4))[0], torch.full((2, 4), 2.0))


def test_no_c_compiler_is_a_toolchain_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, spec = _prepare("matmul")
    monkeypatch.setattr(cpu_artifact.shutil, "which", lambda name: None)
    with pytest.raises(ToolchainError, match="no C compiler \\('cc' or 'gcc'\\) on PATH"):
        build_artifact(module, [spec], tmp_path)
    assert os.listdir(tmp_path) == []


def test_link_failure_gives_a_command_that_reproduces_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = tmp_path / "cc"
    failing.write_text("#!/bin/sh\necho 'undefined reference to memrefCopy' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setattr(cpu_artifact, "_c_compiler", lambda: os.fspath(failing))
    module, spec = _prepare("matmul")
    out = tmp_path / "artifact"
    with pytest.raises(ToolchainError) as raised:
        build_artifact(module, [spec], out)
    message = str(raised.value)
    assert "linking the shared object failed:\nundefined reference to memrefCopy\n" in message
    command = raised.value.command
    assert command is not None and command[0] == os.fspath(failing)
    assert f"to reproduce: {' '.join(command)}" in message
    obj = next(arg for arg in command if arg.endswith(".o"))
    assert Path(obj).is_file()  # kept, so that the command reproduces the failure
    shutil.rmtree(Path(obj).parent)
    assert os.listdir(out) == []


def test_missing_export_is_reported(tmp_path: Path) -> None:
    module, spec = _prepare("matmul")
    renamed = rt.ProgramSpec(
        spec.name,
        spec.symbols,
        spec.inputs,
        spec.weights,
        spec.outputs,
        (rt.HostCall("model", "_mlir__mlir_ciface_decode", spec.steps[0].args),),
    )
    with pytest.raises(LoweringError, match="does not export _mlir__mlir_ciface_decode"):
        build_artifact(module, [renamed], tmp_path)


def test_jit_reports_a_symbol_it_lacks() -> None:
    module, spec = _prepare("matmul")
    step = spec.steps[0]
    renamed = rt.ProgramSpec(
        spec.name,
        spec.symbols,
        spec.inputs,
        spec.weights,
        spec.outputs,
        (rt.HostCall(step.binary, "_mlir__mlir_ciface_decode", step.args),),
    )
    with pytest.raises(LoweringError, match="has no symbol '_mlir__mlir_ciface_decode'"):
        jit_programs(module, [renamed])
