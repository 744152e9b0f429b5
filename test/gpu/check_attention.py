"""Checks and times the flash-attention kernels (``tessera.attention.flash`` on CUDA).

    .venv/bin/python test/gpu/check_attention.py --build build/attention   # here: MLIR → cubin
    python3 test/gpu/check_attention.py build/attention                    # on the GPU machine
    python3 test/gpu/check_attention.py build/attention --quick            # small cases (sanitizer)
    .venv/bin/python test/gpu/check_attention.py build/attention --dry-run # the logic, on the CPU

The build step compiles every kernel the cases name into one sm_90a cubin and writes
``kernels.json`` (each kernel's ``KernelInfo`` and configuration). The check step needs no
MLIR: per case it draws fresh seeded inputs in the case's layout ([B, H, S, D], [B, S, H, D]
projection outputs, or one fused QKV buffer), poisons the output with NaN, launches through
``tessera.runtime.cuda_driver``, and compares with float64 torch math on the same rounded
inputs (relative Frobenius error; every element must be written). Timed cases are measured
with CUDA events (median of many launches) next to torch's SDPA with the flash and cuDNN
backends and FlexAttention, in the same process. ``--out`` receives ``attention.json`` (the
benchmark format: device, date, ``--commit``, a row per timed case) and
``attention_cases.json`` (every case's detail). ``--dry-run`` runs the same flow on the CPU
with torch standing in for the kernel (timed cases shrunk to S, T <= 256; SDPA through its math
backend, FlexAttention left out). The shared machinery is in ``check_support.py``.

FLOPs: 2·(D + Dv) per visible (query, key) pair, pairs counted exactly from the mask, per
batch and query head (the usual 4·B·H·S·T·D/2 for causal S = T, plus the diagonal).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import check_support as support
import torch


def _kernel(dtype: str, d: int, hq: int, hk: int, **fields: Any) -> dict[str, Any]:
    """AttentionConfig fields; the scale is Gemma's 1/sqrt(D) unless given."""
    fields.setdefault("scale", d**-0.5)
    return dict(dtype=dtype, head_dim=d, heads_q=hq, heads_kv=hk, **fields)


# Kernels by key. Tile fields left out take the generator's defaults.
TINY = dict(causal=True, window=6, softcap=50.0)
KERNELS: dict[str, dict[str, Any]] = {
    "d256_mqa_causal": _kernel("bf16", 256, 8, 1, causal=True),
    "d256_gqa_causal": _kernel("bf16", 256, 8, 4, causal=True),
    "d128_gqa_causal": _kernel("bf16", 128, 8, 4, causal=True),
    "d256_softcap_w4096": _kernel("bf16", 256, 8, 4, causal=True, window=4096, softcap=50.0),
    "d256_w512": _kernel("bf16", 256, 4, 1, causal=True, window=512),
    "f16_d256_mqa_causal": _kernel("f16", 256, 8, 1, causal=True),
    "d64_full": _kernel("bf16", 64, 4, 2),
    "tiny_bf16": _kernel("bf16", 24, 4, 2, **TINY),
    "tiny_f16": _kernel("f16", 24, 4, 2, **TINY),
    "tiny_f32": _kernel("f32", 24, 4, 2, **TINY),
    "d36_dv48": _kernel("bf16", 36, 4, 1, value_dim=48, scale=0.2, causal=True),
    "f32_d128_causal": _kernel("f32", 128, 4, 2, causal=True),
    "f32_d256_full": _kernel("f32", 256, 2, 1),
    # The mma.sync kernel at the default kernels' shapes (sm_90a takes the wgmma one).
    "mma_d256_mqa_causal": _kernel("bf16", 256, 8, 1, causal=True, wgmma=False),
    "mma_d256_gqa_causal": _kernel("bf16", 256, 8, 4, causal=True, wgmma=False),
    "mma_d128_gqa_causal": _kernel("bf16", 128, 8, 4, causal=True, wgmma=False),
    "mma_d256_softcap_w4096": _kernel(
        "bf16", 256, 8, 4, causal=True, window=4096, softcap=50.0, wgmma=False
    ),
    "mma_d256_w512": _kernel("bf16", 256, 4, 1, causal=True, window=512, wgmma=False),
    # Tile variants of the D=256 and D=128 causal kernels, timed against the default.
    "v_n32": _kernel("bf16", 256, 8, 1, causal=True, block_n=32),
    "v_n64": _kernel("bf16", 256, 8, 1, causal=True, block_n=64),
    "v_m64": _kernel("bf16", 256, 8, 1, causal=True, block_m=64),
    "v128_n64": _kernel("bf16", 128, 8, 4, causal=True, block_n=64),
    # Without softcap and window, at the shapes of the Gemma-2 and Gemma-3 cases: what those
    # cost is measured against these.
    "d256_h4_causal": _kernel("bf16", 256, 4, 1, causal=True),
}
# The plain form (no producer warpgroup: the compute warpgroups copy K/V themselves) of the
# default kernels, timed against them.
KERNELS.update(
    {
        "plain_" + key: {**KERNELS[key], "warp_specialized": False}
        for key in (
            "d256_mqa_causal",
            "d256_gqa_causal",
            "d128_gqa_causal",
            "f16_d256_mqa_causal",
            "d256_softcap_w4096",
            "d256_w512",
        )
    }
)


