"""Checks and times the CUDA GEMM kernels (tensor-core mma, f32 simt, gemv, Hopper wgmma).

    python test/gpu/check_gemm.py --build build/gemm     # here: MLIR → cubin + cases.json
    python3 test/gpu/check_gemm.py build/gemm --out $OUT # on the GPU machine
    python3 test/gpu/check_gemm.py build/gemm --quick    # small cases only (for the sanitizer)
    python test/gpu/check_gemm.py build/gemm --dry-run   # this script's logic, on the CPU

The build step compiles every case's kernel into one sm_90a cubin and writes ``cases.json``
(per case its ``KernelInfo`` and sizes). The check step needs no MLIR: it draws fresh seeded
inputs, poisons the output with NaN, launches through ``tessera.runtime.cuda_driver`` and
compares with a float64 reference computed from the same rounded inputs (‖out−ref‖/‖ref‖,
on a subset of rows for the largest shapes, while every element is checked for NaN). Timed
cases run as CUDA graphs over rotating input sets and are compared with torch (cuBLAS)
measured in the same run. ``--out`` receives ``gemm.json`` (the benchmark format: device, date,
``--commit``, a row per timed case) and ``gemm_cases.json`` (every case's detail); the shared
machinery is in ``check_support.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import check_support as support
import torch
from check_support import DTYPES

# ---------------------------------------------------------------------------------------------
# Cases. tile = (block_m, block_n, block_k, warps_m, warps_n, stages, group_m); gemv = (rows,
# cols, warps, unroll); None = the generator's default.

PREFILL = {"N": 16384, "K": 2048, "M": 2048}


def case_list() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []

    def add(case_id: str, **fields: Any) -> None:
        case = {"id": case_id, "dtype": "bf16", "transpose_w": True, "softcap": None}
        case.update(has_bias=False, gated=False, activation="gelu_tanh", kernel="auto")
        case.update(tile=None, gemv=None, wgmma=None, time=False, w_scale=1.0, early=False)
        case.update(fields)
        cases.append(case)

    # correctness: odd sizes, every option, every family
    for dt in ("bf16", "f16"):
        add(f"{dt}_odd", dtype=dt, M=37, N=200, K=72)
        add(f"{dt}_odd_kn", dtype=dt, M=37, N=202, K=74, transpose_w=False)
    add("bf16_odd_bias_cap", M=37, N=200, K=72, has_bias=True, softcap=30.0, w_scale=8.0)
    add("bf16_m1", M=1, N=200, K=72)
    add("bf16_m129_k40", M=129, N=136, K=40)
    for act in ("gelu_tanh", "gelu", "silu"):
        add(f"bf16_gated_{act}_odd", M=37, N=200, K=72, gated=True, activation=act, w_scale=2.0)
    add(
        "f16_gated_silu_kn",
        dtype="f16",
        M=37,
        N=200,
        K=72,
        gated=True,
        activation="silu",
        transpose_w=False,
        w_scale=2.0,
    )
    # the pipelining depth must not change the result (stages=1 is the unpipelined loop)
    for stages in (1, 2, 3, 5):
        add(f"bf16_odd_stages{stages}", M=37, N=200, K=136, tile=(128, 128, 32, 2, 2, stages, 8))
    add("bf16_small_tile", M=37, N=200, K=72, tile=(64, 64, 32, 2, 2, 3, 4))
    add("bf16_bk64", M=130, N=200, K=200, tile=(128, 128, 64, 2, 2, 3, 8))
    # f32 simt
    add("f32_odd", dtype="f32", M=37, N=200, K=72)
    add(
        "f32_odd_kn_bias_cap",
        dtype="f32",
        M=37,
        N=200,
        K=74,
        transpose_w=False,
        has_bias=True,
        softcap=30.0,
        w_scale=8.0,
    )
    add(
        "f32_gated_gelu",
        dtype="f32",
        M=37,
        N=200,
        K=72,
        gated=True,
        activation="gelu",
        tile=(64, 128, 16, 4, 2, 3, 8),
        w_scale=2.0,
    )
    add("f32_1024", dtype="f32", M=1024, N=2048, K=2048, time=True)
    # gemv
    add("gemv_bf16_odd", M=3, N=201, K=73, kernel="gemv")
    add("gemv_bf16_odd_kn", M=5, N=201, K=73, kernel="gemv", transpose_w=False)
    add("gemv_bf16_kn_bias", M=4, N=200, K=72, kernel="gemv", transpose_w=False, has_bias=True)
    add("gemv_f32_cap", dtype="f32", M=2, N=200, K=74, kernel="gemv", softcap=30.0, w_scale=8.0)
    add("gemv_gated_m1", M=1, N=200, K=72, kernel="gemv", gated=True, gemv=(1, 2, 4, 4))
    add("gemv_m9_rows4", M=9, N=200, K=72, kernel="gemv")
    # Gemma-2B-like shapes, timed against cuBLAS
    for dt in ("bf16", "f16"):
        for n in (2048, 16384):
            for m in (2048, 37):
                add(f"{dt}_m{m}_n{n}", dtype=dt, M=m, N=n, K=2048, time=True)
    add("bf16_prefill_kn", M=2048, N=16384, K=2048, transpose_w=False, time=True)
    add("bf16_prefill_gated", M=2048, N=16384, K=2048, gated=True, time=True)
    add("bf16_prefill_cap", M=2048, N=16384, K=2048, softcap=30.0, w_scale=8.0, time=True)
    add("gemv_m1", M=1, N=16384, K=2048, kernel="gemv", gemv=(1, 2, 4, 4), time=True)
    add("gemv_m1_c4", M=1, N=16384, K=2048, kernel="gemv", gemv=(1, 4, 4, 4), time=True)
    add("gemv_m1_w8u8", M=1, N=16384, K=2048, kernel="gemv", gemv=(1, 2, 8, 8), time=True)
    add("gemv_m4", M=4, N=16384, K=2048, kernel="gemv", gemv=(4, 2, 4, 4), time=True)
    add("gemv_m8", M=8, N=16384, K=2048, kernel="gemv", gemv=(8, 2, 4, 2), time=True)
    add("gemv_m1_kn", M=1, N=16384, K=2048, kernel="gemv", transpose_w=False, time=True)
    # the decode step's other GEMV shapes (Gemma-2B: down, q/o, MQA k/v; the gated gate/up)
    # at tiles that put more warps on a narrow N or a long K
    for n, k, name in ((2048, 16384, "down"), (2048, 2048, "q"), (256, 2048, "kv")):
        for tile in ((1, 2, 4, 4), (1, 1, 4, 4), (1, 1, 8, 8), (1, 1, 2, 8)):
            label = "c{1}w{2}u{3}".format(*tile)
            add(f"gemv_{name}_{label}", M=1, N=n, K=k, kernel="gemv", gemv=tile, time=True)
    # Gemma-7B's decode GEMVs at the tiles a compile picks (one column a warp: two-warp
    # blocks unrolled 8 deep, four-warp blocks for the gated pair)
    add("gemv_7b_down", M=1, N=3072, K=24576, kernel="gemv", gemv=(1, 1, 2, 8), time=True)
    add("gemv_7b_qkv", M=1, N=4096, K=3072, kernel="gemv", gemv=(1, 1, 2, 8), time=True)
    add(
        "gemv_7b_gated",
        M=1,
        N=24576,
        K=3072,
        kernel="gemv",
        gated=True,
        gemv=(1, 1, 4, 4),
        w_scale=2.0,
        time=True,
    )
    for tile in ((1, 2, 4, 4), (1, 1, 4, 4), (1, 1, 8, 4)):
        label = "c{1}w{2}u{3}".format(*tile)
        add(
            f"gemv_gated_{label}",
            M=1,
            N=16384,
            K=2048,
            kernel="gemv",
            gated=True,
            gemv=tile,
            w_scale=2.0,
            time=True,
        )
    # K split across 2-8 warps a column (gemv tile's fifth field): the long-K, narrow-N
    # GEMVs of the decode step (Gemma-2B's down and q/o, Gemma-7B's down), the gated pair
    for tile in ((1, 1, 4, 8, 2), (1, 1, 8, 8, 4), (1, 1, 8, 4, 4), (1, 1, 8, 8, 8)):
        label = "c{1}w{2}u{3}k{4}".format(*tile)
        add(f"gemv_down_{label}", M=1, N=2048, K=16384, kernel="gemv", gemv=tile, time=True)
    for tile in ((1, 1, 4, 4, 2), (1, 1, 8, 2, 4)):
        label = "c{1}w{2}u{3}k{4}".format(*tile)
        add(f"gemv_q_{label}", M=1, N=2048, K=2048, kernel="gemv", gemv=tile, time=True)
    add("gemv_7b_down_k4", M=1, N=3072, K=24576, kernel="gemv", gemv=(1, 1, 8, 8, 4), time=True)
    gated_split = {"gated": True, "w_scale": 2.0, "kernel": "gemv", "time": True}
    add("gemv_gated_k2", M=1, N=16384, K=2048, gemv=(1, 1, 4, 4, 2), **gated_split)
    add("gemv_split_odd", M=3, N=201, K=1000, kernel="gemv", gemv=(4, 2, 4, 2, 2), early=True)
    # the decode GEMVs as a compile builds them on sm_90: the first weight loads before the
    # grid wait (a no-op launched plainly, as here), the rest of the K loop after it
    early = {"kernel": "gemv", "early": True}
    add("gemv_early_odd", M=3, N=201, K=73, gemv=(4, 2, 4, 4), **early)
    add("gemv_early_q", M=1, N=2048, K=2048, gemv=(1, 1, 2, 8), time=True, **early)
    add("gemv_early_down", M=1, N=2048, K=16384, gemv=(1, 1, 2, 8), time=True, **early)
    add(
        "gemv_early_gated",
        M=1,
        N=16384,
        K=2048,
        gated=True,
        gemv=(1, 1, 4, 4),
        w_scale=2.0,
        time=True,
        **early,
    )
    # the Hopper kernel (wgmma from shared memory, TMA loads; x and w [N, K] only):
    # ragged M, N and K tiles (zero-filled by the tensor maps), then the prefill shapes
    for dt in ("bf16", "f16"):
        add(f"wgmma_{dt}_odd", dtype=dt, M=37, N=200, K=72, kernel="wgmma", wgmma=(128, 128, 4))
    add("wgmma_bf16_m129", M=129, N=136, K=200, kernel="wgmma", wgmma=(128, 128, 3))
    gated = {"gated": True, "w_scale": 2.0, "kernel": "wgmma", "wgmma": (128, 64, 3)}
    add("wgmma_gated_gelu_tanh_odd", M=37, N=200, K=72, **gated)
    add("wgmma_f16_gated_silu_odd", dtype="f16", M=37, N=200, K=72, activation="silu", **gated)
    add(
        "wgmma_cap_odd",
        M=37,
        N=200,
        K=72,
        softcap=30.0,
        w_scale=8.0,
        kernel="wgmma",
        wgmma=(128, 128, 3),
    )
    for stages in (3, 4):
        add(
            f"wgmma_prefill_gated_s{stages}",
            **PREFILL,
            **{**gated, "wgmma": (128, 64, stages)},
            time=True,
        )
    head = {"M": 2048, "N": 256000, "K": 2048, "time": True}
    add("wgmma_head", **head, kernel="wgmma", wgmma=(128, 128, 3))
    add("mma_head", **head)
    add("wgmma_bf16_m64_n256", M=130, N=520, K=136, kernel="wgmma", wgmma=(64, 256, 4))
    # warp specialized: a producer warpgroup and two consumers (wgmma's fourth field)
    ws = {"kernel": "wgmma", "wgmma": (128, 256, 4, 2)}
    add("ws_bf16_odd", M=37, N=200, K=72, **ws)
    add("ws_f16_m129", dtype="f16", M=129, N=520, K=200, **ws)
    add("ws_256x128_m300", M=300, N=136, K=520, kernel="wgmma", wgmma=(256, 128, 3, 2))
    ws_gated = {**gated, "wgmma": (128, 128, 4, 2)}
    add("ws_gated_gelu_tanh_odd", M=37, N=200, K=72, **ws_gated)
    add("ws_cap_m129", M=129, N=300, K=136, softcap=30.0, w_scale=8.0, **ws)
    for wg in ((128, 128, 4, 2), (256, 64, 4, 2)):
        tag = "x".join(str(v) for v in wg)
        add(f"ws_prefill_gated_{tag}", **PREFILL, **{**gated, "wgmma": wg}, time=True)
    add("ws_head", **head, kernel="wgmma", wgmma=(128, 256, 4, 2))
    for n, k in ((16384, 2048), (2048, 2048), (2048, 16384)):
        for wg in ((128, 256, 4, 2), (128, 256, 3, 2), (256, 128, 4, 2)):
            tag = "x".join(str(v) for v in wg)
            add(f"ws_n{n}_k{k}_{tag}", M=2048, N=n, K=k, kernel="wgmma", wgmma=wg, time=True)
    for n, k in ((16384, 2048), (2048, 2048), (2048, 16384)):
        for wg in ((128, 128, 4), (128, 128, 3), (128, 128, 2), (64, 256, 3)):
            tag = "x".join(str(v) for v in wg)
            add(f"wgmma_n{n}_k{k}_{tag}", M=2048, N=n, K=k, kernel="wgmma", wgmma=wg, time=True)
    add("bf16_m2048_n2048_k16384", M=2048, N=2048, K=16384, time=True)
    # tile sweep on the prefill shape (the defaults come from here)
    for tile in (
        (128, 128, 32, 2, 2, 3, 8),
        (128, 128, 32, 2, 2, 5, 8),
        (128, 128, 64, 2, 2, 3, 8),
        (128, 256, 32, 2, 4, 3, 8),
        (256, 128, 32, 4, 2, 3, 8),
        (128, 128, 32, 4, 2, 4, 8),
        (128, 256, 64, 2, 4, 3, 8),
        (128, 128, 32, 2, 2, 4, 16),
    ):
        name = "x".join(str(v) for v in tile)
        add(f"sweep_{name}", **PREFILL, tile=tile, time=True)
    for tile in ((128, 128, 32, 2, 4, 3, 8), (128, 64, 64, 2, 2, 3, 8), (64, 128, 32, 2, 2, 4, 8)):
        name = "x".join(str(v) for v in tile)
        add(f"sweep_gated_{name}", **PREFILL, gated=True, tile=tile, time=True)
    return cases


# ---------------------------------------------------------------------------------------------
# Build (here, with MLIR)


def build(folder: Path) -> None:
    from mlir import ir

    from tessera.context import make_context
    from tessera.lowering.cuda.kernel import KernelModule
    from tessera.lowering.cuda.kernels.gemm import GemmConfig, GemmTile, GemvTile, build_gemm
    from tessera.lowering.cuda.kernels.gemm_wgmma import WgmmaConfig, build_wgmma_gemm

    folder.mkdir(parents=True, exist_ok=True)
    cases = case_list()
    arch = "sm_90a"
    with make_context(), ir.Location.unknown():
        km = KernelModule(arch)
        for case in cases:
            if case["kernel"] == "wgmma":
                block_m, block_n, stages, *consumers = case["wgmma"]
                hopper = WgmmaConfig(
                    case["dtype"],
                    case["N"],
                    case["K"],
                    block_m,
                    block_n,
                    stages,
                    consumers=consumers[0] if consumers else 1,
                    gated=case["gated"],
                    activation=case["activation"],
                    softcap=case["softcap"],
                )
                case["info"] = support.info_json(build_wgmma_gemm(km, hopper))
                continue
            cfg = GemmConfig(
                case["dtype"],
                case["N"],
                case["K"],
                transpose_w=case["transpose_w"],
                softcap=case["softcap"],
                has_bias=case["has_bias"],
                gated=case["gated"],
                activation=case["activation"],
                kernel=case["kernel"],
                tile=GemmTile(*case["tile"]) if case["tile"] else None,
                gemv=GemvTile(*case["gemv"]) if case["gemv"] else GemvTile(),
                weights_before_wait=case["early"],
            )
            case["info"] = support.info_json(build_gemm(km, cfg))
        report = support.emit_binaries(
            km.module,
            arch,
            folder / f"gemm_{arch}.ptx",
            folder / f"ptxas_{arch}.txt",
            cubin_file=folder / f"gemm_{arch}.cubin",
        )
    support.write_cases(folder, cases, report)


# ---------------------------------------------------------------------------------------------
# Check (on the GPU machine)

UNIT_ROUNDOFF = {"bf16": 2.0**-8, "f16": 2.0**-11, "f32": 2.0**-24}
REFERENCE_ROWS = 512  # float64 reference on at most this many rows (random, plus first/last)


def bound(dtype: str, K: int) -> float:
    """Allowed ‖out−ref‖/‖ref‖: the output's rounding (at most u per element, so 2u leaves
    room) plus f32 accumulation over K terms (growing like sqrt(K))."""
    return 2 * UNIT_ROUNDOFF[dtype] + 4 * math.sqrt(K) * 2.0**-24


def activation64(kind: str, v: torch.Tensor) -> torch.Tensor:
    if kind == "gelu_tanh":
        return torch.nn.functional.gelu(v, approximate="tanh")
    if kind == "gelu":
        return torch.nn.functional.gelu(v)
    return torch.nn.functional.silu(v)


def epilogue(
    case: dict[str, Any], acc: torch.Tensor, up: torch.Tensor | None, bias: torch.Tensor | None
) -> torch.Tensor:
    value = acc
    if case["gated"]:
        assert up is not None
        value = activation64(case["activation"], acc) * up
    elif bias is not None:
        value = value + bias
    if case["softcap"] is not None:
        value = case["softcap"] * torch.tanh(value / case["softcap"])
    return value


def weight_matrix(case: dict[str, Any], w: torch.Tensor) -> torch.Tensor:
    """w as [N, K], whatever its stored layout."""
    return w if case["transpose_w"] else w.t()


def shape_label(case: dict[str, Any]) -> str:
    """The case as the benchmark rows name it: sizes, dtype and every option that is set."""
    label = f"M{case['M']} N{case['N']} K{case['K']} {case['dtype']}"
    if not case["transpose_w"]:
        label += " w[K,N]"
    if case["gated"]:
        label += f" gated {case['activation']}"
    if case["has_bias"]:
        label += " bias"
    if case["softcap"] is not None:
        label += f" softcap{case['softcap']:g}"
    if case["kernel"] == "gemv":
        tile = case["gemv"]
        label += " gemv" + (" r{}c{}w{}u{}".format(*tile[:4]) if tile else "")
        label += f"k{tile[4]}" if tile and len(tile) > 4 else ""
        label += " weights before wait" if case["early"] else ""
    if case["kernel"] == "wgmma":
        label += " wgmma {}x{}x64 s{}".format(*case["wgmma"][:3])
        label += " warp-specialized" if len(case["wgmma"]) > 3 else ""
    if case["tile"]:
        label += " tile " + "x".join(str(v) for v in case["tile"])
    return label


class Checker:
    def __init__(self, folder: Path) -> None:
        self.cases = json.loads((folder / "cases.json").read_text())["cases"]
        self.module = support.load_module(folder / "gemm_sm_90a.cubin", "gemm")
        self.generator = support.generator(20261206)
        self.rows: list[dict[str, Any]] = []  # every case's detail
        self.bench: list[dict[str, Any]] = []  # the timed cases, in the benchmark format

    def randn(self, shape: tuple[int, ...], dtype: str, scale: float = 1.0) -> torch.Tensor:
        return support.randn(self.generator, shape, dtype, scale)

    def inputs(self, case: dict[str, Any], sets: int = 1) -> list[dict[str, Any]]:
        dt, M, N, K = case["dtype"], case["M"], case["N"], case["K"]
        out = []
        for _ in range(sets):
            b: dict[str, Any] = {"x": self.randn((M, K), dt), "M": M}
            w_shape = (N, K) if case["transpose_w"] else (K, N)
            scale = case["w_scale"] / math.sqrt(K)
            b["w"] = self.randn(w_shape, dt, scale)
            if case["gated"]:
                b["w2"] = self.randn(w_shape, dt, scale)
            if case["has_bias"]:
                b["bias"] = self.randn((N,), dt)
            b["y"] = support.poisoned((M, N), dt)
            if case["kernel"] == "wgmma":
                block_m, block_n = case["wgmma"][:2]
                b.update(support.gemm_tensor_maps(b, block_m, block_n, case["gated"]))
            out.append(b)
        return out

    def launch(self, case: dict[str, Any], b: dict[str, Any]) -> support.KernelLaunch:
        def stand_in() -> None:  # dry run: torch in the case's dtype writes the output
            acc = b["x"].float() @ weight_matrix(case, b["w"]).float().t()
            up = (
                b["x"].float() @ weight_matrix(case, b["w2"]).float().t() if case["gated"] else None
            )
            bias = b["bias"].float() if case["has_bias"] else None
            b["y"].copy_(epilogue(case, acc, up, bias).to(b["y"].dtype))

        return support.KernelLaunch(self.module, case["info"], b, stand_in)

    def reference(
        self, case: dict[str, Any], b: dict[str, Any], rows: torch.Tensor
    ) -> torch.Tensor:
        x = b["x"][rows].double()
        acc = x @ weight_matrix(case, b["w"]).double().t()
        up = x @ weight_matrix(case, b["w2"]).double().t() if case["gated"] else None
        bias = b["bias"].double() if case["has_bias"] else None
        return epilogue(case, acc, up, bias)

    def peer(self, case: dict[str, Any], b: dict[str, Any]) -> torch.Tensor:
        """The same computation in torch, in the case's dtype (cuBLAS for the products)."""
        F = torch.nn.functional
        w = weight_matrix(case, b["w"])
        acc = F.linear(b["x"], w, b.get("bias"))
        if case["gated"]:
            up = F.linear(b["x"], weight_matrix(case, b["w2"]))
            if case["activation"] == "silu":
                acc = F.silu(acc) * up
            else:
                approximate = "tanh" if case["activation"] == "gelu_tanh" else "none"
                acc = F.gelu(acc, approximate=approximate) * up
        if case["softcap"] is not None:
            acc = torch.tanh(acc / case["softcap"]) * case["softcap"]
        return acc

    def run(self, case: dict[str, Any], quick: bool) -> None:
        M = case["M"]
        row: dict[str, Any] = {"case": case["id"], "kernel": case["info"]["name"]}
        b = self.inputs(case)[0]
        self.launch(case, b)()
        support.synchronize()
        y = b["y"]
        if M <= REFERENCE_ROWS:
            rows = torch.arange(M, device=support.device())
        else:
            picked = torch.randperm(M, generator=self.generator, device=support.device())[
                : REFERENCE_ROWS - 2
            ]
            rows = torch.cat([torch.tensor([0, M - 1], device=support.device()), picked])
        ref = self.reference(case, b, rows)
        out = y[rows].double()
        row.update(support.compare(out, ref, bound(case["dtype"], case["K"]), whole=y))
        if not row["ok"]:
            self.diagnose(row, out, ref, rows)
        if case["time"] and not quick and row["ok"]:
            self.time(case, row)
        self.rows.append(row)
        print(json.dumps(row), flush=True)

    def diagnose(
        self, row: dict[str, Any], out: torch.Tensor, ref: torch.Tensor, rows: torch.Tensor
    ) -> None:
        """Where the wrong elements are: which rows/columns (mod 8, 16, 128), so a layout
        mistake shows its pattern."""
        bad = ((out - ref).abs() > 0.05 * ref.abs().max()) | out.isnan()
        where = bad.nonzero()
        row["bad_fraction"] = float(bad.double().mean())
        if len(where):
            r = rows[where[:, 0]].cpu()
            c = where[:, 1].cpu()
            row["bad_rows_mod16"] = torch.bincount(r % 16, minlength=16).tolist()
            row["bad_cols_mod16"] = torch.bincount(c % 16, minlength=16).tolist()
            row["bad_cols_mod128_hist"] = torch.bincount(c % 128 // 8, minlength=16).tolist()
            row["first_bad"] = [int(r[0]), int(c[0])]
            i, j = int(where[0, 0]), int(where[0, 1])
            row["first_bad_values"] = [float(out[i, j]), float(ref[i, j])]

    def time(self, case: dict[str, Any], row: dict[str, Any]) -> None:
        """Times the kernel, torch, and the kernel again (the spread between the two runs of
        ours is the noise), adds the figures to ``row`` and a benchmark row to ``self.bench``."""
        M, N, K, dt = case["M"], case["N"], case["K"], case["dtype"]
        gemv = case["info"]["name"].startswith("gemm_gemv")
        weight_bytes = N * K * DTYPES[dt].itemsize * (2 if case["gated"] else 1)
        # weights larger than L2 stream from memory anyway; small ones rotate over enough sets
        sets = 1 if weight_bytes * 2 > 120e6 else max(2, int(240e6 // weight_bytes) + 1)
        sets = min(sets, 8) if not gemv else min(max(sets, 3), 8)
        bindings = self.inputs(case, sets)
        launches = [self.launch(case, b) for b in bindings]
        inner = 1 if M * N * K > 2e9 else 10

        def ours() -> None:
            for _ in range(inner):
                for launch in launches:
                    launch()

        def peer() -> None:
            for _ in range(inner):
                for b in bindings:
                    self.peer(case, b)

        calls = inner * len(bindings)
        ours_ms = support.median_ms(ours, calls, replays=30)
        peer_ms = support.median_ms(peer, calls, replays=30)
        again_ms = support.median_ms(ours, calls, replays=30)
        flops = 2.0 * M * N * K * (2 if case["gated"] else 1)
        moved = weight_bytes + (M * K + M * N) * DTYPES[dt].itemsize
        row.update(
            ours_us=ours_ms * 1e3,
            ours_again_us=again_ms * 1e3,
            torch_us=peer_ms * 1e3,
            ours_TFLOPs=flops / ours_ms / 1e9,
            torch_TFLOPs=flops / peer_ms / 1e9,
            ours_GBps=moved / ours_ms / 1e6,
            torch_GBps=moved / peer_ms / 1e6,
            ratio=peer_ms / ours_ms,
        )
        epilogue_ops = case["gated"] or case["softcap"] is not None
        name = "torch.matmul (cuBLAS)" + (" + torch epilogue" if epilogue_ops else "")
        self.bench.append(
            support.bench_row(
                "gemm",
                shape_label(case),
                ours_ms,
                row["rel_error"],
                [{"name": name, "ms": peer_ms}],
                flops=flops,
                moved=moved,
            )
        )


def check(args: argparse.Namespace) -> int:
    """Checks (and times) every case the options select; returns the exit status."""

    def skip(case: dict[str, Any]) -> bool:
        size = case["M"] * case["N"] * case["K"]
        if args.quick and (case["time"] or size > 1e8):
            return True
        return not support.on_gpu() and size > 1e10  # the dry run skips the largest shapes

    return support.run_cases(Checker(args.folder), args, "gemm", skip)


def main() -> int:
    return support.main(__doc__, build, check, support.ONLY)


if __name__ == "__main__":
    sys.exit(main())
