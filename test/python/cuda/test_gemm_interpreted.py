"""The GEMM kernels (tensor-core ``mma``, f32 ``simt``, ``gemv``) run without a GPU: the kernel
interpreter (``gpu_interpreter``) executes each gpu.func, after ``tessera-schedule-async-copies``
has pipelined it, on seeded inputs, against a float64 reference of the same rounded inputs.

The bound is what the kernels promise: one rounding of the output to the dtype (unit roundoff
u: 2^-8 bf16, 2^-11 f16, 2^-24 f32) after f32 accumulation of K products (error growing as
sqrt(K) f32 ulps). The interpreter also checks every access (bounds, alignment), the barriers
and async-copy waits (races), and that the swizzled shared tiles are free of bank conflicts;
the last tests break a kernel on purpose and expect it to say so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from gpu_interpreter import KINDS, Buffer, Kernel, KernelFault, kernels_in, round_to
from mlir import ir

from tessera.context import make_context
from tessera.errors import LoweringError
from tessera.lowering.cuda.kernel import KernelInfo, KernelModule
from tessera.lowering.cuda.kernels.gemm import GemmConfig, GemmTile, GemvTile, build_gemm
from tessera.runtime import expr

G, T, V = GemmConfig, GemmTile, GemvTile
UNIT_ROUNDOFF = {"bf16": 2.0**-8, "f16": 2.0**-11, "f32": 2.0**-24}
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_tanh": lambda v: torch.nn.functional.gelu(v, approximate="tanh"),
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
}
slow = pytest.mark.slow

# (config, M, weight scale): every family, layout, epilogue and tiling the generators offer,
# with ragged M, N and K so that every edge path runs.
CASES = [
    pytest.param(G("bf16", 200, 72), 37, 1.0, id="mma-bf16"),
    pytest.param(G("f16", 200, 72), 37, 1.0, id="mma-f16"),
    pytest.param(G("bf16", 202, 74, transpose_w=False), 37, 1.0, id="mma-bf16-kn-ragged"),
    pytest.param(G("f16", 202, 74, transpose_w=False), 37, 1.0, id="mma-f16-kn", marks=slow),
    pytest.param(G("bf16", 200, 72, has_bias=True, softcap=30.0), 37, 8.0, id="mma-bias-softcap"),
    pytest.param(G("bf16", 200, 72), 1, 1.0, id="mma-one-row"),
    pytest.param(G("bf16", 136, 40), 129, 1.0, id="mma-two-row-tiles", marks=slow),
    pytest.param(G("bf16", 200, 72, gated=True), 37, 2.0, id="mma-gated-gelu-tanh"),
    pytest.param(G("bf16", 200, 72, gated=True, activation="gelu"), 37, 2.0, id="mma-gated-gelu"),
    pytest.param(
        G("bf16", 200, 72, gated=True, activation="silu"), 37, 2.0, id="mma-silu", marks=slow
    ),
    pytest.param(
        G("f16", 200, 72, gated=True, activation="silu", transpose_w=False),
        37,
        2.0,
        id="mma-f16-kn-gated-silu",
    ),
    pytest.param(G("bf16", 200, 136, tile=T(128, 128, 32, 2, 2, 1, 8)), 37, 1.0, id="1-stage"),
    pytest.param(
        G("bf16", 200, 136, tile=T(128, 128, 32, 2, 2, 2, 8)), 37, 1.0, id="2-stages", marks=slow
    ),
    pytest.param(
        G("bf16", 200, 136, tile=T(128, 128, 32, 2, 2, 5, 8)), 37, 1.0, id="5-stages", marks=slow
    ),
    pytest.param(G("bf16", 200, 72, tile=T(64, 64, 32, 2, 2, 3, 4)), 37, 1.0, id="64x64-tile"),
    pytest.param(
        G("bf16", 200, 200, tile=T(128, 128, 64, 2, 2, 3, 8)), 130, 1.0, id="k64", marks=slow
    ),
    pytest.param(
        G("bf16", 264, 64, tile=T(128, 256, 32, 2, 4, 3, 8)), 40, 1.0, id="128x256", marks=slow
    ),
    pytest.param(G("bf16", 136, 64, tile=T(256, 128, 32, 4, 2, 3, 8)), 300, 1.0, id="256x128"),
    pytest.param(
        G("bf16", 136, 64, tile=T(128, 128, 32, 4, 2, 4, 8)), 300, 1.0, id="8-warps", marks=slow
    ),
    pytest.param(
        G("bf16", 264, 128, tile=T(128, 256, 64, 2, 4, 3, 8)), 40, 1.0, id="128x256x64", marks=slow
    ),
    pytest.param(
        G("bf16", 200, 72, gated=True, tile=T(128, 128, 32, 2, 4, 3, 8)),
        37,
        2.0,
        id="gated-2x4-warps",
        marks=slow,
    ),
    pytest.param(
        G("bf16", 200, 128, gated=True, tile=T(128, 64, 64, 2, 2, 3, 8)),
        37,
        2.0,
        id="gated-k64",
        marks=slow,
    ),
    pytest.param(
        G("bf16", 200, 72, gated=True, tile=T(64, 128, 32, 2, 2, 4, 8)), 70, 2.0, id="gated-64x128"
    ),
    pytest.param(
        G("bf16", 136, 64, tile=T(128, 128, 32, 2, 2, 4, 2)), 520, 1.0, id="group-m-2", marks=slow
    ),
    pytest.param(G("f32", 200, 72), 37, 1.0, id="simt"),
    pytest.param(
        G("f32", 200, 74, transpose_w=False, has_bias=True, softcap=30.0), 37, 8.0, id="simt-kn"
    ),
    pytest.param(
        G("f32", 200, 72, gated=True, activation="gelu", tile=T(64, 128, 16, 4, 2, 3, 8)),
        37,
        2.0,
        id="simt-gated",
        marks=slow,
    ),
    pytest.param(G("bf16", 201, 73, kernel="gemv"), 3, 1.0, id="gemv-odd"),
    pytest.param(G("bf16", 201, 73, kernel="gemv", transpose_w=False), 5, 1.0, id="gemv-kn"),
    pytest.param(
        G("bf16", 200, 72, kernel="gemv", transpose_w=False, has_bias=True), 4, 1.0, id="gemv-bias"
    ),
    pytest.param(G("f32", 200, 74, kernel="gemv", softcap=30.0), 2, 8.0, id="gemv-f32-softcap"),
    pytest.param(
        G("bf16", 200, 72, kernel="gemv", gated=True, gemv=V(1, 2, 4, 4)), 1, 1.0, id="gemv-gated"
    ),
    pytest.param(G("bf16", 200, 72, kernel="gemv"), 9, 1.0, id="gemv-more-rows", marks=slow),
    pytest.param(
        G("bf16", 2048, 2048, kernel="gemv", gemv=V(1, 2, 8, 8)), 1, 1.0, id="gemv-2048", marks=slow
    ),
    # K split across the warps of a column: chunks a multiple of the splits, or not (some
    # warps' last chunk past K), several rows and columns, the gated form, early weight loads
    pytest.param(G("bf16", 96, 4096, kernel="gemv", gemv=V(1, 1, 8, 8, 4)), 1, 1.0, id="split4"),
    pytest.param(
        G("bf16", 37, 1000, kernel="gemv", gemv=V(2, 2, 4, 2, 2)), 2, 1.0, id="split2-ragged"
    ),
    pytest.param(
        G("bf16", 50, 3000, kernel="gemv", gated=True, gemv=V(1, 1, 8, 4, 8)),
        1,
        2.0,
        id="split8-gated",
    ),
    pytest.param(
        G("bf16", 40, 8192, kernel="gemv", gemv=V(1, 1, 4, 8, 4), weights_before_wait=True),
        1,
        1.0,
        id="split4-early",
    ),
    pytest.param(
        G("bf16", 512, 2048, kernel="gemv", transpose_w=False),
        1,
        1.0,
        id="gemv-kn-2048",
        marks=slow,
    ),
]


def bound(cfg: GemmConfig) -> float:
    """One rounding to the dtype plus f32 accumulation over K."""
    return UNIT_ROUNDOFF[cfg.dtype] + 2.0 * math.sqrt(cfg.K) * 2.0**-24


def build(
    cfg: GemmConfig, mutate: Callable[[ir.Operation], None] | None = None
) -> tuple[Kernel, KernelInfo]:
    """The kernel of ``cfg`` as sm_90a runs it, the grid-dependency control added (its IR
    changed by ``mutate`` first, when given)."""
    from tessera.lowering.cuda.grid_dependency import add_grid_dependency_control

    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a")
        info = build_gemm(km, cfg)
        add_grid_dependency_control(km)
        func = kernels_in(km.module)[info.name]
        if mutate is not None:
            mutate(func)
        return Kernel(func), info


def run(
    cfg: GemmConfig,
    M: int,
    scale: float = 1.0,
    seed: int = 0,
    mutate: Callable[[ir.Operation], None] | None = None,
    stats: dict[str, list[int]] | None = None,
    y_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Runs the GEMM of ``cfg`` on seeded inputs with M rows; returns (y, float64 reference)."""
    kernel, info = build(cfg, mutate)
    kind = KINDS[cfg.dtype]
    rng = np.random.default_rng(seed)
    shape = (cfg.N, cfg.K) if cfg.transpose_w else (cfg.K, cfg.N)
    x = round_to(kind, rng.standard_normal((M, cfg.K)))
    w = round_to(kind, rng.standard_normal(shape) * scale / math.sqrt(cfg.K))
    w2 = round_to(kind, rng.standard_normal(shape) * scale / math.sqrt(cfg.K))
    bias = round_to(kind, rng.standard_normal(cfg.N))
    y = Buffer.poisoned((y_rows or M) * cfg.N, cfg.dtype, "y")
    buffers = {"x": x, "w": w, "w2": w2, "bias": bias}
    bindings = {name: Buffer.of(v, cfg.dtype, name) for name, v in buffers.items()}
    bindings |= {"y": y, "M": M}  # type: ignore[dict-item]
    grid = [expr.evaluate(g, {"M": M}) for g in info.grid]
    args = [bindings[p.name] for p in info.params]
    kernel.launch(grid, info.block, info.smem_bytes, args, stats=stats)
    to64 = {name: v.astype(np.float64) for name, v in buffers.items()}
    rows = (lambda m: m) if cfg.transpose_w else (lambda m: m.T)
    acc = to64["x"] @ rows(to64["w"]).T
    if cfg.gated:
        up = to64["x"] @ rows(to64["w2"]).T
        ref = ACTIVATIONS[cfg.activation](torch.from_numpy(acc)).numpy() * up
    else:
        ref = acc + (to64["bias"] if cfg.has_bias else 0.0)
    if cfg.softcap:
        ref = cfg.softcap * np.tanh(ref / cfg.softcap)
    return y.values().reshape(-1, cfg.N)[:M].astype(np.float64), ref


