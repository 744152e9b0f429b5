"""GEMM kernels for the CUDA target: ``y = epilogue(x · wᵀ)`` with x [M, K] and w [N, K]
(``transpose_w``, as torch's Linear stores it) or [K, N].

Three kernel families share one parameter list and one epilogue:

- ``mma`` (bf16, f16): tensor cores. cp.async copies of 16 bytes fill swizzled shared-memory
  tiles (``gemm_tiles``), ldmatrix feeds ``mma.sync.m16n8k16`` with f32 accumulators
  (``gemm_mma``). The main loop is written unpipelined and marked ``tessera.pipeline``;
  ``tessera-schedule-async-copies`` makes it ``stages`` deep.
- ``simt`` (f32): a register-tiled FMA kernel, so f32 results keep f32 accuracy (no tf32),
  pipelined by the same pass (``gemm_simt``).
- ``gemv`` (any dtype, few rows: decode): bandwidth-bound; each warp reduces a few output
  columns with 16-byte loads of w and warp shuffles (``gemm_gemv``).

``select_gemm(cfg, m_hint)`` picks the family (and the GEMV's row count) for an expected M;
``build_gemm(km, cfg)`` builds the one ``cfg.kernel`` names (``auto``: mma or simt by dtype;
any family is correct for any M).

Kernel parameters, in order: ``x`` [M, K], ``w``, ``w2`` (gated only), ``bias`` [N]
(``has_bias`` only), ``y`` [M, N] (all buffers row-major, in ``dtype``), then ``M`` (i32).

The epilogue works on the f32 accumulators and rounds once to ``dtype`` (round to nearest
even, as torch does): plain ``y = acc (+ bias)``; gated (the gated MLP, w = gate and w2 = up)
``y = act(x·wᵀ) * (x·w2ᵀ)`` with act ``gelu_tanh``, ``gelu`` (erf) or ``silu``; then, with
``softcap = c``, ``y = c * tanh(y / c)``.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass

from mlir import ir

from tessera.errors import LoweringError

from ..kernel import KernelInfo, KernelModule, Param

DTYPES = ("bf16", "f16", "f32")
ACTIVATIONS = ("gelu_tanh", "gelu", "silu")
KERNELS = ("auto", "mma", "simt", "gemv")


@dataclass(frozen=True)
class GemmTile:
    """Tiling of the ``mma`` and ``simt`` kernels: a block computes block_m x block_n of y,
    stepping block_k through K; warps_m x warps_n warps split the block tile (``simt``: the
    block has warps_m * warps_n warps whose threads each compute
    (block_m / 16) x (block_n / 16) outputs); ``stages`` shared-memory stages; ``group_m``
    row tiles are visited together so the w tiles they share stay in L2."""

    block_m: int = 128
    block_n: int = 128
    block_k: int = 32
    warps_m: int = 2
    warps_n: int = 2
    stages: int = 4
    group_m: int = 8

    @property
    def threads(self) -> int:
        return self.warps_m * self.warps_n * 32


@dataclass(frozen=True)
class GemvTile:
    """Tiling of the ``gemv`` kernel: a block of ``warps`` warps, each warp computing
    ``cols`` output columns for ``rows`` rows of x (grid.y covers the rest of M); the K loop
    is unrolled ``unroll`` times so that many loads are in flight. ``splits`` warps (w as
    [N, K] only) share each column's K, their sums added in shared memory: more loads in
    flight per column where K is long and N short."""

    rows: int = 4
    cols: int = 2
    warps: int = 4
    unroll: int = 4
    splits: int = 1

    @property
    def label(self) -> str:
        """The tile in kernel names: ``r1c1w2u8``, ``k4`` appended for 4 splits."""
        split = f"k{self.splits}" if self.splits > 1 else ""
        return f"r{self.rows}c{self.cols}w{self.warps}u{self.unroll}{split}"


@dataclass(frozen=True)
class GemmConfig:
    """What one GEMM kernel computes (see the module docstring) and how it is tiled.

    ``tile`` None takes ``default_tile(cfg)``; an autotuner passes its own."""

    dtype: str
    N: int
    K: int
    transpose_w: bool = True
    softcap: float | None = None
    has_bias: bool = False
    gated: bool = False
    activation: str = "gelu_tanh"
    kernel: str = "auto"
    tile: GemmTile | None = None
    gemv: GemvTile = GemvTile()
    # The GEMV with w as [N, K] on a device with programmatic launch: w's first loads go out
    # before the grid wait (``gemm_gemv``), so w must be a weight (``LaunchPlan.launch``).
    weights_before_wait: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise LoweringError(f"gemm dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.kernel not in KERNELS:
            raise LoweringError(f"gemm kernel must be one of {KERNELS}, got {self.kernel!r}")
        if self.N < 1 or self.K < 1:
            raise LoweringError(f"gemm needs N, K >= 1, got N={self.N} K={self.K}")
        if self.gated and self.activation not in ACTIVATIONS:
            raise LoweringError(
                f"gated gemm activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if self.gated and self.has_bias:
            raise LoweringError("a gated gemm takes no bias (the gated MLP has none)")
        if self.softcap is not None and not self.softcap > 0:
            raise LoweringError(f"softcap must be positive, got {self.softcap}")

    @property
    def family(self) -> str:
        """The kernel family ``build_gemm`` makes: ``kernel``, with ``auto`` resolved."""
        if self.kernel != "auto":
            return self.kernel
        return "simt" if self.dtype == "f32" else "mma"

    @property
    def weights(self) -> tuple[str, ...]:
        return ("w", "w2") if self.gated else ("w",)


def default_tile(cfg: GemmConfig) -> GemmTile:
    """The tile used when ``cfg.tile`` is None (measured on an H100; see docs)."""
    if cfg.family == "simt":
        # 8 x 8 outputs per thread; 4 x 8 per accumulator set when gated (no spills)
        rows = 64 if cfg.gated else 128
        return GemmTile(block_m=rows, block_n=128, block_k=16, warps_m=4, warps_n=2, stages=3)
    if cfg.gated:
        # Two accumulator sets: half as many columns keeps them in registers.
        return GemmTile(block_m=128, block_n=64, block_k=32, warps_m=2, warps_n=2, stages=4)
    return GemmTile()


def copyable(cfg: GemmConfig) -> bool:
    """Whether the tiled kernels can copy x and w with cp.async: their contiguous
    dimensions (K, and N for w as [K, N]) must be rows of at least 4 bytes' multiple."""
    if cfg.dtype == "f32":
        return True
    return cfg.K % 2 == 0 and (cfg.transpose_w or cfg.N % 2 == 0)


