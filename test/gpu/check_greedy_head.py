"""Checks and times the CUDA greedy LM head (a GEMV with an argmax epilogue: partial + combine).

    python test/gpu/check_greedy_head.py --build build/greedy_head      # here: MLIR → cubin + JSON
    python3 test/gpu/check_greedy_head.py build/greedy_head --out $OUT  # on the GPU machine
    python3 test/gpu/check_greedy_head.py build/greedy_head --quick     # small cases (sanitizer)
    python test/gpu/check_greedy_head.py build/greedy_head --dry-run    # the logic, on the CPU

The build step compiles, into one sm_90a cubin, each case's greedy pair
(``kernels/greedy_head.py``: the partial kernel and the combine kernel) and the plain GEMV of
the same config (without the softcap where the head's softcap is the rounded one, which the
GEMV does not have), its tile picked by ``select_gemm`` as the compiler does, and writes
``cases.json``. The check step needs no MLIR: per case it draws fresh seeded inputs, poisons
the scratch and outputs (NaN values, -1 indices and tokens), runs the greedy pair and the
plain GEMV through ``tessera.runtime.cuda_driver``, and requires

- tokens == torch.argmax of the GEMV's own logits, exactly (the first index among equals, NaN
  above every number), every token written and in range;
- every partial (value, index) the first maximum of its block's columns of those logits;
- the float64 reference logit of each token within a bound of the reference row maximum
  (``gap_bound``: rounding and accumulation, derived there).

Data: random (x ~ N(0, 1), w ~ N(0, 1)·w_scale/√K so the logits spread like N(0, w_scale²)),
ties (duplicated w rows made each row's maximum, placed within a warp, across warps, blocks
and the combine's lanes: the first index must win), NaN (NaN columns, and a row of x that is
NaN: its logits are all NaN, so its token is 0) and equal rows. Timed cases (the Gemma heads)
run as CUDA graphs over rotating input sets together larger than L2, against the unfused
Tessera path (the plain GEMV, then torch.argmax of its logits) and torch (cuBLAS linear, then
argmax) measured in the same run, with the weight-read bound (bytes of w at the
device-to-device copy rate measured in the same run). ``--out`` receives ``greedy_head.json``
(the benchmark format) and ``greedy_head_cases.json`` (every case's detail); ``--dry-run``
runs the flow on the CPU with torch standing in for the kernels (the Gemma heads' N cut by
64). The shared machinery is in ``check_support.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import check_support as support
import torch
from check_gemm import UNIT_ROUNDOFF, bound
from check_support import DTYPES

ARCH = "sm_90a"
L2_BYTES = 50 * 2**20  # H100's L2: the timed input sets together are four times larger
DRY_RUN_SHRINK = 64  # the dry run divides N of heads above DRY_RUN_ELEMENTS weights by this
DRY_RUN_ELEMENTS = 2**26
QUICK_ELEMENTS = 10**7  # --quick: heads with at most this many weights

# ---------------------------------------------------------------------------------------------
# Cases. hint: the rows the compiler expects (select_gemm's m_hint: the GEMV's rows are its
# next power of two, up to 8); M: the rows the check runs (any count is correct).


def case_list() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []

    def add(case_id: str, **fields: Any) -> None:
        case: dict[str, Any] = {"id": case_id, "dtype": "bf16", "softcap": None, "has_bias": False}
        case.update(rounded=False, w_scale=4.0, time=False, data="random", label=None)
        case.update(fields)
        case.setdefault("hint", min(case["M"], 8))
        cases.append(case)

    # small, ragged: N not a multiple of a block's columns, M not a multiple of the rows
    add("bf16_m1", M=1, N=201, K=73)
    add("bf16_m3_p126", M=3, N=1001, K=72)  # 126 partials: four rounds of the combine's lanes
    add("bf16_m8_bias_cap", M=8, N=300, K=40, has_bias=True, softcap=30.0, w_scale=8.0)
    add("bf16_m11", M=11, N=203, K=64)  # rows 8: two row blocks, the second ragged
    add("bf16_m3_rounded", M=3, N=300, K=40, softcap=30.0, rounded=True, w_scale=8.0)
    add(
        "bf16_m11_bias_rounded",
        M=11,
        N=1001,
        K=73,
        has_bias=True,
        softcap=30.0,
        rounded=True,
        w_scale=8.0,
    )
    add("bf16_m3_hint1", M=3, N=201, K=73, hint=1)  # rows 1: a row block per row
    add("f16_m3", dtype="f16", M=3, N=201, K=73)
    add("f16_m8_bias_cap", dtype="f16", M=8, N=300, K=72, has_bias=True, softcap=30.0, w_scale=8.0)
    add("f32_m1_cap", dtype="f32", M=1, N=200, K=74, softcap=30.0, w_scale=8.0)
    add("f32_m11_bias", dtype="f32", M=11, N=1001, K=73, has_bias=True)
    # ties, NaN, equal rows (w_scale 1: the tie's boost of 16 stands far above the rest)
    for dt in ("bf16", "f32"):
        add(f"{dt}_ties", dtype=dt, M=8, N=401, K=40, has_bias=True, data="ties", w_scale=1.0)
        add(f"{dt}_nan_cap", dtype=dt, M=5, N=401, K=40, softcap=30.0, data="nan", w_scale=1.0)
    add("bf16_equal_rows", M=3, N=401, K=40, has_bias=True, data="equal")
    # the Gemma heads (tied embeddings, w [vocab, hidden]); Gemma-2's final softcap as the
    # model's own bf16 ops compute it (rounded at each step)
    gemma_2b = {"N": 256000, "K": 2048, "label": "Gemma-2B head"}
    gemma_2_2b = {"N": 256000, "K": 2304, "label": "Gemma-2-2B head"}
    gemma_3_1b = {"N": 262144, "K": 1152, "label": "Gemma-3-1B head"}
    rounded_cap = {"softcap": 30.0, "rounded": True, "w_scale": 8.0}
    add("gemma2b_m1", M=1, **gemma_2b, time=True)
    add("gemma2b_m8", M=8, **gemma_2b, time=True)
    add("gemma2_2b_m1_rounded", M=1, **gemma_2_2b, **rounded_cap, time=True)
    add("gemma3_1b_m1", M=1, **gemma_3_1b, time=True)
    # the same kernels (built once) on tie and NaN data at full width: 32000 partials
    add("gemma2b_m8_ties", M=8, **gemma_2b, data="ties", w_scale=1.0)
    add("gemma2_2b_nan_rounded", M=2, hint=1, **gemma_2_2b, **rounded_cap, data="nan")
    return cases


# ---------------------------------------------------------------------------------------------
# Build (here, with MLIR)


def build(folder: Path) -> None:
    import dataclasses

    from mlir import ir

    from tessera.context import make_context
    from tessera.lowering.cuda.kernel import KernelModule
    from tessera.lowering.cuda.kernels.gemm import GemmConfig, build_gemm, select_gemm
    from tessera.lowering.cuda.kernels.greedy_head import build_greedy_head, partial_count

    folder.mkdir(parents=True, exist_ok=True)
    cases = case_list()
    with make_context(), ir.Location.unknown():
        km = KernelModule(ARCH)
        for case in cases:
            head = GemmConfig(
                case["dtype"],
                case["N"],
                case["K"],
                softcap=case["softcap"],
                has_bias=case["has_bias"],
            )
            cfg = select_gemm(head, case["hint"])
            partial, combine = build_greedy_head(km, cfg, case["rounded"])
            plain = dataclasses.replace(cfg, softcap=None) if case["rounded"] else cfg
            g = cfg.gemv
            case["gemv"] = [g.rows, g.cols, g.warps, g.unroll]
            case["width"] = g.warps * g.cols
            case["parts"] = partial_count(cfg)
            case["info"] = {
                "partial": support.info_json(partial),
                "combine": support.info_json(combine),
                "gemv": support.info_json(build_gemm(km, plain)),
            }
        report = support.emit_binaries(
            km.module,
            ARCH,
            folder / f"greedy_head_{ARCH}.ptx",
            folder / f"ptxas_{ARCH}.txt",
            cubin_file=folder / f"greedy_head_{ARCH}.cubin",
        )
    support.write_cases(folder, cases, report)


# ---------------------------------------------------------------------------------------------
# Logits as the kernels compute them (torch, for the stand-ins and the rounded softcap)


def rounded_softcap(y: torch.Tensor, cap: float) -> torch.Tensor:
    """The softcap of y (in its dtype) as a narrow-dtype model's three ops round it: y/c, tanh
    and ·c each rounded to y's dtype. The division goes through a device tensor: torch divides
    by a Python scalar through its reciprocal on CUDA, the kernel (and torch by a tensor) truly
    divides, and the two can round differently."""
    dt = y.dtype
    scaled = (y.float() / torch.tensor(cap, dtype=torch.float32, device=y.device)).to(dt)
    return (torch.tanh(scaled.float()).to(dt).float() * cap).to(dt)


def ranked_logits(case: dict[str, Any], y: torch.Tensor) -> torch.Tensor:
    """The logits the greedy head ranks (as f32), from the plain GEMV's y: y itself, or its
    rounded softcap where the head has one (the GEMV then has no softcap)."""
    return rounded_softcap(y, case["softcap"]).float() if case["rounded"] else y.float()


def stand_in_logits(case: dict[str, Any], b: dict[str, Any], softcap: bool) -> torch.Tensor:
    """The dry run's GEMV: f32 products, bias, softcap in f32 (if ``softcap``), one rounding."""
    acc = b["x"].float() @ b["w"].float().t()
    if case["has_bias"]:
        acc = acc + b["bias"].float()
    if softcap and case["softcap"] is not None:
        acc = case["softcap"] * torch.tanh(acc / case["softcap"])
    return acc.to(DTYPES[case["dtype"]])


