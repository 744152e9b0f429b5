"""What differs between GPU vendors for the kernel generators, in one small object.

The generators in ``kernels/`` build ``gpu.func``s from target-neutral ops (gpu, scf, arith,
math, memref, vector). The few places where the vendor shows through ask the ``Device`` of
their ``KernelModule``:

- the ``gpu.module``'s target attribute (``#nvvm.target`` or ``#rocdl.target``);
- the threads of one wave (``wave``: 32 on NVIDIA and RDNA, 64 on CDNA). The shared SIMT
  kernels reduce within groups of 32 lanes (``gpu.shuffle`` with width 32), which is a whole
  warp on NVIDIA and half a wave64 on CDNA, so they run unchanged on both;
- a correctly rounded f32 square root (libdevice's ``__nv_fsqrt_rn``; ``math.sqrt`` on AMD,
  which the ROCm lowering makes ``llvm.sqrt.f32``, correctly rounded there by default);
- a butterfly shuffle over 32 lanes;
- how a k tile is staged from global into shared memory (``stage_tiles``: cp.async copies, a
  commit group and a wait on NVIDIA; loads into registers and stores into LDS on AMD) and how
  the staged main loop is pipelined (``pipeline``);
- which module builds each GEMM family (the tensor-core family is ``gemm_mma`` on NVIDIA and
  the MFMA/WMMA kernel of ``lowering/rocm`` on AMD) and the tile of one whose config names
  none, and whether attention has a matrix-core kernel (``mma_attention``) or runs the SIMT
  one for every dtype.

``nvidia(arch)`` is the device a ``KernelModule`` gets unless it is given another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from mlir import ir
from mlir.dialects import arith as _arith
from mlir.dialects import llvm, nvgpu, nvvm

if TYPE_CHECKING:
    from .kernel import KernelModule
    from .kernels.gemm import GemmConfig, GemmTile
    from .kernels.gemm_ir import Ix
    from .kernels.gemm_tiles import TileCopies

# One staged operand of a main loop: its copies, the global buffer, the shared view.
StagedTile = tuple["TileCopies", ir.Value, ir.Value]


class Device(Protocol):
    kind: str  # "cuda", "rocm"
    arch: str  # "sm_90a", "gfx942"
    wave: int  # threads that execute in lock step (warp or wavefront)
    mma_attention: bool  # whether attention has a matrix-core kernel on this device
    # Whether the decode step's GEMMs take the bandwidth-bound GEMV (its AMD build spills
    # registers at its tile, which the code object's limits refuse).
    decode_gemv: bool
    # Whether a kernel may start before the one before it ends (programmatic dependent launch,
    # ``grid_dependency.py``).
    programmatic_launch: bool
    # Whether kernels may ask L2 for global memory in bulk (``cp.async.bulk.prefetch.L2``,
    # ``kernels/l2_prefetch.py``).
    l2_bulk_prefetch: bool

    @property
    def wgmma(self) -> bool:
        """Whether the wgmma kernels apply: the GEMM outside the decode step (wgmma + TMA)
        and flash attention."""
        ...

    def target_attribute(self) -> ir.Attribute:
        """The ``gpu.module`` target attribute."""
        ...

    def sqrt(self, km: KernelModule, value: ir.Value) -> ir.Value:
        """A correctly rounded f32 square root."""
        ...

    def shuffle_xor(self, value: ir.Value, mask: int) -> ir.Value:
        """The value of lane ``lane ^ mask`` within the lane's group of 32."""
        ...

    def stage_tiles(self, ix: Ix, kt: ir.Value, tiles: Sequence[StagedTile]) -> None:
        """Moves k tile ``kt`` of every operand into its shared view (inside a main loop,
        before the barrier that makes the tiles visible to the block)."""
        ...

    def pipeline(self, function: ir.Operation, stages: int) -> None:
        """Software-pipelines the marked main loop of ``function`` ``stages`` deep."""
        ...

    def gemm_module(self, family: str) -> str:
        """The module that builds the GEMM kernel family ``family`` (``mma``, ``simt``,
        ``gemv``)."""
        ...

    def gemm_tile(self, cfg: GemmConfig) -> GemmTile | None:
        """The tile of a GEMM whose config names none (None: ``gemm.default_tile``)."""
        ...