def _case(kernel: str, B: int, S: int, T: int, layout: str, **fields: Any) -> dict[str, Any]:
    """A case: kernel key, sizes, layout ("bhsd", "bshd" or "fused" QKV), and optionally
    ``amp`` (q's scale: larger scores reach the softcap), ``quick`` (small enough for the
    sanitizer), ``time``, the torch ``peers`` to time against, ``against``: another
    kernel's case (or a list of them) of the same shape (the default, the mma.sync kernel, the
    kernel without softcap and window), whose time in this run joins the peers (with its own
    TF/s where it computes other pairs), and ``peer_only``: timed only to be such a peer (no
    row)."""
    return dict(kernel=kernel, B=B, S=S, T=T, layout=layout, **fields)


PEERS = ["flash", "cudnn"]
# The default kernels' timed cases (kernel, B, layout; each is timed at one length): a
# variant or another layout of the same shape is timed against the one measured earlier in
# the same run.
DEFAULT_1 = ("d256_mqa_causal", 1, "bhsd")
DEFAULT_4 = ("d256_gqa_causal", 4, "bhsd")
DEFAULT_128 = ("d128_gqa_causal", 4, "bhsd")


def _against_mma(
    kernel: str, B: int, S: int, peers: list[str], *also: tuple[str, int, str]
) -> list[dict[str, Any]]:
    """Two timed [B, H, S, D] cases of length S: the mma.sync kernel's (``peer_only``: timed
    as a peer, no row of its own), then ``kernel``'s, which lists it among its peers (and the
    cases ``also`` names, timed earlier)."""
    mma = "mma_" + kernel
    return [
        _case(mma, B, S, S, "bhsd", time=True, peer_only=True),
        _case(kernel, B, S, S, "bhsd", time=True, peers=peers, against=[(mma, B, "bhsd"), *also]),
    ]


