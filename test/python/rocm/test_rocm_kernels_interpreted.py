"""The shared SIMT kernels (RMSNorm, RoPE, lookup, elementwise, SIMT attention) built for AMD
devices run in the kernel interpreter as the ROCm lowering receives them: after
``tessera-rocm-expand-math`` has replaced every transcendental by arithmetic and the LLVM
intrinsics the AMDGPU backend expands (sin/cos/tanh/exp are then this project's own code, so
their accuracy is checked here too). References are float64. Unrun on AMD hardware: this is
the numerical check there is."""

from __future__ import annotations

import math

import amd_interpreter  # noqa: F401  (registers the AMD rules)
import numpy as np
import pytest
import torch
from gpu_interpreter import KINDS, Buffer, Kernel, kernels_in, round_to
from mlir import ir

from tessera.context import make_context
from tessera.lowering.cpu.rope import inverse_frequencies
from tessera.lowering.cuda.kernel import KernelInfo, KernelModule
from tessera.lowering.cuda.kernels.attention import AttentionConfig
from tessera.lowering.cuda.kernels.elementwise import build_elementwise, generics_from_text
from tessera.lowering.cuda.kernels.flash_attention import build_flash_attention
from tessera.lowering.cuda.kernels.lookup import LookupConfig, build_lookup
from tessera.lowering.cuda.kernels.rms_norm import RmsNormConfig, build_rms_norm
from tessera.lowering.cuda.kernels.rope import RopeConfig, build_rope
from tessera.lowering.rocm.device import Amd
from tessera.pipeline import run_pipeline
from tessera.runtime import expr

ARCHS = ["gfx942", "gfx1100"]
MATH_OPS = ("math.sqrt", "math.sin", "math.cos", "math.tanh", "math.exp", "math.exp2", "math.erf")


def _build(arch: str, build: object) -> tuple[Kernel, KernelInfo, str]:
    """The kernel ``build(km)`` adds, after the ROCm math expansion."""
    with make_context(), ir.Location.unknown():
        km = KernelModule(arch, device=Amd(arch))
        info = build(km)  # type: ignore[operator]
        run_pipeline(km.module, "builtin.module(tessera-rocm-expand-math)", verify_each=False)
        km.module.operation.verify()
        text = str(km.module)
        return Kernel(kernels_in(km.module)[info.name]), info, text


def _launch(kernel: Kernel, info: KernelInfo, values: dict[str, object]) -> None:
    scalars = {k: v for k, v in values.items() if isinstance(v, int)}
    grid = [expr.evaluate(g, scalars) for g in info.grid]
    kernel.launch(grid, info.block, info.smem_bytes, [values[p.name] for p in info.params])


def _error(out: np.ndarray, ref: np.ndarray) -> float:
    assert not np.isnan(out).any(), "an output was not written"
    return float(np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref))


def _expanded(text: str) -> None:
    """No transcendental is left for the device libraries."""
    for name in MATH_OPS:
        assert name not in text, f"{name} survived the expansion"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("dtype", "width", "rows"), [("bf16", 2304, 3), ("f32", 77, 9)])