def block_argmax(logits: torch.Tensor, width: int, parts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (value, first index) maximum of each block of ``width`` columns, as the partial
    kernel writes it: [M, parts] f32 and i32 (columns past N count as -inf)."""
    M, N = logits.shape
    padded = torch.full((M, parts * width), -math.inf, device=logits.device)
    padded[:, :N] = logits.float()
    blocks = padded.view(M, parts, width)
    at = torch.argmax(blocks, dim=2)
    values = blocks.gather(2, at[:, :, None])[:, :, 0]
    base = torch.arange(parts, device=logits.device)[None, :] * width
    return values, (at + base).to(torch.int32)


# ---------------------------------------------------------------------------------------------
# Data


def tie_groups(N: int, width: int, cols: int, parts: int) -> list[tuple[int, ...]]:
    """Disjoint sets of columns to tie, each where a wrong rule would show: within a warp,
    across the warps of a block, across blocks, the later index on a lower lane of the combine
    (a lane's second round), the butterfly (partial 1 on lane 1 against partial 32 on lane 0),
    three far apart ending at the last column, and the first against the last column."""
    warps = width // cols
    groups: list[tuple[int, ...]] = []
    if cols >= 2 and warps >= 2:
        groups.append((3 * width + cols, 3 * width + cols + 1))
    if warps >= 2:
        groups.append((4 * width + cols - 1, 4 * width + cols))
    groups.append((6 * width - 1, 6 * width))
    if parts > 38:
        groups.append((7 * width + 1, 38 * width + 1))
    if parts > 32:
        groups.append((width + 1, 32 * width + 2))
    groups.append((2, (parts // 2) * width + 3, N - 2))
    groups.append((0, N - 1))
    used = [c for group in groups for c in group]
    assert len(used) == len(set(used)) and max(used) < N, (N, width, groups)
    return groups


def make_ties(b: dict[str, Any], groups: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Row r's maximum becomes a tie of group r (cycling): feature g of x is 4 in the rows of
    group g and 0 elsewhere, and the group's w rows (and bias) are copies of one whose feature
    g is 4, so the group's logits are bit-identical and 16 above the random rest. Returns each
    row's group."""
    x, w, M = b["x"], b["w"], b["M"]
    x[:, : len(groups)] = 0.0
    per_row = []
    for r in range(M):
        g = r % len(groups)
        x[r, g] = 4.0
        per_row.append(groups[g])
    for g, group in enumerate(groups):
        w[group[0], g] = 4.0
        for c in group[1:]:
            w[c] = w[group[0]]
            if "bias" in b:
                b["bias"][c] = b["bias"][group[0]]
    return per_row


def nan_columns(N: int, width: int) -> tuple[int, int]:
    """The columns the NaN data makes NaN in every row: the last, and one in the middle
    block (the token, the first NaN, is the middle one)."""
    return N - 1, (N // width // 2) * width + 3


def make_nans(b: dict[str, Any], N: int, width: int) -> list[int]:
    """NaN in two columns of w and in the last row of x (all that row's logits NaN: token
    0). Returns each row's expected token."""
    w, x, M = b["w"], b["x"], b["M"]
    for c in nan_columns(N, width):
        w[c, 3] = math.nan
    x[M - 1, 5] = math.nan
    return [min(nan_columns(N, width))] * (M - 1) + [0]


# ---------------------------------------------------------------------------------------------
# Check (on the GPU machine)


def gap_bound(case: dict[str, Any], K: int) -> float:
    """How far below the float64 reference row maximum the token's reference logit may be,
    relative to the row's logit scale (its largest |logit| before the softcap).

    Each logit the kernel ranks, ŷ_n, is the reference y_n plus an error e_n, and |e_n| <=
    bound(dtype, K)·scale (check_gemm's ``bound`` = 2u + 4√K·2⁻²⁴, u the dtype's unit
    roundoff; ``scale`` the row's largest |logit| before the softcap):
    - the products are exact in f32 for bf16 and f16 inputs (8- or 11-bit significands), and
      their f32 sum over K terms errs by about √K·2⁻²⁴ of the logits' size where the rounding
      errors take random signs (check_gemm's allowance, 4√K·2⁻²⁴, as there; the bias adds one
      f32 rounding, 2⁻²⁴·scale);
    - the rounding to the dtype errs by at most u·|value| <= u·scale: the value is within the
      scale, since the softcap c·tanh(z/c) satisfies |c·tanh(z/c)| <= |z|; bound's 2u leaves
      u·scale of room for the rest (libdevice's f32 tanh, a few f32 ulp, included);
    - the softcap's slope is at most 1, so an error made before it does not grow through it;
    - the rounded softcap rounds three more times, each adding at most u·scale once carried
      through the rest: y/c errs by u·|y|/c, times a slope <= 1 and c; tanh by u·|tanh(y/c)|,
      times c; ·c by u·|c·tanh(y/c)|. Hence 3u more.

    The token t maximizes ŷ, n* maximizes y: y_t >= ŷ_t − |e_t| >= ŷ_n* − |e_t| >= y_n* −
    |e_n*| − |e_t|, so y_n* − y_t <= 2·max|e|: the bound is twice the per-logit one."""
    u = UNIT_ROUNDOFF[case["dtype"]]
    per_logit = bound(case["dtype"], K) + (3 * u if case["rounded"] else 0.0)
    return 2 * per_logit


class Checker:
    def __init__(self, folder: Path) -> None:
        self.cases = json.loads((folder / "cases.json").read_text())["cases"]
        self.module = support.load_module(folder / f"greedy_head_{ARCH}.cubin", "greedy_head")
        self.generator = support.generator(20261210)
        self.rows: list[dict[str, Any]] = []  # every case's detail
        self.bench: list[dict[str, Any]] = []  # the timed cases, in the benchmark format

    # -- sizes and inputs --------------------------------------------------------------------

    def sizes(self, case: dict[str, Any]) -> tuple[int, int, int, int]:
        """(M, N, K, P) of the run: the case's, but the dry run cuts the N of the Gemma heads
        (the stand-ins do not depend on the compiled N; P follows N)."""
        N = case["N"]
        if not support.on_gpu() and N * case["K"] > DRY_RUN_ELEMENTS:
            N //= DRY_RUN_SHRINK
        parts = -(-N // case["width"])
        if support.on_gpu():
            assert parts == case["parts"] == int(case["info"]["partial"]["grid"][0]), case["id"]
        return case["M"], N, case["K"], parts

    def inputs(self, case: dict[str, Any]) -> dict[str, Any]:
        """One input set, with poisoned scratch and outputs: NaN for floats, -1 for indices
        and tokens (no kernel writes -1 there)."""
        M, N, K, P = self.sizes(case)
        dt = case["dtype"]
        b: dict[str, Any] = {"M": M, "x": support.randn(self.generator, (M, K), dt)}
        scale = case["w_scale"] / math.sqrt(K)
        b["w"] = support.randn(self.generator, (N, K), dt, scale)
        if case["has_bias"]:
            b["bias"] = support.randn(self.generator, (N,), dt)
        dev = support.device()
        b["part_value"] = support.poisoned((M, P), "f32")
        b["part_index"] = torch.full((M, P), -1, dtype=torch.int32, device=dev)
        b["tokens"] = torch.full((M,), -1, dtype=torch.int64, device=dev)
        b["y"] = support.poisoned((M, N), dt)
        return b

    # -- launches ----------------------------------------------------------------------------

    def greedy(self, case: dict[str, Any], b: dict[str, Any]) -> Callable[[], None]:
        """The greedy pair bound to ``b``: partial, then combine."""
        *_, P = self.sizes(case)
        width = case["width"]

        def partial_stand_in() -> None:
            logits = stand_in_logits(case, b, softcap=not case["rounded"])
            values, at = block_argmax(ranked_logits(case, logits), width, P)
            b["part_value"].copy_(values)
            b["part_index"].copy_(at)

        def combine_stand_in() -> None:
            best = torch.argmax(b["part_value"], dim=1, keepdim=True)
            b["tokens"].copy_(b["part_index"].gather(1, best)[:, 0].long())

        info = case["info"]
        partial = support.KernelLaunch(self.module, info["partial"], b, partial_stand_in)
        combine = support.KernelLaunch(self.module, info["combine"], b, combine_stand_in)

        def run() -> None:
            partial()
            combine()

        return run

    def gemv(self, case: dict[str, Any], b: dict[str, Any]) -> support.KernelLaunch:
        """The plain GEMV of the same config (no softcap for a rounded-softcap head) into y."""

        def stand_in() -> None:
            b["y"].copy_(stand_in_logits(case, b, softcap=not case["rounded"]))

        return support.KernelLaunch(self.module, case["info"]["gemv"], b, stand_in)

    # -- correctness -------------------------------------------------------------------------

    def run(self, case: dict[str, Any], quick: bool) -> None:
        M, N, K, P = self.sizes(case)
        row: dict[str, Any] = {"case": case["id"], "kernel": case["info"]["partial"]["name"]}
        row.update(M=M, N=N, K=K, parts=P)
        b = self.inputs(case)
        groups: list[tuple[int, ...]] = []
        nan_tokens: list[int] = []
        if case["data"] == "ties":
            groups = make_ties(b, tie_groups(N, case["width"], case["gemv"][1], P))
        elif case["data"] == "nan":
            nan_tokens = make_nans(b, N, case["width"])
        elif case["data"] == "equal":
            b["w"][1:] = b["w"][0].clone()
            b["bias"].fill_(0.5)
        self.greedy(case, b)()
        self.gemv(case, b)()
        support.synchronize()
        tokens = b["tokens"]
        logits = ranked_logits(case, b["y"])
        expected = torch.argmax(logits, dim=1)
        checks = {
            # the logits are all written (NaN data makes NaN logits: nothing to tell there)
            "y_written": case["data"] == "nan" or support.unwritten(b["y"]) == 0,
            "tokens_written": bool((tokens >= 0).all() and (tokens < N).all()),
            "tokens_are_gemv_argmax": bool((tokens == expected).all()),
        }
        checks.update(self.partials(case, b, logits))
        if groups:
            checks.update(ties(tokens, logits, groups))
        if nan_tokens:
            checks["nan_first"] = tokens.tolist() == nan_tokens
        if case["data"] == "equal":
            checks["equal_rows_take_0"] = bool((tokens == 0).all())
        row.update(self.against_reference(case, b, K))
        checks["reference_gap_in_bound"] = row.pop("in_bound")
        row["checks"] = checks
        row["ok"] = all(checks.values())
        if not row["ok"]:
            mismatch = (tokens != expected).nonzero()[:, 0][:4]
            row["mismatch_rows"] = mismatch.tolist()
            row["mismatch"] = [
                {
                    "token": int(tokens[r]),
                    "expected": int(expected[r]),
                    "token_logit": float(logits[r, int(tokens[r]) % N]),
                    "expected_logit": float(logits[r, expected[r]]),
                }
                for r in mismatch.tolist()
            ]
            _, at = block_argmax(logits, case["width"], P)
            wrong = (b["part_index"] != at).nonzero()[:4]
            row["bad_partials"] = int((b["part_index"] != at).sum())
            row["first_bad_partials"] = [
                {
                    "row": int(r),
                    "part": int(q),
                    "index": int(b["part_index"][r, q]),
                    "want": int(at[r, q]),
                }
                for r, q in wrong.tolist()
            ]
        if case["time"] and not quick and row["ok"]:
            del b, logits
            self.time(case, row)
        self.rows.append(row)
        print(json.dumps(row), flush=True)

    def partials(
        self, case: dict[str, Any], b: dict[str, Any], logits: torch.Tensor
    ) -> dict[str, bool]:
        """Each partial: written, the first maximum of its own block's columns."""
        *_, P = self.sizes(case)
        index, value = b["part_index"], b["part_value"]
        values, at = block_argmax(logits, case["width"], P)
        same_value = (value == values) | (value.isnan() & values.isnan())
        return {
            "partials_written": bool((index >= 0).all()),
            "partials_are_block_argmax": bool((index == at).all() and same_value.all()),
        }

    def against_reference(self, case: dict[str, Any], b: dict[str, Any], K: int) -> dict[str, Any]:
        """The token's float64 reference logit against the reference row maximum (rows whose
        reference has a NaN: the token must be its first NaN)."""
        z = b["x"].double() @ b["w"].double().t()
        if case["has_bias"]:
            z += b["bias"].double()
        finite = torch.where(z.isfinite(), z.abs(), torch.zeros_like(z))
        scale = finite.amax(dim=1)
        ref = z if case["softcap"] is None else case["softcap"] * torch.tanh(z / case["softcap"])
        del z, finite
        tokens = b["tokens"]
        nan_rows = ref.isnan().any(dim=1)
        chosen = ref.gather(1, tokens.clamp(0, ref.shape[1] - 1)[:, None])[:, 0]
        gap = torch.where(nan_rows, torch.zeros_like(chosen), ref.amax(dim=1) - chosen)
        allowed = gap_bound(case, K) * scale
        first_nan = torch.argmax(ref, dim=1)  # torch.argmax: the first NaN, if any
        in_bound = (~nan_rows & (gap <= allowed)) | (nan_rows & (tokens == first_nan))
        relative = torch.where(scale > 0, gap / scale, gap)
        return {
            "rel_error": float(relative.max()),  # the worst (row max − token logit) / scale
            "bound": gap_bound(case, K),
            "reference_exact_rows": int((gap == 0).sum()),
            "nan_rows": int(nan_rows.sum()),
            "in_bound": bool(in_bound.all()),
        }

    # -- timing ------------------------------------------------------------------------------

    def time(self, case: dict[str, Any], row: dict[str, Any]) -> None:
        """Times the greedy pair, the unfused Tessera path (plain GEMV, then torch's softcap
        ops if rounded and torch.argmax), torch (F.linear, softcap ops, argmax) and the pair
        again (the spread between our two runs is the noise), over rotating input sets four
        times L2 together; adds the figures to ``row`` and a benchmark row to ``self.bench``."""
        M, N, K, _ = self.sizes(case)
        size = DTYPES[case["dtype"]].itemsize
        w_bytes = N * K * size
        rate = support.copy_rate()
        sets = max(2, math.ceil(4 * L2_BYTES / w_bytes))
        bindings = [self.inputs(case) for _ in range(sets)]
        greedy = [self.greedy(case, b) for b in bindings]
        gemvs = [self.gemv(case, b) for b in bindings]
        cap = case["softcap"]
        inner = 5

        def capped(y: torch.Tensor) -> torch.Tensor:  # a model's own softcap ops, in y's dtype
            return y if cap is None else torch.tanh(y / cap) * cap

        def ours() -> None:
            for _ in range(inner):
                for launch in greedy:
                    launch()

        def unfused() -> None:
            for _ in range(inner):
                for launch, b in zip(gemvs, bindings, strict=True):
                    launch()
                    torch.argmax(capped(b["y"]) if case["rounded"] else b["y"], dim=-1)

        def peer() -> None:
            F = torch.nn.functional
            for _ in range(inner):
                for b in bindings:
                    torch.argmax(capped(F.linear(b["x"], b["w"], b.get("bias"))), dim=-1)

        calls = inner * sets
        ms = {
            "ours": support.median_ms(ours, calls, replays=30),
            "unfused": support.median_ms(unfused, calls, replays=30),
            "torch": support.median_ms(peer, calls, replays=30),
            "ours_again": support.median_ms(ours, calls, replays=30),
        }
        bound_ms = w_bytes / rate * 1e3
        # the bytes the head must move: w, x, bias and the tokens
        moved = w_bytes + (M * K + (N if case["has_bias"] else 0)) * size + M * 8
        row.update({f"{name}_us": value * 1e3 for name, value in ms.items()})
        row.update(
            sets=sets,
            weight_bytes=w_bytes,
            copy_GBps=rate / 1e9,
            weight_read_bound_us=bound_ms * 1e3,
            fraction_of_bound=bound_ms / ms["ours"],
            ours_GBps=moved / ms["ours"] / 1e6,
            speedup_vs_unfused=ms["unfused"] / ms["ours"],
            speedup_vs_torch=ms["torch"] / ms["ours"],
        )
        softcap_ops = " + torch softcap ops" if cap is not None else ""
        peers = [
            {"name": f"Tessera GEMV{softcap_ops} + torch.argmax (unfused)", "ms": ms["unfused"]},
            {"name": f"torch F.linear (cuBLAS){softcap_ops} + argmax", "ms": ms["torch"]},
            {"name": "weight-read bound (w bytes at the d2d copy rate)", "ms": bound_ms},
        ]
        self.bench.append(
            support.bench_row(
                "greedy_head",
                shape_label(case, M, N),
                ms["ours"],
                row["rel_error"],
                peers,
                moved=moved,
            )
        )


def ties(
    tokens: torch.Tensor, logits: torch.Tensor, per_row: list[tuple[int, ...]]
) -> dict[str, bool]:
    """Each row's token is the first of its tie, and the tie is not vacuous: the tied logits
    are the row maximum, equal, and a last-index rule would answer its last column."""
    first = [group[0] for group in per_row]
    at_max = all(
        bool((logits[r, list(group)] == logits[r].max()).all()) for r, group in enumerate(per_row)
    )
    N = logits.shape[1]
    last = (N - 1 - torch.argmax(torch.flip(logits, dims=[1]), dim=1)).tolist()
    return {
        "ties_first_index": tokens.tolist() == first,
        "ties_at_row_max": at_max and last == [group[-1] for group in per_row],
    }


def shape_label(case: dict[str, Any], M: int, N: int) -> str:
    """The case as the benchmark rows name it."""
    label = f"{case['label']}: " if case["label"] else ""
    label += f"M{M} N{N} K{case['K']} {case['dtype']}"
    if case["has_bias"]:
        label += " bias"
    if case["softcap"] is not None:
        label += f" softcap{case['softcap']:g}" + (" rounded" if case["rounded"] else "")
    return label + " gemv r{}c{}w{}u{}".format(*case["gemv"])


def check(args: argparse.Namespace) -> int:
    """Checks (and times) every case the options select; returns the exit status."""
    return support.run_cases(
        Checker(args.folder),
        args,
        "greedy_head",
        lambda case: bool(args.quick and (case["time"] or case["N"] * case["K"] > QUICK_ELEMENTS)),
    )


def main() -> int:
    return support.main(__doc__, build, check, support.ONLY)


if __name__ == "__main__":
    sys.exit(main())