def libdevice_call(km: KernelModule, function: str, args: list[ir.Value]) -> ir.Value:
    """A call of libdevice's f32 ``function`` (declared in the module once; linked by the
    serializer)."""
    f32_type = ir.F32Type.get()
    declared = any(
        "sym_name" in op.attributes and ir.StringAttr(op.attributes["sym_name"]).value == function
        for op in km.body.operations
    )
    if not declared:
        signature = ir.Type.parse(f"!llvm.func<f32 ({', '.join(['f32'] * len(args))})>")
        with ir.InsertionPoint.at_block_begin(km.body):
            llvm.LLVMFuncOp(function, ir.TypeAttr.get(signature), sym_visibility="private")
    return llvm.call(f32_type, args, [], [], callee=ir.FlatSymbolRefAttr.get(function))


class Nvidia:
    """An NVIDIA GPU of compute capability ``arch`` (``sm_80``, ``sm_90a``)."""

    kind = "cuda"
    wave = 32
    mma_attention = True
    decode_gemv = True

    def __init__(self, arch: str) -> None:
        self.arch = arch
        # griddepcontrol and the L2 bulk prefetch are sm_90 instructions
        self.programmatic_launch = arch.startswith("sm_9")
        self.l2_bulk_prefetch = arch.startswith("sm_9")

    @property
    def wgmma(self) -> bool:
        """Whether the prefill GEMMs and attention take the wgmma kernels (``gemm_wgmma``,
        ``attention_wgmma``): sm_90a only, as wgmma is an arch-specific instruction of that
        target."""
        return self.arch == "sm_90a"

    def target_attribute(self) -> ir.Attribute:
        features = "+ptx80" if self.arch.startswith("sm_9") else "+ptx70"
        return ir.Attribute.parse(f'#nvvm.target<chip = "{self.arch}", features = "{features}">')

    def sqrt(self, km: KernelModule, value: ir.Value) -> ir.Value:
        # ``math.sqrt`` becomes libdevice's ``__nv_sqrtf``, which nvvm-reflect turns into the
        # approximate instruction unless the module asks for precise square roots (and
        # 1/approx-sqrt then folds into ``rsqrt.approx``); ``__nv_fsqrt_rn`` is the rounded
        # one whatever the flags.
        return libdevice_call(km, "__nv_fsqrt_rn", [value])

    def shuffle_xor(self, value: ir.Value, mask: int) -> ir.Value:
        i32 = ir.IntegerType.get_signless(32)

        def const(number: int) -> ir.Value:
            return _arith.constant(i32, number)  # type: ignore[call-arg]

        return nvvm.shfl_sync(
            value.type, const(-1), value, const(mask), const(31), nvvm.ShflKind.bfly
        )

    def stage_tiles(self, ix: Ix, kt: ir.Value, tiles: Sequence[StagedTile]) -> None:
        tokens: list[ir.Value] = []
        for copies, source, view in tiles:
            tokens += copies.issue(ix, kt, source, view)
        nvgpu.device_async_wait(nvgpu.device_async_create_group(tokens))

    def pipeline(self, function: ir.Operation, stages: int) -> None:
        from .schedule_async_copies import Options, schedule_async_copies

        schedule_async_copies(function, Options(stages=stages))

    def gemm_module(self, family: str) -> str:
        return f"tessera.lowering.cuda.kernels.gemm_{family}"

    def gemm_tile(self, cfg: GemmConfig) -> GemmTile | None:
        return None


def nvidia(arch: str) -> Nvidia:
    return Nvidia(arch)