@pytest.mark.parametrize(("cfg", "M", "scale"), CASES)
def test_gemm_matches_float64(cfg: GemmConfig, M: int, scale: float) -> None:
    out, ref = run(cfg, M, scale, seed=cfg.N * 1000 + M)
    assert not np.isnan(out).any(), f"{int(np.isnan(out).sum())} outputs were not written"
    error = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    assert error <= bound(cfg), f"relative error {error:.3g} (bound {bound(cfg):.3g})"


@pytest.mark.parametrize(
    "cfg", [G("bf16", 200, 136), G("bf16", 200, 136, transpose_w=False), G("f16", 136, 64)]
)
def test_swizzled_tiles_have_no_bank_conflicts(cfg: GemmConfig) -> None:
    stats: dict[str, list[int]] = {}
    run(cfg, 37, stats=stats)
    assert stats["ldmatrix"][1] > 0 and stats["cp.async"][1] > 0
    assert stats["ldmatrix"][0] == 0 and stats["cp.async"][0] == 0, stats


# -- broken on purpose: the interpreter must say what is wrong ---------------------------------


def _ops(func: ir.Operation, name: str) -> list[ir.Operation]:
    found: list[ir.Operation] = []

    def visit(op: ir.Operation) -> None:
        for region in op.regions:
            for block in region.blocks:
                for child in block.operations:
                    if child.operation.name == name:
                        found.append(child.operation)
                    visit(child.operation)

    visit(func)
    return found


