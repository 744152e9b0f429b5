"""Code for a named instruction set instead of this CPU: the artifact records the level it was
built for and uses nothing beyond it, so it loads on any CPU that has that level, while an
artifact built for this CPU is refused, naming the features a poorer CPU lacks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import seeds
import torch
from test_cpu_support import randn

import tessera.lowering.cpu.entry_abi  # noqa: F401  (registers tessera-cpu-entry-abi)
import tessera.runtime as rt
from tessera.context import make_context, parse_module
from tessera.errors import LoweringError
from tessera.lowering.cpu.artifact import build_artifact
from tessera.lowering.cpu.entry_describe import describe_entry, packed_symbol
from tessera.lowering.cpu.host import ISAS, host, target
from tessera.lowering.cpu.pipeline import lower
from tessera.lowering.cpu.target import CpuTarget
from tessera.pipeline import run_pipeline
from tessera.runtime.manifest import Manifest

PROJ = """
func.func @forward(%x: tensor<?x256xbf16> {tessera.input = "x"},
                   %w: tensor<64x256xbf16> {tessera.weight = "w"}) -> tensor<?x64xbf16> {
  %y = "tessera.mma.proj"(%x, %w) {transpose_w = true}
      : (tensor<?x256xbf16>, tensor<64x256xbf16>) -> tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}"""

# /proc/cpuinfo flags of an AVX2 CPU without AVX-512 (a Haswell-class core).
AVX2_FLAGS = frozenset(
    "fpu cmov cx8 fxsr mmx sse sse2 pni ssse3 sse4_1 sse4_2 popcnt cx16 lahf_lm xsave avx "
    "avx2 fma f16c bmi1 bmi2 abm movbe".split()
)


def build(isa: str, directory: Path) -> Manifest:
    module = parse_module(PROJ, make_context(), source_name="proj.mlir")
    run_pipeline(module, "builtin.module(tessera-cpu-entry-abi)")
    spec = describe_entry(module, dims={"x": ["B", 256]})
    lower(module, isa=isa)
    return build_artifact(module, [spec], directory, machine=target(isa))


def live_code(library: Path) -> str:
    """The disassembly of what a program can run: the entry's packed wrapper and every
    function the compiler wrote (the ExecutionEngine's other ``_mlir_`` wrappers, compiled
    for the build machine, are never called)."""
    tool = shutil.which("llvm-objdump") or shutil.which("objdump")
    if tool is None:
        pytest.skip("no objdump to disassemble the shared object")
    listing = subprocess.run(
        [tool, "-d", str(library)], capture_output=True, text=True, check=True
    ).stdout
    functions = re.split(r"\n(?=[0-9a-f]+ <)", listing)
    entry = f"<{packed_symbol('forward')}>:"
    kept = [f for f in functions if entry in f or not re.match(r"[0-9a-f]+ <_mlir_", f)]
    assert any(entry in f for f in kept), f"no {entry} in the shared object"
    return "\n".join(kept)


@pytest.mark.parametrize("isa", ["avx2", "sse"])
def test_portable_artifact_records_its_level_and_stays_within_it(isa: str, tmp_path: Path) -> None:
    manifest = build(isa, tmp_path)
    cpu, features = ISAS[isa]
    assert manifest.target.cpu == cpu
    assert set(manifest.target.features) == {f.removeprefix("+") for f in features}
    listing = live_code(tmp_path / "model.so")
    # No AVX-512 register or instruction anywhere, and no 256-bit one below AVX2.
    assert not re.search(r"%zmm|%k[1-7]\b|vdpbf16ps", listing)
    if isa == "sse":
        assert not re.search(r"%ymm|\bv(fmadd|add|mul)\w*ps", listing)
    else:
        assert re.search(r"%ymm", listing), "the avx2 build does not use 256-bit vectors"


def test_portable_artifact_loads_where_a_host_build_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build("avx2", tmp_path / "avx2")
    build("host", tmp_path / "host")
    generator = seeds.generator()
    x = randn((5, 256), "bf16", generator)
    w = randn((64, 256), "bf16", generator, 1 / 16)
    expected = torch.nn.functional.linear(x, w)
    monkeypatch.setattr(rt.cpu, "cpu_flags", lambda: AVX2_FLAGS)
    portable = rt.load(tmp_path / "avx2")
    portable.bind({"w": w})
    (out,) = portable["prefill"](x)
    # One f32 sum over K rounded to bf16, as torch's: at most rare one-rounding flips.
    assert int((out != expected).sum()) <= max(1, out.numel() // 50)
    if not host().has("avx512f"):
        pytest.skip("this CPU has no AVX-512, so its own build runs on the AVX2 CPU too")
    with pytest.raises(rt.ArtifactError) as refused:
        rt.load(tmp_path / "host")
    message = str(refused.value)
    assert "target.features: the artifact's code was compiled for a " in message
    assert f"{host().cpu} CPU and may use " in message
    assert "avx512f" in message and "which this CPU lacks" in message
    assert "rebuild the artifact on this machine, or for an instruction set" in message


def test_cpu_target_takes_an_instruction_set() -> None:
    portable = CpuTarget("avx2")
    assert portable.name == "cpu:avx2"
    assert portable.fingerprint()["cpu"] == "x86-64-v3"
    assert "avx512f" not in portable.fingerprint()["features"]
    assert CpuTarget().fingerprint()["cpu"] == host().cpu
    with pytest.raises(LoweringError, match="unknown instruction set 'avx9'"):
        CpuTarget("avx9")


def test_lowering_stamps_the_chosen_instruction_set() -> None:
    module = parse_module(PROJ, make_context())
    stages = lower(module, isa="avx2")
    functions = [l for l in stages["llvm"].splitlines() if l.strip().startswith("llvm.func")]
    assert functions
    for line in functions:
        assert 'target_cpu = "x86-64-v3"' in line, line
        assert '"+avx2"' in line and "avx512" not in line, line


ADD = """
func.func @forward(%x: tensor<?x64xbf16> {tessera.input = "x"},
                   %y: tensor<?x64xbf16> {tessera.input = "y"}) -> tensor<?x64xbf16> {
  %c0 = arith.constant 0 : index
  %n = tensor.dim %x, %c0 : tensor<?x64xbf16>
  %init = tensor.empty(%n) : tensor<?x64xbf16>
  %s = linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                                        affine_map<(i, j) -> (i, j)>],
                       iterator_types = ["parallel", "parallel"]}
      ins(%x, %y : tensor<?x64xbf16>, tensor<?x64xbf16>) outs(%init : tensor<?x64xbf16>) {
  ^bb0(%a: bf16, %b: bf16, %out: bf16):
    %sum = arith.addf %a, %b : bf16
    linalg.yield %sum : bf16
  } -> tensor<?x64xbf16>
  return %s : tensor<?x64xbf16>
}"""


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_bf16_arithmetic_needs_no_compiler_runtime_without_avx512bf16(
    isa: str, tmp_path: Path
) -> None:
    """Without avx512bf16, LLVM would round each bf16 sum through ``__truncsfbf2``, which the
    ExecutionEngine cannot resolve (the process aborts): the lowering leaves no bf16
    arithmetic, the sums are f32 sums rounded once to nearest even, as torch's bf16 add."""
    module = parse_module(ADD, make_context(), source_name="add.mlir")
    run_pipeline(module, "builtin.module(tessera-cpu-entry-abi)")
    spec = describe_entry(module, dims={"x": ["B", 64], "y": ["B", 64]})
    lower(module, isa=isa)
    arithmetic = re.findall(r"llvm\.(?:fadd|fsub|fmul|fdiv|fptrunc)\b[^\n]*bf16", str(module))
    assert not arithmetic, arithmetic[:3]
    if not all(host().has(f[1:]) for f in ISAS[isa][1]):
        pytest.skip(f"this CPU cannot run {isa} code")
    build_artifact(module, [spec], tmp_path, machine=target(isa))
    generator = seeds.generator()
    x, y = randn((5, 64), "bf16", generator), randn((5, 64), "bf16", generator)
    (out,) = rt.load(tmp_path)["prefill"](x, y)
    assert torch.equal(out, x + y)
