"""The greedy head (``greedy_head``: partial + combine, token = argmax of the logits without
writing them) run without a GPU in the kernel interpreter, on seeded inputs, against the plain
GEMV of the same config run in the same interpreter: the token of every row must be exactly
torch.argmax of the GEMV's stored y (first index among equals, NaN above every number).

Scratch and outputs start poisoned (NaN values, -1 indices and tokens); the interpreter faults
on a read of an element no launch wrote and on an element written twice. Ties are built from
duplicate rows of w (bit-identical logits) placed within a warp, across warps, across blocks
and across the combine's lanes, with a check that a last-index rule answers differently, and
one test swaps in a non-strict comparator to show such a rule is caught.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from gpu_interpreter import KINDS, Buffer, round_to, run_kernel
from mlir import ir

from tessera.context import make_context
from tessera.errors import LoweringError
from tessera.lowering.cuda import toolchain
from tessera.lowering.cuda.kernel import KernelModule
from tessera.lowering.cuda.kernels import greedy_head
from tessera.lowering.cuda.kernels.gemm import GemmConfig, GemvTile, build_gemm, select_gemm
from tessera.lowering.cuda.kernels.greedy_head import build_greedy_head, partial_count

G, V = GemmConfig, GemvTile
Arrays = dict[str, np.ndarray]

# (config, M): dtypes, epilogues, tiles; N ragged (not a multiple of warps * cols) and M not
# a multiple of rows unless noted.
CASES = [
    pytest.param(G("bf16", 201, 73, kernel="gemv"), 3, id="bf16-r4c2w4"),
    pytest.param(G("f32", 200, 74, kernel="gemv", softcap=30.0), 5, id="f32-softcap-r4"),
    pytest.param(select_gemm(G("bf16", 203, 64, has_bias=True, softcap=30.0), 1), 1, id="m1"),
    pytest.param(G("bf16", 133, 40, kernel="gemv", gemv=V(8, 1, 2, 2)), 9, id="r8c1w2-m9"),
    pytest.param(G("f16", 99, 48, kernel="gemv", gemv=V(2, 2, 2, 1)), 3, id="f16-r2c2w2"),
    pytest.param(G("f32", 67, 33, kernel="gemv", has_bias=True, gemv=V(2, 2, 2, 4)), 4, id="f32"),
    pytest.param(G("bf16", 300, 40, gemv=V(1, 1, 4, 4)), 2, id="auto-p75"),
    pytest.param(G("bf16", 256, 32, kernel="gemv", gemv=V(4, 2, 4, 4)), 8, id="even-n-and-m"),
    # more partials than the combine's 1024 threads: three rounds, the last masked
    pytest.param(G("bf16", 2500, 16, kernel="gemv", gemv=V(1, 1, 1, 2)), 2, id="p2500"),
]


def inputs(cfg: GemmConfig, M: int, seed: int, scale: float = 1.0) -> Arrays:
    """Seeded x [M, K], w [N, K] and bias [N], rounded to the dtype."""
    rng = np.random.default_rng(seed)
    kind = KINDS[cfg.dtype]
    return {
        "x": round_to(kind, rng.standard_normal((M, cfg.K))),
        "w": round_to(kind, rng.standard_normal((cfg.N, cfg.K)) * scale / math.sqrt(cfg.K)),
        "bias": round_to(kind, rng.standard_normal(cfg.N)),
    }


def _bindings(cfg: GemmConfig, arrays: Arrays) -> dict[str, Buffer | int]:
    return {name: Buffer.of(v, cfg.dtype, name) for name, v in arrays.items()}


def gemv_logits(cfg: GemmConfig, arrays: Arrays) -> torch.Tensor:
    """The plain GEMV's y [M, N] (as f32: widening is exact) for the same config."""
    M = len(arrays["x"])
    y = Buffer.poisoned(M * cfg.N, cfg.dtype, "y")
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a")
        info = build_gemm(km, dataclasses.replace(cfg, kernel="gemv"))
        run_kernel(km.module, info, _bindings(cfg, arrays) | {"y": y, "M": M})
    return y.tensor((M, cfg.N)).float()