def _erase(name: str, which: int) -> Callable[[ir.Operation], None]:
    def mutate(func: ir.Operation) -> None:
        _ops(func, name)[which].erase()

    return mutate


def _wait_for(groups_in_flight: int) -> Callable[[ir.Operation], None]:
    def mutate(func: ir.Operation) -> None:
        wait = _ops(func, "nvgpu.device_async_wait")[0]
        i32 = ir.IntegerType.get_signless(32)
        wait.attributes["numGroups"] = ir.IntegerAttr.get(i32, groups_in_flight)

    return mutate


PIPELINED = G("bf16", 200, 136)  # 4 stages: one barrier in the loop, one after it
UNPIPELINED = G("bf16", 200, 136, tile=T(128, 128, 32, 2, 2, 1, 8))


@pytest.mark.parametrize(
    ("cfg", "mutate"),
    [
        (PIPELINED, _erase("gpu.barrier", 0)),
        (UNPIPELINED, _erase("gpu.barrier", 0)),  # read after the copies land (RAW)
        (UNPIPELINED, _erase("gpu.barrier", 1)),  # next copies overwrite what is read (WAR)
        (G("f32", 200, 72), _erase("gpu.barrier", 0)),
    ],
    ids=["pipelined", "before-compute", "after-compute", "simt"],
)
def test_a_missing_barrier_is_a_race(cfg: GemmConfig, mutate: Callable) -> None:
    with pytest.raises(KernelFault, match=r"a race on byte .* with no gpu.barrier between"):
        run(cfg, 37, mutate=mutate)


