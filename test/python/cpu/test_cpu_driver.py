"""The CPU lowering driver: one rule per tessera op, a located error for an op without one,
its options, the target stamped on the LLVM functions, entry functions with output buffers."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from mlir.execution_engine import ExecutionEngine
from test_cpu_support import assert_rare_flips, lowered

from tessera.context import make_context, parse_module
from tessera.dialects import SCHEMAS
from tessera.errors import LoweringError, PassError
from tessera.lowering.cpu import registry
from tessera.lowering.cpu.host import Host, host, target
from tessera.lowering.cpu.pipeline import LowerToCpuOptions, lower, lower_to_cpu
from tessera.pipeline import run_pipeline
from tessera.runtime.memref import descriptor

NORM = """func.func @forward(%x: tensor<?x8xf32>, %w: tensor<8xf32>) -> tensor<?x8xf32> {
  %y = "tessera.norm.rms"(%x, %w) {eps = 1.0e-06 : f32}
      : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}"""


def test_every_tessera_op_has_a_cpu_rule() -> None:
    structural = {"tessera.region", "tessera.yield"}  # dissolved before the rules run
    missing = sorted(set(SCHEMAS) - structural - set(registry.RULES))
    assert missing == []


def test_op_without_rule_fails_at_its_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(registry.RULES, "tessera.norm.rms")
    module = parse_module(NORM, make_context(), source_name="model.mlir")
    with pytest.raises(LoweringError) as raised:
        lower_to_cpu(module.operation, LowerToCpuOptions())
    assert raised.value.message == "no cpu lowering for 'tessera.norm.rms'"
    location = raised.value.location
    assert location is not None and (location.file, location.line) == ("model.mlir", 2)


def test_missing_rule_is_a_pass_diagnostic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(registry.RULES, "tessera.norm.rms")
    module = parse_module(NORM, make_context(), source_name="model.mlir")
    with pytest.raises(PassError, match=r"no cpu lowering for 'tessera\.norm\.rms'") as raised:
        run_pipeline(module, "builtin.module(tessera-lower-to-cpu)")
    assert str(raised.value).startswith("model.mlir:2:")
    # lower() reports it as the LoweringError it is.
    module = parse_module(NORM, make_context(), source_name="model.mlir")
    with pytest.raises(LoweringError, match="no cpu lowering") as lowered_error:
        lower(module)
    assert str(lowered_error.value).startswith("model.mlir:2:")


def test_unknown_instruction_set_is_rejected() -> None:
    module = parse_module(NORM, make_context())
    with pytest.raises(PassError, match="unknown instruction set 'avx9'"):
        run_pipeline(module, "builtin.module(tessera-lower-to-cpu{isa=avx9})")


def test_named_instruction_sets_set_the_vector_width() -> None:
    assert target("avx512-bf16").lanes == 16 and target("avx512-bf16").bf16_dot
    assert target("avx512").lanes == 16 and not target("avx512").bf16_dot
    assert target("avx2").lanes == 8
    assert target("sse").lanes == 4
    assert target("host", threads=3).threads == 3


def test_host_description_follows_llvm_features() -> None:
    here = host()
    assert here.threads >= 1
    assert here.lanes == (
        16 if "+avx512f" in here.features else 8 if "+avx2" in here.features else 4
    )
    assert Host("x", ("+avx512f", "+avx512bf16")).bf16_dot
    assert not Host("x", ("+avx512f",)).bf16_dot


def test_llvm_functions_carry_the_host_target() -> None:
    _, _, stages = lowered(NORM)
    llvm = stages["llvm"]
    functions = [line for line in llvm.splitlines() if line.strip().startswith("llvm.func")]
    assert functions
    for line in functions:
        assert f'target_cpu = "{host().cpu}"' in line, line
        assert "target_features = #llvm.target_features<[" in line, line


def test_entry_with_an_output_buffer() -> None:
    """An entry function that writes its result into a caller's buffer lowers and runs."""
    source = """
func.func @forward(%x: tensor<?x64xbf16>, %w: tensor<32x64xbf16>, %out: memref<?x32xbf16>) {
  %y = "tessera.mma.proj"(%x, %w) {transpose_w = true}
      : (tensor<?x64xbf16>, tensor<32x64xbf16>) -> tensor<?x32xbf16>
  %t = math.tanh %y : tensor<?x32xbf16>
  bufferization.materialize_in_destination %t in restrict writable %out
      : (tensor<?x32xbf16>, memref<?x32xbf16>) -> ()
  return
}"""
    _, module, _ = lowered(source)
    engine = ExecutionEngine(module, opt_level=3)
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    w = torch.randn(32, 64, dtype=torch.bfloat16) / 8
    out = torch.full((5, 32), float("nan"), dtype=torch.bfloat16)
    descriptors = [descriptor(t) for t in (x, w, out)]
    pointers = [ctypes.c_void_p(ctypes.addressof(d)) for d in descriptors]
    packed = (ctypes.c_void_p * 3)(*[ctypes.addressof(p) for p in pointers])
    ctypes.CFUNCTYPE(None, ctypes.c_void_p)(engine.raw_lookup("_mlir_ciface_forward"))(packed)
    expected = torch.tanh(torch.nn.functional.linear(x, w))
    assert_rare_flips(out, expected, 0.02)
    assert (out.float() - expected.float()).abs().max().item() < 0.02