def greedy_tokens(
    cfg: GemmConfig, arrays: Arrays, rounded_softcap: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The greedy head's tokens [M] and its partials (values, indices [M, P])."""
    M, P = len(arrays["x"]), partial_count(cfg)
    part_value = Buffer.poisoned(M * P, "f32", "part_value")
    part_index = Buffer.poisoned(M * P, "i32", "part_index")
    tokens = Buffer.poisoned(M, "i64", "tokens")
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a")
        partial, combine = build_greedy_head(km, cfg, rounded_softcap)
        scratch = {"part_value": part_value, "part_index": part_index, "M": M}
        run_kernel(km.module, partial, _bindings(cfg, arrays) | scratch)
        run_kernel(km.module, combine, scratch | {"tokens": tokens})
    values = part_value.values().reshape(M, P)
    return tokens.values(), values, part_index.values().reshape(M, P)


def check(cfg: GemmConfig, arrays: Arrays) -> tuple[np.ndarray, torch.Tensor]:
    """Runs both; asserts tokens == first-index argmax of the GEMV's y and that each partial
    is the (value, first index) maximum of its block's columns. Returns (tokens, y)."""
    y = gemv_logits(cfg, arrays)
    tokens, values, indices = greedy_tokens(cfg, arrays)
    expected = torch.argmax(y, dim=1).numpy()
    assert tokens.tolist() == expected.tolist()
    width = cfg.gemv.warps * cfg.gemv.cols
    for p in range(partial_count(cfg)):
        block = y[:, p * width : (p + 1) * width]
        first = torch.argmax(block, dim=1).numpy() + p * width
        assert indices[:, p].tolist() == first.tolist(), f"partial {p}"
        picked = y.numpy()[np.arange(len(y)), first]
        np.testing.assert_array_equal(values[:, p], picked)  # NaN equals NaN here
    return tokens, y


@pytest.mark.parametrize(("cfg", "M"), CASES)
def test_tokens_are_the_gemv_argmax(cfg: GemmConfig, M: int) -> None:
    arrays = inputs(cfg, M, seed=cfg.N * 100 + M, scale=8.0 if cfg.softcap else 1.0)
    check(cfg, arrays)


# -- ties, NaN, equal rows ---------------------------------------------------------------------

TIE_CFG = G("bf16", 300, 40, kernel="gemv")  # 4 warps x 2 columns: P = 38 > 32 lanes
TIES = {
    "one-warp": (4, 5),
    "two-warps": (1, 2),
    "two-blocks": (7, 8),
    "lanes-reversed": (20, 270),  # partial 2 on lane 2 vs partial 33 on lane 1
    # partial 1 on lane 1 vs partial 32 on lane 0: lane 0 holds the later index, so only the
    # butterfly's index tie-break gives the first
    "butterfly": (10, 260),
    "three-way-last-column": (5, 150, 299),
}


def with_duplicates(arrays: Arrays, columns: tuple[int, ...]) -> Arrays:
    """w rows ``columns`` made identical and large along a feature every x row has, so
    those columns tie bit for bit at every row's maximum."""
    x, w, bias = (arrays[k].copy() for k in ("x", "w", "bias"))
    x[:, 0] = 4.0
    w[columns[0], 0] = 4.0
    for c in columns[1:]:
        w[c] = w[columns[0]]
        bias[c] = bias[columns[0]]
    return {"x": x, "w": w, "bias": bias}


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("columns", TIES.values(), ids=TIES.keys())
def test_ties_take_the_first_index(columns: tuple[int, ...], dtype: str) -> None:
    cfg = dataclasses.replace(TIE_CFG, dtype=dtype, has_bias=True)
    arrays = with_duplicates(inputs(cfg, 6, seed=7), columns)
    tokens, y = check(cfg, arrays)
    assert (tokens == columns[0]).all()
    # not vacuous: the tie is at every row's maximum, where a last-index rule differs
    last = cfg.N - 1 - torch.argmax(torch.flip(y, dims=[1]), dim=1)
    assert (last == columns[-1]).all()


NANS = {"one": (150,), "first-of-two": (260, 10), "same-warp": (41, 40), "last-column": (299,)}


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("columns", NANS.values(), ids=NANS.keys())
def test_nan_is_above_every_number(columns: tuple[int, ...], dtype: str) -> None:
    cfg = dataclasses.replace(TIE_CFG, dtype=dtype, softcap=30.0)
    arrays = inputs(cfg, 5, seed=11)
    for c in columns:
        arrays["w"][c, 3] = np.nan
    tokens, y = check(cfg, arrays)
    assert (tokens == min(columns)).all() and y[:, min(columns)].isnan().all()


def test_equal_rows_take_index_zero() -> None:
    cfg = dataclasses.replace(TIE_CFG, has_bias=True)
    arrays = inputs(cfg, 3, seed=3)
    arrays["w"][:] = arrays["w"][0]
    arrays["bias"][:] = 0.5
    tokens, _ = check(cfg, arrays)
    assert (tokens == 0).all()


def test_all_minus_infinity_takes_index_zero() -> None:
    """Every logit -inf: real candidates must still beat the empty start of a lane."""
    cfg = dataclasses.replace(TIE_CFG, has_bias=True)
    arrays = inputs(cfg, 3, seed=5)
    arrays["bias"][:] = -np.inf
    tokens, y = check(cfg, arrays)
    assert (tokens == 0).all() and torch.isneginf(y).all()


def test_a_last_index_rule_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A comparator that lets equals win (so ascending scans keep the last) fails the tie
    data: the tie tests above cannot pass by accident."""

    def beats_or_ties(a: ir.Value, b: ir.Value) -> ir.Value:
        from mlir.dialects import arith

        return arith.cmpf(arith.CmpFPredicate.UGE, a, b)

    monkeypatch.setattr(greedy_head, "beats", beats_or_ties)
    arrays = with_duplicates(inputs(TIE_CFG, 6, seed=7), TIES["two-warps"])
    tokens, _, _ = greedy_tokens(TIE_CFG, arrays)
    assert (tokens == TIES["two-warps"][-1]).all()


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_rounded_softcap_rounds_each_step(dtype: str) -> None:
    """``rounded_softcap``: the token is the argmax of the softcap computed as a narrow-dtype
    model's three ops compute it (y rounded, then y/c, tanh and ·c each rounded), not of the
    one-rounding softcap. Row 0's logits are set through a one-hot x: a pair of logits past
    the cap that the rounded steps make equal (so the first wins) and one rounding keeps
    apart (so the second would); the data is checked to tell the two softcaps apart."""
    cap = 30.0
    cfg = G(dtype, 300, 40, kernel="gemv", softcap=cap)
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float16
    values = torch.arange(2000, 6000, dtype=torch.float32).div(100).to(torch_dtype).unique()
    steps = (values / cap).float().tanh().to(torch_dtype) * cap
    once = (cap * torch.tanh(values.float() / cap)).to(torch_dtype)
    pair = next(
        i for i in range(len(values) - 1) if steps[i] == steps[i + 1] and once[i] < once[i + 1]
    )
    arrays = inputs(cfg, 4, seed=11, scale=60.0)
    arrays["x"][0] = 0.0
    arrays["x"][0, 0] = 1.0
    arrays["w"][:, 0] = 0.0
    arrays["w"][[40, 170], 0] = values[pair : pair + 2].float().numpy()
    plain = dataclasses.replace(cfg, softcap=None)
    y = gemv_logits(plain, arrays).to(torch_dtype)
    expected = torch.argmax(((y / cap).float().tanh().to(torch_dtype) * cap).float(), dim=1)
    one_rounding = torch.argmax(gemv_logits(cfg, arrays), dim=1)
    assert (expected[0].item(), one_rounding[0].item()) == (40, 170)
    tokens, _, _ = greedy_tokens(cfg, arrays, rounded_softcap=True)
    assert tokens.tolist() == expected.tolist()


def test_rounded_softcap_needs_a_softcap() -> None:
    with make_context(), ir.Location.unknown():
        with pytest.raises(LoweringError, match="rounded softcap needs a softcap"):
            build_greedy_head(KernelModule("sm_90a"), G("bf16", 64, 64), rounded_softcap=True)


# -- the contract ------------------------------------------------------------------------------


def test_launch_contract_and_reuse() -> None:
    cfg = G("bf16", 201, 73, kernel="auto", has_bias=True, softcap=30.0, gemv=V(2, 2, 4, 4))
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a")
        partial, combine = build_greedy_head(km, cfg)
        assert build_greedy_head(km, cfg) == (partial, combine)
        # another head with as many partials shares the combine
        _, shared = build_greedy_head(km, dataclasses.replace(cfg, K=64))
    assert partial_count(cfg) == 26
    assert partial.name == "greedy_head_bf16_n201_k73_nk_bias_cap30_r2c2w4u4"
    assert [p.name for p in partial.params] == ["x", "w", "bias", "part_value", "part_index", "M"]
    assert [p.dtype for p in partial.params[3:5]] == ["f32", "i32"]
    assert partial.grid == ("26", "cdiv(M, 2)", "1") and partial.block == (128, 1, 1)
    assert combine.name == shared.name == "greedy_combine_p26"
    assert [p.name for p in combine.params] == ["part_value", "part_index", "tokens", "M"]
    assert combine.params[2].dtype == "i64"
    assert combine.grid == ("M", "1", "1") and combine.block == (1024, 1, 1)
    assert partial.smem_bytes == combine.smem_bytes == 0  # static shared memory


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (G("bf16", 64, 64, transpose_w=False), r"w as \[N, K\] \(transpose_w=True\)"),
        (G("bf16", 64, 64, gated=True), "not a gated one"),
        (G("bf16", 64, 64, kernel="mma"), "runs the gemv kernel, not the mma one"),
        (G("bf16", 64, 64, gemv=V(rows=0)), "every field must be >= 1"),
        (G("bf16", 64, 64, gemv=V(rows=65, warps=2)), "rows <= warps"),
    ],
    ids=["kn", "gated", "mma", "zero-rows", "too-many-rows"],
)
def test_bad_configs_are_refused(cfg: GemmConfig, message: str) -> None:
    with make_context(), ir.Location.unknown():
        with pytest.raises(LoweringError, match=message):
            build_greedy_head(KernelModule("sm_90a"), cfg)


def test_kernels_assemble_for_sm_90a() -> None:
    configs = [
        select_gemm(G("bf16", 262144, 2304, softcap=30.0), 1),
        select_gemm(G("f32", 1000, 256, has_bias=True), 8),
    ]
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a")
        infos = [info for cfg in configs for info in build_greedy_head(km, cfg)]
        toolchain.to_nvvm(km.module)
        ptx = toolchain.to_ptx(km.module)
    report = toolchain.resource_usage(ptx, "sm_90a")
    for info in infos:
        assert f".entry {info.name}(" in ptx
    frames = [f for f in report.split("Function properties")[1:]]
    assert len(frames) == len(infos)
    assert all("0 bytes stack frame, 0 bytes spill stores" in f for f in frames), report
    assert "ld.global.v4.b32" in ptx and "shfl.sync.bfly.b32" in ptx