@pytest.mark.parametrize(
    ("cfg", "mutate"),
    [(PIPELINED, _wait_for(3)), (UNPIPELINED, _erase("nvgpu.device_async_wait", 0))],
    ids=["waits-for-too-few", "no-wait"],
)
def test_reading_a_copy_in_flight_is_caught(cfg: GemmConfig, mutate: Callable) -> None:
    with pytest.raises(KernelFault, match="while an async copy into it is in flight"):
        run(cfg, 37, mutate=mutate)


def test_a_short_output_is_out_of_bounds() -> None:
    with pytest.raises(KernelFault, match=r"accesses elements \d+\.\.\+2 of y"):
        run(G("bf16", 200, 72), 37, y_rows=36)


def test_touching_memory_before_the_grid_wait_is_caught() -> None:
    """On sm_90 every kernel may start while the kernel before it runs: one that reads x
    before its griddepcontrol.wait (here moved to the kernel's end) is wrong."""
    from tessera.lowering.cuda.grid_dependency import add_grid_dependency_control

    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a")
        info = build_gemm(km, G("bf16", 201, 73, kernel="gemv"))
        add_grid_dependency_control(km)
        func = kernels_in(km.module)[info.name]
        wait = _ops(func, "nvvm.griddepcontrol")[-1]
        entry = func.regions[0].blocks[0]
        wait.move_before(list(entry.operations)[-1].operation)
        kernel = Kernel(func)
    M = 3
    bindings = {
        "x": Buffer.of(np.ones((M, 73)), "bf16", "x"),
        "w": Buffer.of(np.ones((201, 73)), "bf16", "w"),
        "y": Buffer.poisoned(M * 201, "bf16", "y"),
    }
    args = [bindings[p.name] if p.name != "M" else M for p in info.params]
    grid = [expr.evaluate(g, {"M": M}) for g in info.grid]
    with pytest.raises(KernelFault, match=r"touches x before the kernel's griddepcontrol\.wait"):
        kernel.launch(grid, info.block, info.smem_bytes, args)


# (config, M): a K loop of one iteration (every weight loaded before the wait), of several,
# and a masked K; the gated form (two weight sets); several rows and columns a warp.
EARLY_CASES = [
    pytest.param(G("bf16", 96, 2048, gemv=V(1, 1, 2, 8)), 1, id="one-iteration"),
    pytest.param(G("bf16", 96, 4096, gemv=V(1, 1, 2, 8)), 1, id="two-iterations"),
    pytest.param(G("bf16", 201, 73, gemv=V(4, 2, 4, 4)), 3, id="masked-k-4-rows"),
    pytest.param(G("bf16", 200, 1024, gated=True, gemv=V(1, 1, 4, 4)), 1, id="gated"),
    pytest.param(G("f16", 64, 520, has_bias=True, softcap=30.0, gemv=V(2, 2, 2, 2)), 2, id="f16"),
]


