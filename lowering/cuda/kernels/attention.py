"""``tessera.attention.flash`` on CUDA: the kernel's configuration, parameters and launch shape.

o[b, h, s, :] = softmax_t(score[s, t]) · v[b, h // (Hq/Hkv), t, :] with
score = q·kᵀ·scale, then the optional softcap c·tanh(score/c), then the mask: causal aligned to
the end of the keys (query s sees key t iff t <= s + T - S), the optional window w (also
t > s + T - S - w); masked scores are -inf and a query that sees no key gets zeros. This is
the CPU lowering's definition (``lowering/cpu/attention_flash.py``).

bf16 and f16 run on the tensor cores: on sm_90a, head dims that are multiples of 64 up to 256
take the warpgroup-MMA kernel (``attention_wgmma.py``: wgmma on swizzled shared tiles, P·V
from registers); elsewhere ``attention_mma.py`` (mma.sync, ldmatrix, cp.async, an online
softmax in registers). f32 runs a plain SIMT kernel (``attention_simt.py``).

Kernel parameters, in order: the buffers ``q``, ``k``, ``v``, ``o``; the i64 element strides
``q_sb, q_sh, q_ss, k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, o_sb, o_sh, o_ss`` (batch, head,
sequence; the head dimension is contiguous); the i32 sizes ``B``, ``S`` (queries) and ``T``
(keys). Element (b, h, s, d) of q is ``q[b·q_sb + h·q_sh + s·q_ss + d]``, so the same kernel
reads [B, H, S, D] tensors, [B, S, H, D] projection outputs or a fused QKV buffer.

Alignment contract of the tensor-core kernel: every stride and the buffers' addresses are
multiples of ``copy_elements(D)`` (resp. Dv) elements, as cp.async copies that many elements
at once (16 bytes for D a multiple of 8).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

from ..kernel import Param

DTYPES = ("bf16", "f16", "f32")
STRIDE_NAMES = tuple(f"{t}_{s}" for t in "qkvo" for s in ("sb", "sh", "ss"))

# Dynamic shared memory one block may use (the opt-in limit), by architecture; less a little
# for the bytes the NVPTX backend gives the dynamic-memory symbol itself.
_SMEM_LIMIT = {"sm_80": 166912, "sm_86": 101376, "sm_89": 101376, "sm_90": 232448}
_SMEM_SLACK = 128


@dataclass(frozen=True)
class AttentionConfig:
    """The static facts of one attention kernel.

    ``head_dim`` is D (of q and k), ``value_dim`` Dv (None: D). ``heads_q`` must be a multiple
    of ``heads_kv``. The tile fields default (0 / None) to choices made per D and arch by
    ``resolve``: ``block_m`` queries per block (16 per warp), ``block_n`` keys per step,
    ``stages`` the depth of the K/V copy pipeline, ``q_in_registers`` whether each warp keeps
    its query fragments in registers (small D) or reloads them from shared memory (D=256),
    ``warps`` (16·m rows each), ``blocks_per_sm`` an occupancy floor handed to ptxas
    (``.minnctapersm``, which caps registers per thread accordingly; 0 = none). ``wgmma``
    False keeps the mma.sync kernel where the wgmma one would apply; the wgmma kernel has a
    producer warpgroup that copies K/V (``attention_wgmma_ws.py``) unless
    ``warp_specialized`` is False.
    """

    dtype: str
    head_dim: int
    heads_q: int
    heads_kv: int
    scale: float
    value_dim: int | None = None
    causal: bool = False
    window: int | None = None
    softcap: float | None = None
    block_m: int = 0
    block_n: int = 0
    warps: int = 0
    stages: int = 0
    q_in_registers: bool | None = None
    blocks_per_sm: int = 0
    wgmma: bool = True
    warp_specialized: bool = True

    @property
    def dv(self) -> int:
        return self.head_dim if self.value_dim is None else self.value_dim

    @property
    def group(self) -> int:
        """Query heads per kv head."""
        return self.heads_q // self.heads_kv

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"attention dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.head_dim <= 0 or self.dv <= 0:
            raise ValueError(f"head dims must be positive, got D={self.head_dim} Dv={self.dv}")
        if self.heads_kv <= 0 or self.heads_q % self.heads_kv:
            raise ValueError(
                f"query heads ({self.heads_q}) must be a multiple of kv heads ({self.heads_kv})"
            )
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite positive number, got {self.scale}")
        if self.softcap is not None and not (math.isfinite(self.softcap) and self.softcap > 0):
            raise ValueError(f"softcap must be a finite positive number, got {self.softcap}")
        if self.window is not None and (self.window <= 0 or not self.causal):
            raise ValueError(f"window must be positive and needs causal=True, got {self.window}")
        if self.block_m % 16 or self.block_n % 16:
            raise ValueError(
                f"block_m and block_n must be multiples of 16, got {self.block_m}, {self.block_n}"
            )
        if self.warps and self.block_m % (16 * self.warps):
            raise ValueError(
                f"block_m ({self.block_m}) must be a multiple of 16 rows per warp x {self.warps}"
            )


def typed_params(dtype: str) -> tuple[Param, ...]:
    """The kernel's parameters for ``dtype`` buffers (the same list for every configuration)."""
    return (
        *(Param.buffer(n, dtype) for n in "qkvo"),
        *(Param.scalar(n, "i64") for n in STRIDE_NAMES),
        *(Param.scalar(n, "i32") for n in ("B", "S", "T")),
    )