CASES: list[dict[str, Any]] = [
    _case("tiny_bf16", 1, 37, 37, "bhsd", amp=8.0, quick=True),
    _case("tiny_bf16", 2, 37, 37, "bshd", amp=8.0, quick=True),
    _case("tiny_f16", 1, 37, 37, "bshd", amp=8.0, quick=True),
    _case("tiny_f32", 1, 37, 37, "bshd", amp=8.0, quick=True),
    _case("tiny_f32", 2, 37, 37, "bhsd", quick=True),
    _case("d36_dv48", 2, 150, 70, "bshd", quick=True),
    _case("d36_dv48", 1, 70, 150, "bhsd"),
    _case("d64_full", 2, 1000, 1500, "bhsd", quick=True),
    _case("d64_full", 1, 1, 4097, "bshd"),
    _case("d256_mqa_causal", 1, 300, 200, "bhsd", quick=True),
    _case("d256_mqa_causal", 1, 1, 4096, "bshd"),
    _case("d256_gqa_causal", 2, 333, 333, "fused", quick=True),
    _case("d256_gqa_causal", 2, 333, 1000, "bshd", quick=True),
    _case("d128_gqa_causal", 2, 333, 333, "bshd", quick=True),
    _case("f16_d256_mqa_causal", 1, 200, 260, "bhsd", quick=True),
    _case("d256_softcap_w4096", 1, 300, 5000, "bhsd", amp=8.0, quick=True),
    _case("d256_w512", 1, 700, 1300, "bshd", quick=True),
    _case("d256_w512", 2, 700, 700, "fused"),
    _case("v_n64", 1, 300, 200, "bshd", quick=True),
    _case("v_m64", 1, 300, 200, "bshd", quick=True),
    _case("v_n32", 1, 300, 200, "bshd", quick=True),
    _case("v128_n64", 1, 300, 200, "bshd", quick=True),
    _case("mma_d256_mqa_causal", 1, 300, 200, "bhsd", quick=True),
    _case("f32_d128_causal", 1, 512, 512, "bshd"),
    _case("f32_d256_full", 1, 130, 300, "bhsd", quick=True),
    # The mma.sync kernel first (a peer only): each default kernel's row lists it.
    *_against_mma("d256_mqa_causal", 1, 4096, PEERS),
    _case("d256_mqa_causal", 1, 4096, 4096, "bshd", time=True, peers=PEERS, against=DEFAULT_1),
    *_against_mma("d256_gqa_causal", 4, 4096, PEERS),
    _case("d256_gqa_causal", 4, 4096, 4096, "fused", time=True, peers=PEERS, against=DEFAULT_4),
    *_against_mma("d128_gqa_causal", 4, 4096, PEERS),
    _case("f16_d256_mqa_causal", 1, 4096, 4096, "bhsd", time=True, peers=["flash"]),
    # Softcap and window cost against the kernel without them at the same shape (S8192).
    _case("d256_gqa_causal", 1, 8192, 8192, "bhsd", time=True, peers=PEERS),
    _case("d256_h4_causal", 1, 8192, 8192, "bhsd", time=True, peers=PEERS),
    *_against_mma(
        "d256_softcap_w4096", 1, 8192, ["flex", "flash_causal"], ("d256_gqa_causal", 1, "bhsd")
    ),
    *_against_mma("d256_w512", 1, 8192, ["flex", "flash_causal"], ("d256_h4_causal", 1, "bhsd")),
    *[
        _case(v, 1, 4096, 4096, "bhsd", time=True, peers=PEERS, against=DEFAULT_1)
        for v in ("v_n32", "v_n64", "v_m64")
    ],
    _case("v128_n64", 4, 4096, 4096, "bhsd", time=True, peers=PEERS, against=DEFAULT_128),
    # The plain form: correctness at the shapes above, then timed against the default.
    _case("plain_d256_mqa_causal", 1, 300, 200, "bhsd", quick=True),
    _case("plain_d256_mqa_causal", 1, 1, 4096, "bshd"),
    _case("plain_d256_gqa_causal", 2, 333, 1000, "bshd", quick=True),
    _case("plain_d256_gqa_causal", 2, 333, 333, "fused", quick=True),
    _case("plain_d128_gqa_causal", 2, 333, 333, "bshd", quick=True),
    _case("plain_f16_d256_mqa_causal", 1, 200, 260, "bhsd", quick=True),
    _case("plain_d256_softcap_w4096", 1, 300, 5000, "bhsd", amp=8.0, quick=True),
    _case("plain_d256_w512", 1, 700, 1300, "bshd", quick=True),
    *[
        _case("plain_" + key, B, 4096, 4096, "bhsd", time=True, peers=PEERS, against=against)
        for key, B, against in (
            ("d256_mqa_causal", 1, DEFAULT_1),
            ("d256_gqa_causal", 4, DEFAULT_4),
            ("d128_gqa_causal", 4, DEFAULT_128),
        )
    ],
    *[
        _case("plain_" + key, 1, 8192, 8192, "bhsd", time=True, peers=["flex"], against=against)
        for key, against in (
            ("d256_softcap_w4096", ("d256_softcap_w4096", 1, "bhsd")),
            ("d256_w512", ("d256_w512", 1, "bhsd")),
        )
    ],
]