def select_gemm(cfg: GemmConfig, m_hint: int | None) -> GemmConfig:
    """``cfg`` with its kernel chosen for an expected M of ``m_hint`` rows (None: unknown,
    large): the bandwidth-bound ``gemv`` for 8 rows or fewer (its row count the next power
    of two), else ``mma`` (bf16, f16) or ``simt`` (f32). 16-bit matrices with an odd
    contiguous dimension cannot be tiled through cp.async and also take the ``gemv``
    (correct for any M, at GEMV speed)."""
    if m_hint is not None and 1 <= m_hint <= 8:
        rows = 1 << (m_hint - 1).bit_length()
        if rows == 1 and cfg.transpose_w:
            # One column a warp puts more warps on each output (more loads in flight): timed
            # side by side on an H100 at the decode shapes
            # (h100-2026-12-07-gemv-tiles-prefetch.json, every tile then with a weight
            # prefetch since removed), two-warp blocks unrolled 8 deep read 1.26-1.30x faster
            # than two columns a warp at N 2048 and N 256, and four-warp blocks 1.05x for the
            # gated GEMV.
            tile = GemvTile(1, 1, 4, 4) if cfg.gated else GemvTile(1, 1, 2, 8)
            return dataclasses.replace(cfg, kernel="gemv", gemv=tile)
        # The gated form keeps two accumulator sets: past 4 rows, two columns a warp spill
        # registers (8.7 KB of spill stores at rows 8, measured 47 GB/s on an H100), one
        # column fits (233 registers for bf16).
        cols = 1 if cfg.gated and rows > 4 else cfg.gemv.cols
        return dataclasses.replace(
            cfg, kernel="gemv", gemv=dataclasses.replace(cfg.gemv, rows=rows, cols=cols)
        )
    if not copyable(cfg):
        return dataclasses.replace(cfg, kernel="gemv")
    return dataclasses.replace(cfg, kernel="simt" if cfg.dtype == "f32" else "mma")


