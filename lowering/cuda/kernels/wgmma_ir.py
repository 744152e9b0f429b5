"""What the sm_90a kernels (``gemm_wgmma``, ``attention_wgmma``) share for warpgroup MMAs:
the 1024-byte-aligned start of the dynamic shared memory, the 128-byte-swizzled matrix
descriptors, the shared-memory form of ``wgmma.mma_async`` (A and B read through
descriptors, f32 accumulators), and the mbarriers of their pipelines (a group per role,
the phase of a stage's barrier at a loop index, the wait on it).

In the 128-byte swizzle each 128-byte row's 16-byte unit u sits at unit ``u xor (row mod
8)``; wgmma undoes it from the address bits, so a tile must start on a 1024-byte boundary
(the swizzle's period: 8 rows of 128 bytes)."""

from __future__ import annotations

from mlir import ir
from mlir.dialects import arith, memref, nvgpu, nvvm

from ..kernel import WORKGROUP
from . import attention_ir as a

SWIZZLE_BYTES = 1024  # 8 rows of 128 bytes: the swizzle's period and the descriptors' stride
WGMMA_M = 64  # rows of one wgmma
K_STEP = 16  # wgmma k for 16-bit inputs
TICKS = 10_000_000  # mbarrier try-wait hint


def i64(value: ir.Value) -> ir.Value:
    return arith.index_cast(ir.IntegerType.get_signless(64), value)


def f32_struct(count: int) -> ir.Type:
    """The accumulator type of a wgmma whose thread holds ``count`` f32."""
    return ir.Type.parse("!llvm.struct<(" + ", ".join(["f32"] * count) + ")>")


def swizzle_aligned(smem: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
    """(base, aligned, shift) of the dynamic shared memory ``smem``: its i64 address, the
    next multiple of 1024 bytes at or after it, and the distance between them (an index):
    the kernels place their tiles from ``aligned`` on, and reserve SWIZZLE_BYTES for it."""
    i64_type = ir.IntegerType.get_signless(64)
    base = i64(memref.extract_aligned_pointer_as_index(smem))
    aligned = arith.andi(
        arith.addi(base, a.const(SWIZZLE_BYTES - 1, i64_type)),
        a.const(-SWIZZLE_BYTES, i64_type),
    )
    return base, aligned, arith.index_cast(a.index_type(), arith.subi(aligned, base))


def descriptor(address: ir.Value, leading: int = 16) -> ir.Value:
    """A 128-byte-swizzled wgmma matrix descriptor for the tile at shared ``address`` (an
    i64 byte address, 1024-aligned): start >> 4 in bits 0-13, the leading offset >> 4 in
    16-29 (the distance between 64-element chunks of an N-major operand; unused by K-major
    ones, 16 bytes by convention), the 1024-byte stride between 8-row groups >> 4 in 32-45,
    swizzle mode 1 in 62-63."""
    i64_type = ir.IntegerType.get_signless(64)
    fields = ((leading >> 4) << 16) | ((SWIZZLE_BYTES >> 4) << 32) | (1 << 62)
    start = arith.andi(arith.shrui(address, a.const(4, i64_type)), a.const(0x3FFF, i64_type))
    return arith.ori(start, a.const(fields, i64_type))


def wgmma(
    dtype: str,
    n: int,
    acc: ir.Value,
    a_desc: ir.Value,
    b_desc: ir.Value,
    accumulate: bool = True,
) -> ir.Value:
    """One ``wgmma.mma_async.m64n{n}k16`` with both operands K-major in shared memory (A
    layout row, B col): ``acc + A·B``, or ``A·B`` where ``accumulate`` is False."""
    attr = ir.Attribute.parse
    scale = "one" if accumulate else "zero"
    return nvvm.WgmmaMmaAsyncOp(
        acc.type,
        acc,
        a_desc,
        b_desc,
        attr(f"#nvvm.shape<m = {WGMMA_M}, n = {n}, k = {K_STEP}>"),
        attr(f"#nvvm.wgmma_type<{dtype}>"),
        attr(f"#nvvm.wgmma_type<{dtype}>"),
        attr("#nvvm.wgmma_type<f32>"),
        attr(f"#nvvm.wgmma_scale_out<{scale}>"),
        attr("#nvvm.wgmma_scale_in<one>"),
        attr("#nvvm.wgmma_scale_in<one>"),
        attr("#nvvm.mma_layout<row>"),
        attr("#nvvm.mma_layout<col>"),
    ).result


def mbarrier_group(count: int) -> ir.Value:
    """``count`` mbarriers in shared memory (one per pipeline stage)."""
    return nvgpu.mbarrier_create(
        ir.Type.parse(f"!nvgpu.mbarrier.group<memorySpace = {WORKGROUP}, num_barriers = {count}>")
    )


def phase_parity(index: ir.Value, stages: int, behind: int = 0) -> ir.Value:
    """The phase parity of a stage's barrier at loop index ``index`` (0 for the loop's first
    tile): its (index / stages - behind)th completion."""
    round_ = a.div(index, stages)
    if behind:
        round_ = a.sub(round_, behind)
    return a.cmp("ne", a.rem(round_, 2), 0)


def wait_parity(group: ir.Value, parity: ir.Value, stage: ir.Value) -> None:
    """Waits until barrier ``stage`` of ``group`` completes the phase of ``parity``."""
    nvgpu.MBarrierTryWaitParityOp(group, parity, a.idx(TICKS), mbarId=stage)