def padded(n: int, multiple: int = 16) -> int:
    return -(-n // multiple) * multiple


def copy_elements(dim: int, dtype: str) -> int:
    """Elements one cp.async moves for rows of ``dim`` elements: the most (16 bytes at most,
    4 at least) that divide the row, so that no copy straddles the row's end."""
    size = 4 if dtype == "f32" else 2
    for count in (16 // size, 8 // size, 4 // size):
        if dim % count == 0:
            return count
    raise ValueError(f"rows of {dim} {dtype} elements cannot be copied in 4-byte pieces")


def smem_limit(arch: str) -> int:
    base = arch.removesuffix("a")
    return _SMEM_LIMIT.get(base, 101376 if base >= "sm_80" else 49152) - _SMEM_SLACK


def tile_bytes(rows: int, dim: int) -> int:
    """One shared tile of ``rows`` rows of ``dim`` 16-bit elements, each row padded by 16
    bytes so that the 8 rows an ldmatrix reads fall in distinct banks."""
    return rows * (padded(dim) + 8) * 2


def stage_bytes(cfg: AttentionConfig, block_n: int | None = None) -> int:
    """One K tile and one V tile of ``block_n`` keys (the config's by default)."""
    keys = cfg.block_n if block_n is None else block_n
    return tile_bytes(keys, cfg.head_dim) + tile_bytes(keys, cfg.dv)


def resolve(cfg: AttentionConfig, arch: str, simt: bool = False) -> AttentionConfig:
    """``cfg`` with every tile field chosen for ``arch`` (for the SIMT kernel when ``simt``,
    as f32 always is).

    Tensor cores: 8 warps of 16 queries (128 per block) and 64 keys per step for D >= 64 (a
    D=256 accumulator leaves registers for one 16-row tile per warp), 4 warps for small D;
    default tiles shrink (keys first, down to 16, then queries) until the Q tile and one K/V
    stage fit the arch's shared memory. Q stays in registers while a warp's fragments take
    at most 32 registers (D <= 128). Stages: as many as fit, at most 2 (one tile computing
    while the next arrives). f32 (SIMT): 4 warps, one query each."""
    cfg.validate()
    if cfg.dtype == "f32" or simt:
        warps = cfg.warps or 4
        return replace(cfg, block_m=warps, block_n=1, warps=warps, stages=1)
    limit = smem_limit(arch)
    dp = padded(max(cfg.head_dim, cfg.dv))
    block_m = cfg.block_m or (128 if dp >= 64 else 64)
    block_n = cfg.block_n or 64
    while tile_bytes(block_m, cfg.head_dim) + stage_bytes(cfg, block_n) > limit:
        if not cfg.block_n and block_n > 16:
            block_n //= 2
        elif not cfg.block_m and block_m > 16:
            block_m //= 2
        else:
            break
    warps = cfg.warps or block_m // 16
    m_tiles = block_m // (16 * warps) if block_m % (16 * warps) == 0 else 1
    q_in_registers = cfg.q_in_registers
    if q_in_registers is None:
        q_in_registers = m_tiles * padded(cfg.head_dim) <= 128
    resolved = replace(
        cfg, block_m=block_m, block_n=block_n, warps=warps, q_in_registers=q_in_registers
    )
    fits = (limit - tile_bytes(block_m, cfg.head_dim)) // stage_bytes(resolved)
    stages = cfg.stages or min(2, fits)
    if stages > fits or fits < 1:
        need = tile_bytes(block_m, cfg.head_dim) + max(stages, 1) * stage_bytes(resolved)
        raise ValueError(
            f"{max(stages, 1)} K/V stage(s) of {block_n} keys next to {block_m} queries at "
            f"D={cfg.head_dim} need {need} bytes of shared memory; {arch} allows {limit}"
        )
    resolved = replace(resolved, stages=stages)
    resolved.validate()
    return resolved


def kernel_name(cfg: AttentionConfig) -> str:
    """A readable, unique name: the main facts spelled out, the rest in a short hash."""
    parts = [f"flash_attention_{cfg.dtype}_d{cfg.head_dim}"]
    if cfg.dv != cfg.head_dim:
        parts.append(f"dv{cfg.dv}")
    parts.append(f"h{cfg.heads_q}kv{cfg.heads_kv}")
    if cfg.causal:
        parts.append("causal")
    if cfg.window is not None:
        parts.append(f"w{cfg.window}")
    if cfg.softcap is not None:
        parts.append("softcap")
    digest = hashlib.sha1(repr(cfg).encode()).hexdigest()[:8]
    parts.append(digest)
    return "_".join(parts)


def grid(cfg: AttentionConfig) -> tuple[str, str, str]:
    """x walks (batch, head) pairs, y the query tiles: blocks are issued x first, so the blocks
    of one query tile for all heads run together (the query heads of one kv head read the same
    K/V tiles while they are in L2), and with a causal mask the tiles with the most keys come
    first (the kernel reverses y), which evens out the last wave."""
    return (f"B*{cfg.heads_q}", f"cdiv(S, {cfg.block_m})", "1")