# Relative-error bounds: the output is rounded once to the dtype (unit roundoff u: 2^-8 bf16,
# 2^-11 f16), and so is P before the P·V product; the normalised sum does not grow with T,
# so a small multiple of u bounds the relative error. f32 runs exact-rounding math.
TOLERANCE = {"bf16": 2.5 * 2**-8, "f16": 2.5 * 2**-11, "f32": 1e-5}


# ---------------------------------------------------------------------------------------------
# Build (here: needs MLIR)


def build(folder: Path) -> None:
    from mlir import ir

    from tessera.context import make_context
    from tessera.lowering.cuda.kernel import KernelModule
    from tessera.lowering.cuda.kernels.attention import AttentionConfig
    from tessera.lowering.cuda.kernels.flash_attention import build_flash_attention

    folder.mkdir(parents=True, exist_ok=True)
    table: dict[str, Any] = {}
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a", name="attention")
        for key, fields in KERNELS.items():
            info = build_flash_attention(km, AttentionConfig(**fields))
            table[key] = {"info": support.info_json(info), "config": fields}
        support.emit_binaries(
            km.module,
            "sm_90a",
            folder / "kernels.ptx",
            folder / "resources.txt",
            cubin_file=folder / "kernels.cubin",
        )
    (folder / "kernels.json").write_text(json.dumps(table, indent=1))
    print(f"{len(table)} kernels → {folder}")


# ---------------------------------------------------------------------------------------------
# Check (on the GPU machine: torch and the runtime only)

# The dry run shrinks cases doing more than this much work (B·Hq·S·T·(D+Dv)) to S, T <= 256.
DRY_RUN_WORK = 4e9
DRY_RUN_LENGTH = 256
# Benchmark names of the torch peers.
PEER_NAMES = {
    "flash": "SDPA flash",
    "cudnn": "SDPA cuDNN",
    "flex": "FlexAttention",
    "flash_causal": "SDPA flash (causal only: no window or softcap)",
}


def visible_pairs(cfg: dict[str, Any], S: int, T: int) -> int:
    total = 0
    for s in range(S):
        last = s + T - S
        end = min(T, last + 1) if cfg.get("causal") else T
        first = max(0, last - cfg["window"] + 1) if cfg.get("window") else 0
        total += max(0, end - max(first, 0))
    return total


def shape_label(case: dict[str, Any], cfg: dict[str, Any]) -> str:
    """The case as the benchmark rows name it, e.g. ``B1 H8 KV1 S4096 D256 causal``: sizes,
    then the mask and softcap, then what differs from the common case (layout other than
    [B, H, S, D], dtype other than bf16, tile fields set by hand, the mma.sync kernel
    where the wgmma one would run, the plain wgmma form where the warp-specialized one would)."""
    d, dv = cfg["head_dim"], cfg.get("value_dim") or cfg["head_dim"]
    label = f"B{case['B']} H{cfg['heads_q']} KV{cfg['heads_kv']} S{case['S']}"
    label += f" T{case['T']}" if case["T"] != case["S"] else ""
    label += f" D{d}" + (f" Dv{dv}" if dv != d else "")
    label += " causal" if cfg.get("causal") else ""
    label += f" window{cfg['window']}" if cfg.get("window") else ""
    label += f" softcap{cfg['softcap']:g}" if cfg.get("softcap") else ""
    label += f" {case['layout']}" if case["layout"] != "bhsd" else ""
    label += f" {cfg['dtype']}" if cfg["dtype"] != "bf16" else ""
    tiles = ("block_m", "block_n", "warps", "stages", "blocks_per_sm", "q_in_registers")
    set_by_hand = [f"{k}={cfg[k]}" for k in tiles if k in cfg]
    set_by_hand += ["mma.sync"] if cfg.get("wgmma") is False else []
    set_by_hand += ["plain"] if cfg.get("warp_specialized") is False else []
    return label + (" " + " ".join(set_by_hand) if set_by_hand else "")