def test_rms_norm(arch: str, dtype: str, width: int, rows: int) -> None:
    cfg = RmsNormConfig(dtype, width, 1e-6)
    kernel, info, text = _build(arch, lambda km: build_rms_norm(km, cfg))
    _expanded(text)
    assert "llvm.sqrt.f32" in text and "__nv_" not in text
    rng = np.random.default_rng(width)
    kind = KINDS[dtype]
    x = round_to(kind, rng.standard_normal((rows, width)) * 2.0)
    w = round_to(kind, rng.standard_normal(width) * 0.5)
    y = Buffer.poisoned(rows * width, dtype, "y")
    values = {"x": Buffer.of(x, dtype, "x"), "w": Buffer.of(w, dtype, "w"), "y": y, "rows": rows}
    _launch(kernel, info, values)
    h = x.astype(np.float64)
    ref = h / np.sqrt((h * h).mean(-1, keepdims=True) + 1e-6) * (1.0 + w.astype(np.float64))
    bound = {"bf16": 2**-8, "f32": 1e-6}[dtype]
    assert _error(y.values().reshape(rows, width), ref) <= bound


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", ["bf16", "f32"])
def test_rope_with_expanded_sin_cos(arch: str, dtype: str) -> None:
    """Positions up to 8000 put angles near 8000 radians: the three-part reduction by π/2
    must keep cos and sin within a few f32 ulp of float64 there."""
    B, S, H, D = 2, 5, 3, 32
    cfg = RopeConfig(dtype, H, D, 10000.0)
    kernel, info, text = _build(arch, lambda km: build_rope(km, cfg))
    _expanded(text)
    rng = np.random.default_rng(7)
    kind = KINDS[dtype]
    x = round_to(kind, rng.standard_normal((B, S, H, D)))
    pos = rng.integers(0, 8000, size=(B, S)).astype(np.int64)
    y = Buffer.poisoned(x.size, dtype, "y")
    values = {"x": Buffer.of(x, dtype, "x"), "pos": Buffer.of(pos, "i64", "pos"), "y": y}
    _launch(kernel, info, values | {"B": B, "S": S})
    inv = np.array(inverse_frequencies(10000.0, D, 1.0), dtype=np.float32)
    angle = (pos[..., None].astype(np.float32) * inv).astype(np.float64)[:, :, None, :]
    cos, sin = np.cos(angle), np.sin(angle)
    h = x.astype(np.float64)
    x1, x2 = h[..., : D // 2], h[..., D // 2 :]
    ref = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    bound = {"bf16": 3 * 2**-8, "f32": 1e-6}[dtype]
    assert _error(y.values().reshape(x.shape), ref) <= bound


@pytest.mark.parametrize("arch", ARCHS)
def test_lookup(arch: str) -> None:
    cfg = LookupConfig("bf16", 97, 36, scale=6.0)
    kernel, info, _ = _build(arch, lambda km: build_lookup(km, cfg))
    rng = np.random.default_rng(3)
    table = round_to(KINDS["bf16"], rng.standard_normal((97, 36)))
    ids = np.array([0, 96, 5, 41, 96, 7, 13], dtype=np.int64)
    y = Buffer.poisoned(len(ids) * 36, "bf16", "y")
    values = {"table": Buffer.of(table, "bf16", "t"), "ids": Buffer.of(ids, "i64", "ids")}
    _launch(kernel, info, values | {"y": y, "n": len(ids)})
    ref = round_to(KINDS["bf16"], table[ids].astype(np.float64) * 6.0)
    assert np.array_equal(y.values().reshape(len(ids), 36), ref)


SOFTCAP = """
func.func @f(%x: tensor<?x203xbf16>) -> tensor<?x203xf32> {
  %c0 = arith.constant 0 : index
  %n = tensor.dim %x, %c0 : tensor<?x203xbf16>
  %e = tensor.empty(%n) : tensor<?x203xf32>
  %w = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>,
      affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<?x203xbf16>) outs(%e : tensor<?x203xf32>) {
  ^bb0(%in: bf16, %out: f32):
    %f = arith.extf %in : bf16 to f32
    %c = arith.constant 3.0e+01 : f32
    %d = arith.divf %f, %c : f32
    %t = math.tanh %d : f32
    %m = arith.mulf %t, %c : f32
    linalg.yield %m : f32
  } -> tensor<?x203xf32>
  return %w : tensor<?x203xf32>
}
"""


@pytest.mark.parametrize("arch", ARCHS)
def test_elementwise_softcap_with_expanded_tanh(arch: str) -> None:
    context = make_context()
    _module, generics = generics_from_text(SOFTCAP, context)  # keeps the generics alive
    with context, ir.Location.unknown():
        km = KernelModule(arch, device=Amd(arch))
        info = build_elementwise(km, generics[0])
        run_pipeline(km.module, "builtin.module(tessera-rocm-expand-math)", verify_each=False)
        text = str(km.module)
        kernel = Kernel(kernels_in(km.module)[info.name])
    _expanded(text)
    rows = 3
    rng = np.random.default_rng(11)
    # Scores across tanh's small (polynomial) and large (exp) ranges, and saturated ones.
    x = round_to(KINDS["bf16"], rng.standard_normal((rows, 203)) * 40.0)
    out = Buffer.poisoned(rows * 203, "f32", "out")
    _launch(kernel, info, {"in0": Buffer.of(x, "bf16", "x"), "out": out, "d0": rows})
    ref = 30.0 * np.tanh(x.astype(np.float64) / 30.0)
    got = out.values().reshape(rows, 203).astype(np.float64)
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert float(np.max(np.abs(got - ref) / ulp)) <= 8.0


def _attention_reference(
    cfg: AttentionConfig, q: np.ndarray, k: np.ndarray, v: np.ndarray
) -> np.ndarray:
    group = cfg.heads_q // cfg.heads_kv
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    s = np.einsum("bhsd,bhtd->bhst", q, k) * cfg.scale
    if cfg.softcap:
        s = cfg.softcap * np.tanh(s / cfg.softcap)
    S, T = q.shape[2], k.shape[2]
    last = np.arange(S)[:, None] + T - S
    key = np.arange(T)[None, :]
    visible = np.ones((S, T), dtype=bool)
    if cfg.causal:
        visible &= key <= last
    if cfg.window:
        visible &= key > last - cfg.window
    s = np.where(visible, s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return np.einsum("bhst,bhtd->bhsd", p, v) / p.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    "cfg",
    [
        AttentionConfig("bf16", 24, 4, 2, 0.2, causal=True, window=6, softcap=50.0),
        AttentionConfig("f32", 36, 4, 2, 36**-0.5, causal=True, softcap=30.0),
    ],
    ids=["bf16-softcap-window", "f32-softcap"],
)
def test_simt_attention(arch: str, cfg: AttentionConfig) -> None:
    """On AMD every dtype runs the SIMT kernel (a wave64 holds two queries of 32 lanes)."""
    kernel, info, text = _build(arch, lambda km: build_flash_attention(km, cfg))
    _expanded(text)
    assert "nvvm." not in text and "gpu.shuffle" in text
    B, S, T = 1, 21, 29
    rng = np.random.default_rng(S * 1000 + T)
    kind = KINDS[cfg.dtype]
    shapes = {"q": (cfg.heads_q, S), "k": (cfg.heads_kv, T), "v": (cfg.heads_kv, T)}
    logical = {
        n: round_to(kind, rng.standard_normal((B, h, n_, cfg.head_dim)) * 2.0)
        for n, (h, n_) in shapes.items()
    }
    out = Buffer.poisoned(B * cfg.heads_q * S * cfg.head_dim, cfg.dtype, "o")
    values: dict[str, object] = {n: Buffer.of(a, cfg.dtype, n) for n, a in logical.items()}
    values["o"] = out
    for name, (h, length) in (*shapes.items(), ("o", (cfg.heads_q, S))):
        d = cfg.head_dim
        values |= {f"{name}_sb": h * length * d, f"{name}_sh": length * d, f"{name}_ss": d}
    values |= {"B": B, "S": S, "T": T}
    _launch(kernel, info, values)
    ref = _attention_reference(cfg, *(logical[t].astype(np.float64) for t in "qkv"))
    bound = {"bf16": 2.5 * 2**-8, "f32": 2e-6}[cfg.dtype]
    assert _error(out.values().reshape(ref.shape), ref) <= bound


def test_expansions_match_float64_over_their_range() -> None:
    """exp, tanh, sin and cos of ``expand_math`` on f32 vectors, interpreted, against
    float64 over wide ranges (including overflow, underflow and the tanh switch point)."""
    text = """
    gpu.module @m [#rocdl.target<chip = "gfx942">] {
      gpu.func @k(%x: memref<?xf32>, %e: memref<?xf32>, %t: memref<?xf32>, %s: memref<?xf32>,
                  %c: memref<?xf32>) kernel attributes {known_block_size = array<i32: 64, 1, 1>} {
        %b = gpu.block_id x
        %i = gpu.thread_id x
        %c4 = arith.constant 4 : index
        %c64 = arith.constant 64 : index
        %row = arith.muli %b, %c64 : index
        %at0 = arith.addi %row, %i : index
        %at = arith.muli %at0, %c4 : index
        %v = vector.load %x[%at] : memref<?xf32>, vector<4xf32>
        %ve = math.exp %v : vector<4xf32>
        %vt = math.tanh %v : vector<4xf32>
        %vs = math.sin %v : vector<4xf32>
        %vc = math.cos %v : vector<4xf32>
        vector.store %ve, %e[%at] : memref<?xf32>, vector<4xf32>
        vector.store %vt, %t[%at] : memref<?xf32>, vector<4xf32>
        vector.store %vs, %s[%at] : memref<?xf32>, vector<4xf32>
        vector.store %vc, %c[%at] : memref<?xf32>, vector<4xf32>
        gpu.return
      }
    }
    """
    with make_context(), ir.Location.unknown():
        module = ir.Module.parse(f"module attributes {{gpu.container_module}} {{{text}}}")
        run_pipeline(module, "builtin.module(tessera-rocm-expand-math)", verify_each=False)
        _expanded(str(module))
        func = next(iter(kernels_in(module).values()))
        kernel = Kernel(func)
    rng = np.random.default_rng(5)
    count = 64 * 4 * 64
    x = np.concatenate(
        [
            rng.uniform(-90.0, 90.0, count // 4),
            rng.uniform(-0.6, 0.6, count // 4),
            rng.uniform(-8000.0, 8000.0, count // 4),
            rng.standard_normal(count // 4) * 1e-3,
        ]
    ).astype(np.float32)
    outs = {n: Buffer.poisoned(count, "f32", n) for n in "etsc"}
    kernel.launch([64, 1, 1], (64, 1, 1), 0, [Buffer.of(x, "f32", "x"), *outs.values()])
    h = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        _check_ulps(h, outs)


def _check_ulps(h: np.ndarray, outs: dict[str, Buffer]) -> None:
    """Each expansion's worst error in f32 ulps of the float64 result (sin/cos near their
    zeros in ulps of 2^-20, the size of the reduction's absolute error)."""
    for name, fn, ulps in (("e", np.exp, 3), ("t", np.tanh, 4), ("s", np.sin, 4), ("c", np.cos, 4)):
        ref = fn(h)
        got = outs[name].values().astype(np.float64)
        finite = np.isfinite(ref) & (np.abs(ref) < 3e38)
        scale = np.maximum(np.abs(ref), 2.0**-20 if name in "sc" else 0.0)
        ulp = np.spacing(scale.astype(np.float32)).astype(np.float64)
        worst = float(np.max(np.abs(got - ref)[finite] / np.maximum(ulp[finite], 1e-45)))
        assert worst <= ulps, f"{name}: {worst:.2f} ulp"
        assert np.array_equal(np.isinf(got), np.isinf(ref.astype(np.float32)))


SPECIAL = """
module attributes {gpu.container_module} {
  gpu.module @m [#rocdl.target<chip = "gfx942">] {
    gpu.func @k(%x: memref<?xf32>, %e: memref<?xf32>, %t: memref<?xf32>) kernel
        attributes {known_block_size = array<i32: 8, 1, 1>} {
      %i = gpu.thread_id x
      %v = memref.load %x[%i] : memref<?xf32>
      %a = math.exp %v : f32
      %b = math.tanh %v : f32
      memref.store %a, %e[%i] : memref<?xf32>
      memref.store %b, %t[%i] : memref<?xf32>
      gpu.return
    }
  }
}
"""


def test_math_expansion_keeps_torch_semantics_at_special_values() -> None:
    """NaN stays NaN, exp(-inf) = 0, exp(inf) = inf, tanh(±inf) = ±1."""
    values = np.array([np.nan, -np.inf, np.inf, 0.0, -0.0, 100.0, -100.0, 1e-30], np.float32)
    with make_context(), ir.Location.unknown():
        module = ir.Module.parse(SPECIAL)
        run_pipeline(module, "builtin.module(tessera-rocm-expand-math)", verify_each=False)
        kernel = Kernel(next(iter(kernels_in(module).values())))
    e, t = Buffer.poisoned(8, "f32", "e"), Buffer.poisoned(8, "f32", "t")
    kernel.launch([1, 1, 1], (8, 1, 1), 0, [Buffer.of(values, "f32", "x"), e, t])
    with np.errstate(over="ignore"):
        # exp(-100) is an f32 subnormal: within one subnormal step.
        expected = np.exp(values.astype(np.float64)).astype(np.float32)
        np.testing.assert_allclose(e.values(), expected, rtol=3e-7, atol=2e-45)
    np.testing.assert_allclose(t.values(), np.tanh(values.astype(np.float64)), rtol=3e-7)
    assert math.isnan(e.values()[0]) and math.isnan(t.values()[0])
    assert torch.isnan(torch.tensor(t.values()[0]))


ERF = """
module attributes {gpu.container_module} {
  gpu.module @m [#rocdl.target<chip = "gfx942">] {
    gpu.func @k(%x: memref<?xf32>, %y: memref<?xf32>) kernel
        attributes {known_block_size = array<i32: 64, 1, 1>} {
      %b = gpu.block_id x
      %i = gpu.thread_id x
      %c64 = arith.constant 64 : index
      %row = arith.muli %b, %c64 : index
      %at = arith.addi %row, %i : index
      %v = memref.load %x[%at] : memref<?xf32>
      %e = math.erf %v : f32
      memref.store %e, %y[%at] : memref<?xf32>
      gpu.return
    }
  }
}
"""


def test_erf_expansion_matches_float64() -> None:
    """erf (the exact GELU) without the device library: within 3 f32 ulps of float64 across
    both pieces, their switch points (1 and 4), tiny values, infinities; NaN stays NaN."""
    with make_context(), ir.Location.unknown():
        module = ir.Module.parse(ERF)
        run_pipeline(module, "builtin.module(tessera-rocm-expand-math)", verify_each=False)
        _expanded(str(module))
        kernel = Kernel(next(iter(kernels_in(module).values())))
    rng = np.random.default_rng(11)
    count = 64 * 64
    edges = np.array([0.0, -0.0, 1.0, -1.0, 4.0, -4.0, np.inf, -np.inf, 1e-30, 3.9])
    x = np.concatenate(
        [
            edges,
            np.nextafter(np.float32([1.0, 4.0]), np.float32(0)).astype(np.float64),
            rng.uniform(-6.0, 6.0, count // 2),
            rng.uniform(0.9, 1.1, count // 4),
            rng.standard_normal(count // 4 - len(edges) - 2) * 1e-3,
        ]
    ).astype(np.float32)
    out = Buffer.poisoned(count, "f32", "y")
    kernel.launch([64, 1, 1], (64, 1, 1), 0, [Buffer.of(x, "f32", "x"), out])
    got = out.values().astype(np.float64)
    ref = np.array([math.erf(v) for v in x.astype(np.float64)])
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    worst = float(np.max(np.abs(got - ref) / np.maximum(ulp, 1e-45)))
    assert worst <= 3, f"erf: {worst:.2f} ulp"
    nan = Buffer.poisoned(64 * 64, "f32", "y")
    kernel.launch(
        [64, 1, 1], (64, 1, 1), 0, [Buffer.of(np.full(count, np.nan, np.float32), "f32", "x"), nan]
    )
    assert np.isnan(nan.values()).all()