@pytest.mark.parametrize(("cfg", "M"), EARLY_CASES)
def test_a_gemv_reading_weights_before_its_wait_matches_the_plain_one(
    cfg: GemmConfig, M: int
) -> None:
    """The GEMV whose first weight loads go out before its grid wait computes what the one
    waiting at its top does, bit for bit, and the interpreter lets it load only w early."""
    plain = dataclasses.replace(cfg, kernel="gemv")
    early = dataclasses.replace(plain, weights_before_wait=True)
    _, info = build(early)
    assert info.reads_before_wait == early.weights
    y_plain, ref = run(plain, M, seed=5)
    y_early, _ = run(early, M, seed=5)
    assert not np.isnan(y_early).any()
    np.testing.assert_array_equal(y_early, y_plain)
    error = float(np.linalg.norm(y_early - ref) / np.linalg.norm(ref))
    assert error <= bound(cfg), error


def test_a_gemv_reading_weights_early_still_waits_before_x() -> None:
    """Moved to the kernel's end, the early GEMV's wait comes after its x loads: a fault."""

    def wait_last(func: ir.Operation) -> None:
        wait = [op for op in _ops(func, "nvvm.griddepcontrol") if "wait" in str(op)]
        assert len(wait) == 1
        wait[0].move_before(list(func.regions[0].blocks[0].operations)[-1].operation)

    cfg = G("bf16", 96, 4096, kernel="gemv", gemv=V(1, 1, 2, 8), weights_before_wait=True)
    with pytest.raises(KernelFault, match=r"touches x before the kernel's griddepcontrol\.wait"):
        run(cfg, 1, mutate=wait_last)


def test_a_gemv_reading_early_refuses_a_buffer_that_launches_write() -> None:
    cfg = G("bf16", 96, 2048, kernel="gemv", gemv=V(1, 1, 2, 8), weights_before_wait=True)
    kernel, info = build(cfg)
    args = {
        "x": Buffer.of(np.ones((1, 2048)), "bf16", "x"),
        "w": Buffer.poisoned(96 * 2048, "bf16", "t3"),
        "y": Buffer.poisoned(96, "bf16", "y"),
        "M": 1,
    }
    grid = [expr.evaluate(g, {"M": 1}) for g in info.grid]
    with pytest.raises(KernelFault, match=r"reads t3 before its griddepcontrol\.wait"):
        kernel.launch(grid, info.block, 0, [args[p.name] for p in info.params])


def test_reading_weights_early_needs_programmatic_launch_and_rows_of_w() -> None:
    cfg = G("bf16", 96, 2048, kernel="gemv", weights_before_wait=True)
    with make_context(), ir.Location.unknown():
        with pytest.raises(LoweringError, match="sm_80 has no programmatic launch"):
            build_gemm(KernelModule("sm_80"), cfg)
        with pytest.raises(LoweringError, match=r"only with w as \[N, K\]"):
            build_gemm(KernelModule("sm_90a"), dataclasses.replace(cfg, transpose_w=False))