def dry_run_size(case: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """The case at a size the CPU can run (the flow only: the numbers mean nothing there)."""
    dv = cfg.get("value_dim") or cfg["head_dim"]
    work = case["B"] * cfg["heads_q"] * case["S"] * case["T"] * (cfg["head_dim"] + dv)
    if work <= DRY_RUN_WORK:
        return case
    return {**case, "S": min(case["S"], DRY_RUN_LENGTH), "T": min(case["T"], DRY_RUN_LENGTH)}


def make_inputs(case: dict[str, Any], cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """q, k, v, o in the case's layout; the logical [B, H, L, D] views; strides."""
    dtype = cfg["dtype"]
    B, S, T = case["B"], case["S"], case["T"]
    hq, hk, d = cfg["heads_q"], cfg["heads_kv"], cfg["head_dim"]
    dv = cfg.get("value_dim") or d
    gen = support.generator(seed)

    def randn(*shape: int, amp: float = 1.0) -> torch.Tensor:
        return support.randn(gen, shape, dtype, amp)

    layout = case["layout"]
    out: dict[str, Any] = {}
    if layout == "fused":
        assert d == dv
        heads = hq + 2 * hk
        qkv = randn(B, S, heads, d, amp=1.0)
        assert S == T
        qkv[:, :, :hq] *= case.get("amp", 1.0)
        flat = qkv.view(-1)
        strides = (S * heads * d, d, heads * d)
        out["bufs"] = {"q": flat, "k": flat[hq * d :], "v": flat[(hq + hk) * d :]}
        out["strides"] = {t: strides for t in "qkv"}
        out["logical"] = {
            "q": qkv[:, :, :hq].permute(0, 2, 1, 3),
            "k": qkv[:, :, hq : hq + hk].permute(0, 2, 1, 3),
            "v": qkv[:, :, hq + hk :].permute(0, 2, 1, 3),
        }
        o = torch.empty(B, S, hq, dv, device=support.device(), dtype=support.DTYPES[dtype])
        out["o"] = o
        out["o_logical"] = o.permute(0, 2, 1, 3)
        out["strides"]["o"] = (S * hq * dv, dv, hq * dv)
        out["bufs"]["o"] = o
        return out
    shapes = {"q": (hq, S, d), "k": (hk, T, d), "v": (hk, T, dv), "o": (hq, S, dv)}
    out["bufs"], out["strides"], out["logical"] = {}, {}, {}
    for name, (h, length, width) in shapes.items():
        amp = case.get("amp", 1.0) if name == "q" else 1.0
        if layout == "bhsd":
            x = randn(B, h, length, width, amp=amp)
            out["strides"][name] = (h * length * width, length * width, width)
            logical = x
        else:
            x = randn(B, length, h, width, amp=amp)
            out["strides"][name] = (length * h * width, width, h * width)
            logical = x.permute(0, 2, 1, 3)
        out["bufs"][name] = x
        if name == "o":
            out["o"], out["o_logical"] = x, logical
        else:
            out["logical"][name] = logical
    return out


def reference(
    cfg: dict[str, Any],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Attention on the logical [B, H, L, D] tensors, one (batch, head) at a time, computed in
    ``dtype``: float64 for the reference, f32 for the dry run's stand-in."""
    B, hq, S, _ = q.shape
    T = k.shape[2]
    group = cfg["heads_q"] // cfg["heads_kv"]
    s_idx = torch.arange(S, device=q.device)[:, None] + (T - S)
    t_idx = torch.arange(T, device=q.device)[None, :]
    visible = torch.ones(S, T, dtype=torch.bool, device=q.device)
    if cfg.get("causal"):
        visible &= t_idx <= s_idx
    if cfg.get("window"):
        visible &= t_idx > s_idx - cfg["window"]
    out = torch.empty(B, hq, S, v.shape[3], dtype=dtype, device=q.device)
    for b in range(B):
        for h in range(hq):
            qq = q[b, h].to(dtype)
            kk = k[b, h // group].to(dtype)
            vv = v[b, h // group].to(dtype)
            s = (qq @ kk.T) * cfg["scale"]
            if cfg.get("softcap"):
                s = cfg["softcap"] * torch.tanh(s / cfg["softcap"])
            s = s.masked_fill(~visible, -math.inf)
            m = s.amax(dim=1, keepdim=True)
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            p = torch.exp(s - m)
            total = p.sum(dim=1, keepdim=True)
            out[b, h] = (p @ vv) / torch.where(total > 0, total, torch.ones_like(total))
    return out


def peer_fn(peer: str, cfg: dict[str, Any], x: dict[str, Any]) -> Any:
    """A torch callable computing the same attention (or, for ``flash_causal``, plain causal
    attention: SDPA has no window or softcap), on [B, H, L, D] views. The dry run takes SDPA's
    math backend (the CPU has neither flash nor cuDNN)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (x["logical"][t].contiguous() for t in "qkv")
    group = cfg["heads_q"] // cfg["heads_kv"]
    scale = cfg["scale"]
    if peer in ("flash", "cudnn", "flash_causal"):
        backend = SDPBackend.CUDNN_ATTENTION if peer == "cudnn" else SDPBackend.FLASH_ATTENTION
        backend = backend if support.on_gpu() else SDPBackend.MATH
        # Expanded K/V (outside the timed call): not every backend takes GQA directly.
        ke, ve = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)

        def run() -> Any:
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, ke, ve, is_causal=True, scale=scale)

        run()
        return run
    if peer == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        window, cap = cfg.get("window"), cfg.get("softcap")
        S, T = q.shape[2], k.shape[2]

        def mask_mod(b: Any, h: Any, qi: Any, ki: Any) -> Any:
            last = qi + (T - S)
            seen = ki <= last
            if window:
                seen = seen & (ki > last - window)
            return seen

        def score_mod(score: Any, b: Any, h: Any, qi: Any, ki: Any) -> Any:
            return cap * torch.tanh(score / cap)

        block_mask = create_block_mask(mask_mod, None, None, S, T, device=support.device())
        compiled = torch.compile(flex_attention)

        def run_flex() -> Any:
            return compiled(
                q,
                k,
                v,
                score_mod=score_mod if cap else None,
                block_mask=block_mask,
                scale=scale,
                enable_gqa=True,
            )

        run_flex()
        return run_flex
    raise ValueError(peer)


def timed(fn: Any) -> float:
    """Milliseconds per call, call by call (no CUDA graph) for ours and every peer alike:
    FlexAttention is a compiled callable and the SDPA peers allocate their outputs per call,
    and one method keeps the comparison fair; at these sizes a launch costs well under 1%."""
    return support.median_ms(fn, replays=100, graph=False)


class Checker:
    def __init__(self, folder: Path, budget_s: float) -> None:
        self.table = json.loads((folder / "kernels.json").read_text())
        self.module = support.load_module(folder / "kernels.cubin", "attention")
        self.budget_s = budget_s
        self.start = time.time()
        self.rows: list[dict[str, Any]] = []  # every case's detail
        self.bench: list[dict[str, Any]] = []  # the timed cases, in the benchmark format
        # case key: (label, ms, flops)
        self.timed: dict[tuple[Any, ...], tuple[str, float, float]] = {}

    def run(self, index: int, case: dict[str, Any]) -> None:
        entry = self.table[case["kernel"]]
        info, cfg = entry["info"], entry["config"]
        x = make_inputs(case, cfg, seed=1000 + index)
        bindings: dict[str, Any] = {"B": case["B"], "S": case["S"], "T": case["T"]}
        for t in "qkvo":
            for name, value in zip(("sb", "sh", "ss"), x["strides"][t], strict=True):
                bindings[f"{t}_{name}"] = value
            bindings[t] = x["bufs"][t]

        def stand_in() -> None:  # dry run: f32 torch math writes the output
            logical = (x["logical"][t] for t in "qkv")
            x["o_logical"].copy_(reference(cfg, *logical, dtype=torch.float32))

        launch = support.KernelLaunch(self.module, info, bindings, stand_in)
        support.poison(x["o"])
        launch()
        support.synchronize()
        ref = reference(cfg, *(x["logical"][t] for t in "qkv"))
        row: dict[str, Any] = {
            "case": f"{case['kernel']} B{case['B']} S{case['S']} T{case['T']} {case['layout']}",
            **support.compare(x["o_logical"], ref, TOLERANCE[cfg["dtype"]]),
            "card": support.card(),
        }
        if case.get("time") and time.time() - self.start < self.budget_s:
            self.time(case, cfg, x, launch, ref, row)
        self.rows.append(row)
        print(json.dumps(row), flush=True)

    def time(
        self,
        case: dict[str, Any],
        cfg: dict[str, Any],
        x: dict[str, Any],
        launch: support.KernelLaunch,
        ref: torch.Tensor,
        row: dict[str, Any],
    ) -> None:
        """Times the kernel and each of the case's peers (a peer that cannot run is reported,
        not fatal); adds the figures to ``row`` and a benchmark row to ``self.bench``."""
        flops = 2 * (cfg["head_dim"] + (cfg.get("value_dim") or cfg["head_dim"]))
        flops *= case["B"] * cfg["heads_q"] * visible_pairs(cfg, case["S"], case["T"])
        ms = timed(launch)
        row["ms"] = ms
        row["tflops"] = flops / ms / 1e9
        peers = []
        for peer in case.get("peers", []):
            if peer == "flex" and not support.on_gpu():
                row[peer] = "skipped (dry run)"
                continue
            if peer == "flex" and time.time() - self.start > self.budget_s * 0.6:
                row[peer] = "skipped (time)"
                continue
            try:
                fn = peer_fn(peer, cfg, x)
                peer_ms = timed(fn)
                row[peer] = {"ms": peer_ms, "tflops": flops / peer_ms / 1e9}
                entry: dict[str, Any] = {"name": PEER_NAMES[peer], "ms": peer_ms}
                if peer in ("flash", "cudnn"):
                    row[peer]["rel_error"] = entry["rel_error"] = support.relative_error(fn(), ref)
                peers.append(entry)
            except Exception as error:  # a peer that cannot run is reported, not fatal
                row[peer] = f"failed: {type(error).__name__}: {str(error)[:120]}"
        label = shape_label(case, cfg)
        key = (case["kernel"], case["B"], case["layout"])
        self.timed[key] = (label, ms, flops)
        against = case.get("against") or []
        for other in [against] if isinstance(against, tuple) else against:
            if other not in self.timed:
                continue
            other_label, other_ms, other_flops = self.timed[other]
            entry = {"name": f"Tessera {other[0]}: {other_label}", "ms": other_ms}
            if other_flops != flops:
                entry["tflops"] = other_flops / other_ms / 1e9
            peers.append(entry)
        if case.get("peer_only"):
            return
        bench = support.bench_row("attention", label, ms, row["rel_error"], peers, flops=flops)
        self.bench.append(bench)


def check(args: argparse.Namespace) -> int:
    """Checks (and times) every case the options select; returns the exit status."""
    folder, quick, budget_s = args.folder, args.quick, args.budget
    checker = Checker(folder, budget_s)
    for index, case in enumerate(CASES):
        if quick and not case.get("quick"):
            continue
        if not support.on_gpu():
            case = dry_run_size(case, checker.table[case["kernel"]]["config"])
        label = f"{case['kernel']} B{case['B']} S{case['S']} T{case['T']} {case['layout']}"
        support.guarded(checker.rows, label, lambda i=index, c=case: checker.run(i, c))
        if support.on_gpu():
            torch.cuda.empty_cache()
    support.write_results(args.out, "attention", checker.bench, checker.rows, args.commit)
    status = support.summarize(checker.rows, checker.bench)
    print(f"{time.time() - checker.start:.0f}s")
    return status


def main() -> int:
    budget = {"type": float, "default": 240.0, "help": "seconds for timed cases"}
    return support.main(__doc__, build, check, {"--budget": budget})


if __name__ == "__main__":
    sys.exit(main())