def test_large_kernels_get_a_pthread_launcher() -> None:
    """With several cores the proj core is reached through a launcher that starts
    threads - 1 pthreads; with one core there is no launcher."""
    source = """
func.func @forward(%x: tensor<?x64xf32>, %w: tensor<96x64xf32>) -> tensor<?x96xf32> {
  %y = "tessera.mma.proj"(%x, %w) {transpose_w = true}
      : (tensor<?x64xf32>, tensor<96x64xf32>) -> tensor<?x96xf32>
  return %y : tensor<?x96xf32>
}"""
    _, _, stages = lowered(source, threads=3)
    launcher = [
        line
        for line in stages["llvm"].splitlines()
        if line.strip().startswith("llvm.func @tessera_parallel3_tessera_proj")
    ]
    assert len(launcher) == 1
    assert stages["llvm"].count("llvm.call @pthread_create") == 2
    _, _, single = lowered(source, threads=1)
    assert "pthread_create" not in single["llvm"]


def test_machine_code_uses_the_host_vector_width(tmp_path: Path) -> None:
    """The JIT compiles for the host CPU: with AVX-512 the kernels use zmm registers (and
    vdpbf16ps for bf16 where the CPU has it)."""
    tool = shutil.which("llvm-objdump") or shutil.which("objdump")
    if tool is None:
        pytest.skip("no objdump to disassemble the object code")
    here = host()
    if not here.has("avx512f"):
        pytest.skip("the host has no AVX-512")
    source = """
func.func @forward(%x: tensor<?x256xbf16>, %w: tensor<64x256xbf16>) -> tensor<?x64xbf16> {
  %y = "tessera.mma.proj"(%x, %w) {transpose_w = true}
      : (tensor<?x256xbf16>, tensor<64x256xbf16>) -> tensor<?x64xbf16>
  return %y : tensor<?x64xbf16>
}"""
    _, module, _ = lowered(source)
    engine = ExecutionEngine(module, opt_level=3)
    engine.dump_to_object_file(str(tmp_path / "kernel.o"))
    listing = subprocess.run(
        [tool, "-d", str(tmp_path / "kernel.o")], capture_output=True, text=True, check=True
    ).stdout
    if here.bf16_dot:
        assert re.search(r"vdpbf16ps\s.*zmm", listing)
    else:
        assert re.search(r"vfmadd\w+\s.*zmm", listing)
