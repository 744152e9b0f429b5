"""What every CUDA kernel generator builds on: a ``gpu.module`` for one arch, kernels as
``gpu.func``s made with the bindings' op builders, and the launch contract each kernel states.

A generator adds one ``gpu.func`` to a ``KernelModule`` and returns a ``KernelInfo``: the
kernel's parameters by name, its block shape, its dynamic shared memory, and its grid as
expressions over its own scalar parameters (``cdiv(M, 128)``). The plan builder binds those
names to buffers and to expressions over the program's symbols; the runtime evaluates them at
launch (``tessera.runtime.expr``).

Buffer parameters are flat ``memref<?xT>`` in global memory. MLIR passes a memref as its
descriptor, so on the wire one buffer is five values: allocated and aligned pointer (both the
buffer's address), offset 0, size (its element count) and stride 1 (``runtime/cuda.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import gpu, memref

from .device import Device, nvidia

# The address space of a block's shared memory.
WORKGROUP = "#gpu.address_space<workgroup>"
# Element types of buffers by their MLIR spelling.
SCALAR_KINDS = ("i32", "i64", "f32")


@dataclass(frozen=True)
class Param:
    """One kernel parameter: a buffer of ``dtype`` elements (``kind="buffer"``) or a scalar
    of kind ``i32``, ``i64`` or ``f32``."""

    name: str
    kind: str
    dtype: str = ""

    @staticmethod
    def buffer(name: str, dtype: str) -> Param:
        return Param(name, "buffer", dtype)

    @staticmethod
    def tensormap(name: str, dtype: str, rows: int, cols: int) -> Param:
        """A pointer to a TMA tensor map whose box is [rows, cols] of ``dtype``, with the
        128-byte swizzle (``tessera.runtime.tensor_map`` makes it)."""
        return Param(name, "tensormap", f"{dtype}:{rows}x{cols}")

    @staticmethod
    def scalar(name: str, kind: str = "i32") -> Param:
        if kind not in SCALAR_KINDS:
            raise ValueError(f"scalar kind must be one of {SCALAR_KINDS}, got {kind!r}")
        return Param(name, kind)


@dataclass(frozen=True)
class KernelInfo:
    """How to launch one kernel: grid (3 expressions over scalar parameter names), block
    (3 ints), dynamic shared memory in bytes, and the parameters in order."""

    name: str
    params: tuple[Param, ...]
    grid: tuple[str, str, str]
    block: tuple[int, int, int]
    smem_bytes: int = 0
    # Buffer parameters the kernel loads before its grid wait (``grid_dependency.py``): the
    # plan binds them only to weights.
    reads_before_wait: tuple[str, ...] = ()


# The function attribute of a kernel that places its own grid wait (``grid_dependency.py``):
# the indices of the parameters it reads before the wait.
READS_BEFORE_WAIT = "tessera.reads_before_wait"


def mark_reads_before_wait(
    function: ir.Operation, params: Sequence[Param], names: Sequence[str]
) -> None:
    """Records on ``function`` that it reads the parameters ``names`` before its grid wait
    (none: nothing to record)."""
    if names:
        at = [i for i, p in enumerate(params) if p.name in names]
        function.attributes[READS_BEFORE_WAIT] = ir.DenseI32ArrayAttr.get(at)


def element_type(dtype: str) -> ir.Type:
    """The MLIR type for a dtype spelling (``bf16``, ``f16``, ``f32``, ``i32``, ``i64``...)."""
    return ir.Type.parse(dtype)


def param_type(param: Param) -> ir.Type:
    if param.kind == "tensormap":
        # A plain pointer on the wire: the GPU lowering converts no nvgpu type in a kernel's
        # signature, so the kernel casts it to the map's type (``tensormap_value``).
        return ir.Type.parse("!llvm.ptr")
    if param.kind == "buffer":
        return ir.MemRefType.get([ir.ShapedType.get_dynamic_size()], element_type(param.dtype))
    return ir.Type.parse(param.kind)


class KernelModule:
    """A module holding one ``gpu.module`` of kernels for ``arch`` (``sm_80``, ``sm_90a``) of
    ``device`` (default: the NVIDIA GPU of that arch; ``device.py`` says what it decides).

    Use inside ``with context, ir.Location.unknown():``."""

    def __init__(self, arch: str, name: str = "kernels", device: Device | None = None) -> None:
        self.arch = arch
        self.device: Device = device if device is not None else nvidia(arch)
        self.module = ir.Module.create()
        self.module.operation.attributes["gpu.container_module"] = ir.UnitAttr.get()
        target = self.device.target_attribute()
        with ir.InsertionPoint(self.module.body):
            self.gpu_module = gpu.GPUModuleOp(name, targets=ir.ArrayAttr.get([target]))
        self.body = self.gpu_module.bodyRegion.blocks.append()
        self._names: set[str] = set()

    def has_kernel(self, name: str) -> bool:
        return name in self._names

    def add_kernel(self, name: str, params: Sequence[Param]) -> tuple[gpu.GPUFuncOp, ir.Block]:
        """A new kernel ``name`` taking ``params``; returns it and its entry block (whose
        arguments are the parameters, in order). The caller fills the block and ends it with
        ``gpu.ReturnOp([])``."""
        if name in self._names:
            raise ValueError(f"kernel '{name}' is already defined")
        self._names.add(name)
        types = [param_type(p) for p in params]
        with ir.InsertionPoint(self.body):
            # The stubs describe the generated base class; the dialect's subclass takes these.
            function = gpu.GPUFuncOp(
                ir.TypeAttr.get(ir.FunctionType.get(types, [])),
                sym_name=name,  # type: ignore[call-arg]
                kernel=True,
            )
        block = function.body.blocks.append(*types)
        return function, block

    def add_launched_kernel(self, info: KernelInfo) -> tuple[dict[str, ir.Value], ir.Block]:
        """``add_kernel`` for ``info``, its block size recorded (``known_block_size``, which
        the lowering uses for thread-id ranges); returns the arguments by parameter name and
        the entry block."""
        function, block = self.add_kernel(info.name, info.params)
        function.attributes["known_block_size"] = ir.DenseI32ArrayAttr.get(list(info.block))
        mark_reads_before_wait(function, info.params, info.reads_before_wait)
        return {p.name: v for p, v in zip(info.params, block.arguments, strict=True)}, block

    def shared_array(self, symbol: str, shape: Sequence[int], element: ir.Type) -> ir.Value:
        """A static shared-memory array of the block (a workgroup ``memref.global`` named
        ``symbol``), read where the insertion point is."""
        space = ir.Attribute.parse(WORKGROUP)
        type_ = ir.MemRefType.get(list(shape), element, memory_space=space)
        with ir.InsertionPoint(self.body):
            memref.GlobalOp(
                symbol,
                ir.TypeAttr.get(type_),
                sym_visibility="private",
                initial_value=ir.UnitAttr.get(),
                alignment=16,
            )
        return memref.get_global(type_, symbol)


def info_json(info: KernelInfo) -> dict[str, object]:
    """``info`` as the JSON the runtime's launcher reads (``runtime.cuda_driver.launch_info``)."""
    return {
        "name": info.name,
        "params": [{"name": p.name, "kind": p.kind, "dtype": p.dtype} for p in info.params],
        "grid": list(info.grid),
        "block": list(info.block),
        "smem_bytes": info.smem_bytes,
    }


def tensormap_value(pointer: ir.Value, param: Param) -> ir.Value:
    """A tensor-map parameter (``pointer``) as the ``!nvgpu.tensormap.descriptor`` its spec
    names, for the TMA ops (the cast folds away when they lower to NVVM)."""
    dtype, box = param.dtype.split(":")
    type_ = ir.Type.parse(
        f"!nvgpu.tensormap.descriptor<tensor = memref<{box}x{dtype}, 3>, "
        "swizzle = swizzle_128b, l2promo = none, oob = zero, interleave = none>"
    )
    return ir.Operation.create(
        "builtin.unrealized_conversion_cast", results=[type_], operands=[pointer]
    ).result