def test_only_weights_are_read_before_the_wait() -> None:
    """A decode GEMV reads w early only where w is a model weight, and the plan refuses to
    bind an early-reading kernel's w to anything else (an arena slice a kernel writes)."""
    from tessera.lowering.cuda.kernels.gemm_gemv import reading_weights_early
    from tessera.lowering.cuda.plan import LaunchPlan
    from tessera.runtime.manifest import ArgRef

    cfg = G("bf16", 96, 2048, kernel="gemv", gemv=V(1, 1, 2, 8))
    weight, slice_ = ArgRef("weight", "layers.0.w"), ArgRef("buffer", "t3")
    with make_context(), ir.Location.unknown():
        hopper, ampere = KernelModule("sm_90a"), KernelModule("sm_80")
        assert reading_weights_early(cfg, hopper.device, [weight]).weights_before_wait
        assert not reading_weights_early(cfg, hopper.device, [weight, slice_]).weights_before_wait
        assert not reading_weights_early(cfg, ampere.device, [weight]).weights_before_wait
        eight = dataclasses.replace(cfg, gemv=V(8, 2, 4, 4))
        assert not reading_weights_early(eight, hopper.device, [weight]).weights_before_wait
        kn = dataclasses.replace(cfg, transpose_w=False)
        assert not reading_weights_early(kn, hopper.device, [weight]).weights_before_wait
        info = build_gemm(hopper, dataclasses.replace(cfg, weights_before_wait=True))
        plan = LaunchPlan(hopper, None, {})  # type: ignore[arg-type]
        bindings = {"x": ArgRef("buffer", "t1"), "y": ArgRef("buffer", "t2"), "M": 1}
        plan.launch(info, {**bindings, "w": weight})
        with pytest.raises(LoweringError, match=r"'w' is read before .* not 't3'"):
            plan.launch(info, {**bindings, "w": slice_})


def test_launching_with_another_block_size_is_refused() -> None:
    kernel, info = build(G("bf16", 200, 72))
    with pytest.raises(KernelFault, match="known_block_size"):
        kernel.launch((1, 1, 1), (256, 1, 1), info.smem_bytes, [])


# -- several GEMVs of one x in one launch ------------------------------------------------------


@pytest.mark.parametrize(
    ("widths", "M", "rows", "early"),
    [
        ((201, 33, 33), 1, 1, False),
        ((96, 48), 5, 8, False),
        ((201, 33, 33), 1, 1, True),
        ((40, 24, 24), 1, 0, True),
    ],
    ids=["qkv-1-row", "qk-8", "qkv-weights-before-wait", "split-k-first"],
)
def test_sibling_gemvs_match_float64(
    widths: tuple[int, ...], M: int, rows: int, early: bool
) -> None:
    from tessera.lowering.cuda.grid_dependency import add_grid_dependency_control
    from tessera.lowering.cuda.kernels.gemm import select_gemm
    from tessera.lowering.cuda.kernels.gemv_siblings import GemvSiblings, build_gemv_siblings

    K = 72
    parts = tuple(
        dataclasses.replace(select_gemm(G("bf16", n, K), rows or 1), weights_before_wait=early)
        for n in widths
    )
    if rows == 0:  # the first GEMV splits its K over two warps, the others do not
        split = dataclasses.replace(parts[0].gemv, warps=2, splits=2)
        parts = (dataclasses.replace(parts[0], gemv=split), *parts[1:])
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a")
        info = build_gemv_siblings(km, GemvSiblings(parts))
        add_grid_dependency_control(km)
        kernel = Kernel(kernels_in(km.module)[info.name])
    assert info.reads_before_wait == (tuple(f"w{i}" for i in range(len(widths))) if early else ())
    kind = KINDS["bf16"]
    rng = np.random.default_rng(sum(widths) * 100 + M)
    x = round_to(kind, rng.standard_normal((M, K)))
    bindings: dict[str, object] = {"x": Buffer.of(x, "bf16", "x"), "M": M}
    refs = []
    for i, n in enumerate(widths):
        w = round_to(kind, rng.standard_normal((n, K)) / math.sqrt(K))
        bindings[f"w{i}"] = Buffer.of(w, "bf16", f"w{i}")
        bindings[f"y{i}"] = Buffer.poisoned(M * n, "bf16", f"y{i}")
        refs.append(x.astype(np.float64) @ w.astype(np.float64).T)
    grid = [expr.evaluate(g, {"M": M}) for g in info.grid]
    kernel.launch(grid, info.block, info.smem_bytes, [bindings[p.name] for p in info.params])
    for i, ref in enumerate(refs):
        out = bindings[f"y{i}"].values().reshape(M, -1).astype(np.float64)  # type: ignore[attr-defined]
        assert not np.isnan(out).any(), f"y{i}: {int(np.isnan(out).sum())} outputs not written"
        error = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
        assert error <= bound(parts[i]), f"y{i}: relative error {error:.3g}"