def params(cfg: GemmConfig) -> tuple[Param, ...]:
    """The kernel parameters, in launch order (module docstring)."""
    out = [Param.buffer("x", cfg.dtype)]
    out += [Param.buffer(name, cfg.dtype) for name in cfg.weights]
    if cfg.has_bias:
        out.append(Param.buffer("bias", cfg.dtype))
    out += [Param.buffer("y", cfg.dtype), Param.scalar("M", "i32")]
    return tuple(out)


def _number(value: float) -> str:
    text = f"{value:g}"
    return text.replace(".", "p").replace("-", "m").replace("+", "")


def kernel_name(cfg: GemmConfig) -> str:
    """A name that encodes everything the kernel depends on (so equal configs share one)."""
    family = cfg.family
    parts = [
        f"gemm_{family}",
        cfg.dtype,
        f"n{cfg.N}",
        f"k{cfg.K}",
        "nk" if cfg.transpose_w else "kn",
    ]
    if cfg.gated:
        parts.append(cfg.activation)
    if cfg.has_bias:
        parts.append("bias")
    if cfg.softcap is not None:
        parts.append(f"cap{_number(cfg.softcap)}")
    if family == "gemv":
        g = cfg.gemv
        parts.append(g.label)
        if cfg.weights_before_wait:
            parts.append("early")
    else:
        t = cfg.tile or default_tile(cfg)
        parts.append(
            f"{t.block_m}x{t.block_n}x{t.block_k}w{t.warps_m}x{t.warps_n}s{t.stages}g{t.group_m}"
        )
    return "_".join(parts)


def _recorded_smem(km: KernelModule, name: str) -> int:
    for op in km.body.operations:
        if op.operation.name != "gpu.func":
            continue
        if ir.StringAttr(op.attributes["sym_name"]).value == name:
            return ir.IntegerAttr(op.attributes["tessera.smem_bytes"]).value
    raise LoweringError(f"kernel '{name}' is not in the module")


def build_gemm(km: KernelModule, cfg: GemmConfig) -> KernelInfo:
    """Adds the kernel ``cfg`` describes to ``km`` (once per distinct config) and returns
    how to launch it. Use inside ``with context, ir.Location.unknown():``."""
    family = cfg.family
    if family == "mma" and cfg.dtype == "f32":
        raise LoweringError("the mma gemm takes bf16 or f16; f32 uses the simt kernel")
    if family == "simt" and cfg.dtype != "f32":
        raise LoweringError(f"the simt gemm takes f32; {cfg.dtype} uses the mma kernel")
    # imported here: the family modules import this one for GemmConfig; the device names the
    # module of each family (its own tensor-core kernel, say)
    module = importlib.import_module(km.device.gemm_module(family))
    if cfg.tile is None and family != "gemv":
        # A device whose registers cannot hold the default tile names its own.
        cfg = dataclasses.replace(cfg, tile=km.device.gemm_tile(cfg))
    name = kernel_name(cfg)
    if km.has_kernel(name):
        smem = _recorded_smem(km, name)
    else:
        smem = module.emit(km, cfg, name)
    return module.launch(cfg, name, smem)
