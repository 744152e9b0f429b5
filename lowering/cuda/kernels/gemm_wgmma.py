"""A Hopper GEMM (sm_90a): ``y = x · wᵀ`` with x [M, K] and w [N, K] (both K-contiguous, as
torch's Linear stores w), bf16 or f16 in, f32 accumulators, ``y`` [M, N] rounded once; the
gated form (the MLP's gate and up projections) ``y = act(x · wᵀ) · (x · w2ᵀ)``, and an
optional softcap ``c · tanh(y / c)``, applied to the accumulators before the rounding.

One warpgroup (128 threads) computes a block_m x block_n tile of y (128 x 128 by default):

- **TMA**: the thread 0 of the block issues ``cp.async.bulk.tensor`` loads of the x and w tiles
  (block_k = 64 elements, 128 bytes, of each row) into shared memory with the tensor maps'
  128-byte swizzle; each of ``stages`` buffers has an mbarrier that the loads complete
  (``arrive.expect_tx`` with the tile's bytes). Rows and columns past the tensor's edge read
  as zeros (the maps' out-of-bounds fill), so M, N and K need no multiple of the tile.
- **wgmma**: per k tile, ``wgmma.mma_async.m64n{block_n}k16`` reads both operands from shared
  memory through matrix descriptors (K-major, 128-byte swizzle: 8 rows of 128 bytes make a
  1024-byte group, the stride between groups; a k step of 16 moves the start by 32 bytes),
  two m64 halves and four k steps per tile, committed as one group.
- **pipelining**: the loads run ``stages - 1`` tiles ahead of the tile being multiplied, and
  one wgmma group stays in flight while the next tile's is issued (``wait_group 1``); a
  buffer is refilled once the group that read it has completed.
- **epilogue**: the accumulators stay in the wgmma fragment (warp w of the warpgroup owns rows
  16w..16w+15 of each m64 half; lane l holds columns 8j + 2(l mod 4) and the next, rows l/4
  and l/4 + 8) and are rounded and stored straight to global memory, two columns at a time.

``consumers=2`` is the warp-specialized form (``_warp_specialized``): 384 threads, warpgroup 0
producing (the TMA loads, each stage refilled once both consumers have released it through
an ``empty`` mbarrier) and warpgroups 1 and 2 each multiplying and storing their own half of
the tile's rows; ``setmaxnreg`` moves registers from the producer to the consumers.

The tensor maps are kernel parameters (pointers to the 128-byte ``CUtensorMap`` each, made by
``tessera.runtime.tensor_map``): x's box is [block_m, 64], w's [block_n, 64]. Shared memory:
stages x (block_m + block_n) x 64 x 2 bytes, plus 1024 for aligning the first buffer to the
swizzle's 1024-byte period.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, gpu, llvm, memref, nvgpu, nvvm, scf, vector

from ..kernel import WORKGROUP, KernelInfo, KernelModule, Param, tensormap_value
from . import attention_ir as a
from .gemm import ACTIVATIONS
from .gemm_epilogue import activation
from .gemm_ir import Ix
from .gemm_tiles import block_origin
from .wgmma_ir import (
    K_STEP,
    SWIZZLE_BYTES,
    WGMMA_M,
    descriptor,
    f32_struct,
    i64,
    mbarrier_group,
    phase_parity,
    swizzle_aligned,
    wait_parity,
    wgmma,
)

WARPGROUP = 128
BLOCK_K = 64  # elements: 128 bytes of a 16-bit row, the 128-byte swizzle's width
MAX_ACCUMULATORS = 160  # per consumer thread, next to its addressing, in 232 registers


@dataclass(frozen=True)
class WgmmaConfig:
    """A GEMM's static facts: ``dtype`` (bf16 or f16), N and K, the block tile, the pipeline
    depth and the row tiles of a launch-order group."""

    dtype: str
    N: int
    K: int
    block_m: int = 128
    block_n: int = 128
    stages: int = 4
    group_m: int = 8
    gated: bool = False
    activation: str = "gelu_tanh"
    softcap: float | None = None
    consumers: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in ("bf16", "f16"):
            raise ValueError(f"the wgmma GEMM takes bf16 or f16, got {self.dtype}")
        if self.block_m % WGMMA_M or not 8 <= self.block_n <= 256 or self.block_n % 8:
            raise ValueError(f"block {self.block_m}x{self.block_n} is not a wgmma tile")
        if self.K % 8:
            raise ValueError(f"K = {self.K}: a tensor map's row pitch must be 16-byte aligned")
        if self.stages < 2 or self.group_m < 1:
            raise ValueError("the pipeline needs two stages at least, a group one row tile")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
        if self.consumers not in (1, 2) or self.block_m % (WGMMA_M * self.consumers):
            raise ValueError(
                f"{self.consumers} consumer warpgroup(s) cannot split {self.block_m} rows "
                f"(one or two warpgroups of a multiple of {WGMMA_M} rows each)"
            )
        if self.consumers > 1 and self.accumulators > MAX_ACCUMULATORS:
            raise ValueError(
                f"a {self.block_m}x{self.block_n} tile over {self.consumers} warpgroups holds "
                f"{self.accumulators} accumulators a thread; at most {MAX_ACCUMULATORS} fit"
            )

    @property
    def name(self) -> str:
        epilogue = f"_{self.activation}" if self.gated else ""
        if self.softcap is not None:
            epilogue += f"_cap{self.softcap:g}".replace(".", "p")
        split = f"c{self.consumers}" if self.consumers > 1 else ""
        return (
            f"gemm_wgmma_{self.dtype}_n{self.N}_k{self.K}_nk{epilogue}_"
            f"{self.block_m}x{self.block_n}x{BLOCK_K}s{self.stages}g{self.group_m}{split}"
        )

    @property
    def rows_per_consumer(self) -> int:
        return self.block_m // self.consumers

    @property
    def accumulators(self) -> int:
        """f32 accumulators per consumer thread."""
        return self.rows_per_consumer // WGMMA_M * self.operands * self.block_n // 2

    @property
    def threads(self) -> int:
        """One warpgroup, or a producer warpgroup and the consumers."""
        return WARPGROUP * (self.consumers + (1 if self.consumers > 1 else 0))

    @property
    def operands(self) -> int:
        """The w operands: two (gate and up) in the gated form."""
        return 2 if self.gated else 1

    @property
    def a_bytes(self) -> int:
        return self.block_m * BLOCK_K * 2

    @property
    def b_bytes(self) -> int:
        return self.block_n * BLOCK_K * 2

    @property
    def stage_bytes(self) -> int:
        return self.a_bytes + self.operands * self.b_bytes

    @property
    def smem_bytes(self) -> int:
        return self.stages * self.stage_bytes + SWIZZLE_BYTES


def build_wgmma_gemm(km: KernelModule, cfg: WgmmaConfig) -> KernelInfo:
    """Adds the kernel (once per config); returns its launch contract. Parameters: the
    tensor maps ``x_map``, ``w_map`` (and ``w2_map``, gated), ``y`` [M, N], ``M`` (i32).
    Grid: cdiv(M, block_m) · cdiv(N, block_n) blocks, numbered along M first within groups
    of ``group_m`` row tiles (so the blocks running together share each w tile through L2:
    an LM head's 1 GB of weights is then read once, not once per row tile)."""
    info = KernelInfo(
        cfg.name,
        (
            Param.tensormap("x_map", cfg.dtype, cfg.block_m, BLOCK_K),
            Param.tensormap("w_map", cfg.dtype, cfg.block_n, BLOCK_K),
            *([Param.tensormap("w2_map", cfg.dtype, cfg.block_n, BLOCK_K)] if cfg.gated else []),
            Param.buffer("y", cfg.dtype),
            Param.scalar("M", "i32"),
        ),
        (f"cdiv(M, {cfg.block_m}) * {-(-cfg.N // cfg.block_n)}", "1", "1"),
        (cfg.threads, 1, 1),
        cfg.smem_bytes,
    )
    if not km.has_kernel(info.name):
        _emit(km, cfg, info)
    return info


class _Kernel:
    """What both forms of the kernel share: the tensor maps, the 1024-aligned dynamic shared
    memory, the block's tile origin, the stages' layout ([x | w (| w2)] per stage), the TMA
    loads of one k tile and the wgmmas that consume one."""

    def __init__(self, cfg: WgmmaConfig, args: dict[str, ir.Value], info: KernelInfo) -> None:
        self.cfg = cfg
        self.args = args
        self.element = ir.BF16Type.get() if cfg.dtype == "bf16" else ir.F16Type.get()
        self.space = ir.Attribute.parse(WORKGROUP)
        self.maps = {
            p.name: tensormap_value(args[p.name], p) for p in info.params if p.kind == "tensormap"
        }
        self.dynamic = gpu.dynamic_shared_memory(
            ir.MemRefType.get(
                [ir.ShapedType.get_dynamic_size()],
                ir.IntegerType.get_signless(8),
                memory_space=self.space,
            )
        )
        # The first buffer starts at the next multiple of 1024 bytes (the swizzle's period).
        self.base, _, self.shift = swizzle_aligned(self.dynamic)
        self.tid = gpu.thread_id(gpu.Dimension.x)
        self.m0, self.n0 = block_origin(
            Ix.at_top(), a.to_index(args["M"]), cfg.N, cfg.block_m, cfg.block_n, cfg.group_m
        )
        self.w_maps = [self.maps["w_map"], *([self.maps["w2_map"]] if cfg.gated else [])]
        self.acc_type = f32_struct(cfg.block_n // 2)  # per thread per m64 half
        self.tiles = -(-cfg.K // BLOCK_K)

    def offsets(self, stage: ir.Value) -> tuple[ir.Value, list[ir.Value]]:
        """Byte offsets of a stage's x tile and w tiles."""
        cfg = self.cfg
        a_at = a.add(self.shift, a.mul(stage, cfg.stage_bytes))
        return a_at, [a.add(a_at, cfg.a_bytes + i * cfg.b_bytes) for i in range(cfg.operands)]

    def load(
        self, full: ir.Value, tile: ir.Value, stage: ir.Value, predicate: ir.Value | None
    ) -> None:
        """TMA loads of k tile ``tile`` into ``stage``, completing on ``full[stage]``."""
        cfg = self.cfg
        a_at, b_ats = self.offsets(stage)
        k0 = a.mul(tile, BLOCK_K)
        copies = [(cfg.block_m, a_at, self.maps["x_map"], self.m0)]
        copies += [
            (cfg.block_n, at, tensor_map, self.n0)
            for at, tensor_map in zip(b_ats, self.w_maps, strict=True)
        ]
        for rows, at, tensor_map, coordinate in copies:
            view = memref.view(
                ir.MemRefType.get([rows, BLOCK_K], self.element, memory_space=self.space),
                self.dynamic,
                at,
                [],
            )
            nvgpu.TmaAsyncLoadOp(
                view,
                full,
                tensor_map,
                coordinates=[k0, coordinate],
                mbarId=stage,
                predicate=predicate,
            )
        nvgpu.mbarrier_arrive_expect_tx(full, a.idx(cfg.stage_bytes), stage, predicate=predicate)

    def zero_accumulators(self, count: int) -> list[ir.Value]:
        zero = a.f32(0.0)
        initial = []
        for _ in range(count):
            acc = llvm.mlir_undef(self.acc_type)
            for i in range(self.cfg.block_n // 2):
                acc = llvm.insertvalue(acc, zero, [i])
            initial.append(acc)
        return initial

    def multiply(
        self, stage: ir.Value, accs: list[ir.Value], first_row: ir.Value | None = None
    ) -> list[ir.Value]:
        """Issues one k tile's wgmmas from ``stage`` (rows ``first_row``.. of its x tile, an
        m64 half per ``len(accs) / operands``) and commits them as one group."""
        cfg = self.cfg
        i64_type = ir.IntegerType.get_signless(64)
        a_at, b_ats = self.offsets(stage)
        if first_row is not None:
            a_at = a.add(a_at, a.mul(first_row, 128))
        a_address = arith.addi(self.base, i64(a_at))
        b_descs = [descriptor(arith.addi(self.base, i64(at))) for at in b_ats]
        nvvm.wgmma_fence_aligned()
        out = []
        # Accumulator h·operands + o: m64 half h against w operand o.
        for index, acc in enumerate(accs):
            half, b_desc = index // cfg.operands, b_descs[index % cfg.operands]
            a_desc = descriptor(arith.addi(a_address, a.const(half * WGMMA_M * 128, i64_type)))
            for k in range(BLOCK_K // K_STEP):
                step = a.const(k * K_STEP * 2 >> 4, i64_type)  # 32 bytes along the row
                acc = wgmma(
                    cfg.dtype,
                    cfg.block_n,
                    acc,
                    arith.addi(a_desc, step),
                    arith.addi(b_desc, step),
                )
            out.append(acc)
        nvvm.wgmma_commit_group_sync_aligned()
        return out


def _emit(km: KernelModule, cfg: WgmmaConfig, info: KernelInfo) -> None:
    args, block = km.add_launched_kernel(info)
    with ir.InsertionPoint(block):
        kernel = _Kernel(cfg, args, info)
        if cfg.consumers == 1:
            _one_warpgroup(kernel)
        else:
            _warp_specialized(kernel)
        gpu.ReturnOp([])


def _one_warpgroup(kernel: _Kernel) -> None:
    """The warpgroup's thread 0 issues the loads ``stages - 1`` tiles ahead; each buffer is
    refilled once the wgmma group that read it has completed (one group stays in flight)."""
    cfg = kernel.cfg
    i1 = ir.IntegerType.get_signless(1)
    first = a.cmp("eq", kernel.tid, 0)
    full = mbarrier_group(cfg.stages)
    for stage in range(cfg.stages):
        nvgpu.mbarrier_init(full, a.idx(1), a.idx(stage), predicate=first)
    gpu.barrier()
    for tensor_map in kernel.maps.values():
        nvgpu.tma_prefetch_descriptor(tensor_map, predicate=first)
    tiles = kernel.tiles
    for tile in range(min(cfg.stages - 1, tiles)):
        kernel.load(full, a.idx(tile), a.idx(tile), first)
    halves = cfg.block_m // WGMMA_M
    initial = kernel.zero_accumulators(halves * cfg.operands)
    loop = a.for_op(a.idx(0), a.idx(tiles), [*initial, a.const(0, i1)])
    with ir.InsertionPoint(loop.body):
        kt = loop.induction_variable
        *accs, parity = loop.inner_iter_args
        stage = a.rem(kt, cfg.stages)
        wait_parity(full, parity, stage)
        out = kernel.multiply(stage, list(accs))
        # This tile's group may still run; the previous one has read its buffer, which
        # the load below refills.
        nvvm.wgmma_wait_group_sync_aligned(1)
        following = a.add(kt, cfg.stages - 1)
        more = a.if_op(a.cmp("slt", following, tiles))
        with ir.InsertionPoint(more.then_block):
            kernel.load(full, following, a.rem(following, cfg.stages), first)
            scf.yield_([])
        wrapped = a.cmp("eq", stage, cfg.stages - 1)
        parity = arith.select(wrapped, arith.xori(parity, a.const(1, i1)), parity)
        scf.yield_([*out, parity])
    nvvm.wgmma_wait_group_sync_aligned(0)
    accs = list(loop.results)[: halves * cfg.operands]
    _store(cfg, kernel.args, accs, kernel.tid, kernel.m0, kernel.n0, kernel.element)


PRODUCER_REGISTERS = 40
CONSUMER_REGISTERS = 232


def _warp_specialized(kernel: _Kernel) -> None:
    """Warpgroup 0 produces: its thread 0 waits for a stage to be released (``empty``),
    then loads the next k tile into it (``full``); the other warpgroups consume, each its
    own ``rows_per_consumer`` rows of the tile: wait for ``full``, issue the tile's wgmmas,
    and once the previous tile's group has completed release that tile's stage (one arrival
    per consumer). The producer gives up registers (``setmaxnreg``) to the consumers."""
    cfg = kernel.cfg
    tid, tiles = kernel.tid, kernel.tiles
    first = a.cmp("eq", tid, 0)
    full, empty = mbarrier_group(cfg.stages), mbarrier_group(cfg.stages)
    for stage in range(cfg.stages):
        nvgpu.mbarrier_init(full, a.idx(1), a.idx(stage), predicate=first)
        nvgpu.mbarrier_init(empty, a.idx(cfg.consumers), a.idx(stage), predicate=first)
    gpu.barrier()
    for tensor_map in kernel.maps.values():
        nvgpu.tma_prefetch_descriptor(tensor_map, predicate=first)
    warpgroup = a.div(tid, WARPGROUP)
    role = scf.IfOp(a.cmp("eq", warpgroup, 0), [], has_else=True)  # type: ignore[call-arg]
    with ir.InsertionPoint(role.then_block):
        nvvm.SetMaxRegisterOp(PRODUCER_REGISTERS, nvvm.SetMaxRegisterAction.decrease)
        leader = a.if_op(first)
        with ir.InsertionPoint(leader.then_block):
            loop = a.for_op(a.idx(0), a.idx(tiles), [])
            with ir.InsertionPoint(loop.body):
                kt = loop.induction_variable
                stage = a.rem(kt, cfg.stages)
                refill = a.if_op(a.cmp("sge", kt, cfg.stages))
                with ir.InsertionPoint(refill.then_block):
                    wait_parity(empty, phase_parity(kt, cfg.stages, behind=1), stage)
                    scf.yield_([])
                kernel.load(full, kt, stage, None)
                scf.yield_([])
            scf.yield_([])
        scf.yield_([])
    with ir.InsertionPoint(role.else_block):
        nvvm.SetMaxRegisterOp(CONSUMER_REGISTERS, nvvm.SetMaxRegisterAction.increase)
        consumer = a.sub(warpgroup, 1)
        local = a.rem(tid, WARPGROUP)
        releaser = a.cmp("eq", local, 0)
        halves = cfg.rows_per_consumer // WGMMA_M
        first_row = a.mul(consumer, cfg.rows_per_consumer)
        initial = kernel.zero_accumulators(halves * cfg.operands)
        loop = a.for_op(a.idx(0), a.idx(tiles), initial)
        with ir.InsertionPoint(loop.body):
            kt = loop.induction_variable
            stage = a.rem(kt, cfg.stages)
            wait_parity(full, phase_parity(kt, cfg.stages), stage)
            out = kernel.multiply(stage, list(loop.inner_iter_args), first_row)
            nvvm.wgmma_wait_group_sync_aligned(1)
            # The previous tile's group has completed: its stage can be refilled.
            release = a.if_op(a.both(releaser, a.cmp("sgt", kt, 0)))
            with ir.InsertionPoint(release.then_block):
                previous = a.rem(a.add(kt, cfg.stages - 1), cfg.stages)
                nvgpu.mbarrier_arrive(empty, previous)
                scf.yield_([])
            scf.yield_(out)
        nvvm.wgmma_wait_group_sync_aligned(0)
        m0 = a.add(kernel.m0, first_row)
        _store(cfg, kernel.args, list(loop.results), local, m0, kernel.n0, kernel.element)
        scf.yield_([])


def _store(
    cfg: WgmmaConfig,
    args: dict[str, ir.Value],
    accs: list[ir.Value],
    tid: ir.Value,
    m0: ir.Value,
    n0: ir.Value,
    element: ir.Type,
) -> None:
    """Finishes the fragments (the gated form: act(gate) · up; then the softcap), rounds them
    and stores them, two columns per store, inside M and N."""
    f32 = a.f32_type()
    rows_total = a.to_index(args["M"])
    warp, lane = a.div(tid, 32), a.rem(tid, 32)
    pair = ir.VectorType.get([2], element)

    def finished(half: int, at: int) -> ir.Value:
        value = llvm.extractvalue(f32, accs[half * cfg.operands], [at])
        if cfg.gated:
            up = llvm.extractvalue(f32, accs[half * cfg.operands + 1], [at])
            value = arith.mulf(activation(cfg.activation, value), up)
        if cfg.softcap is not None:
            value = a.fmul(a.tanh(a.fmul(value, 1.0 / cfg.softcap)), cfg.softcap)
        return arith.truncf(element, value)

    for half in range(len(accs) // cfg.operands):
        row0 = a.add(a.add(m0, half * WGMMA_M), a.add(a.mul(warp, 16), a.div(lane, 4)))
        for j in range(cfg.block_n // 8):
            column = a.add(n0, a.add(8 * j, a.mul(a.rem(lane, 4), 2)))
            for upper in (0, 1):
                row = a.add(row0, 8 * upper)
                values = [finished(half, 4 * j + 2 * upper + e) for e in (0, 1)]
                inside = a.both(a.cmp("slt", row, rows_total), a.cmp("slt", column, cfg.N))
                edge = a.if_op(inside)
                with ir.InsertionPoint(edge.then_block):
                    at = a.add(a.mul(row, cfg.N), column)
                    if cfg.N % 2 == 0:
                        packed = vector.from_elements(pair, values)
                        vector.store(packed, args["y"], [at], alignment=4)
                    else:
                        memref.store(values[0], args["y"], [at])
                        second = a.if_op(a.cmp("slt", a.add(column, 1), cfg.N))
                        with ir.InsertionPoint(second.then_block):
                            memref.store(values[1], args["y"], [a.add(at, 1)])
                            scf.yield_([])
                    scf.yield_([])
