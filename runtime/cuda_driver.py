"""The CUDA driver, as the runtime needs it: load cubins (or PTX), find kernels, launch them.

Through cuda-bindings' driver API, on torch's device and current stream, so compiled kernels
and torch's own work are ordered on one stream and share torch's (primary) context. Every
driver error goes through one funnel, ``check``, which names the call and, for launches, the
kernel and its launch configuration.

A kernel's parameters are described as in the manifest: ``{"name", "kind", "dtype"}`` with
kind ``buffer`` (a flat ``memref<?xT>``, passed as MLIR's memref descriptor: allocated
pointer, aligned pointer, offset, size, stride — five 64-bit values) or a scalar kind
``i32``/``i64``/``f32``.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from tessera.errors import TesseraError

from . import expr

# Each buffer parameter expands to MLIR's memref descriptor for memref<?xT>.
_DESCRIPTOR = (ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
_SCALARS: dict[str, type] = {"i32": ctypes.c_int32, "i64": ctypes.c_int64, "f32": ctypes.c_float}


class CudaError(TesseraError):
    """A CUDA driver call failed, or no CUDA device/driver is present."""


def _driver() -> Any:
    try:
        from cuda.bindings import driver
    except ImportError:
        raise CudaError(
            "running a CUDA artifact needs the cuda-bindings package (pip install cuda-bindings)"
        ) from None
    return driver


def check(result: Any, call: str, detail: str = "") -> Any:
    """Returns the values of a driver call's result tuple, or raises ``CudaError`` naming the
    call (and ``detail``: the kernel and its launch configuration) with the driver's message."""
    driver = _driver()
    status, *values = result if isinstance(result, tuple) else (result,)
    if status != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(status)
        _, text = driver.cuGetErrorString(status)
        name = name.decode() if isinstance(name, bytes) else str(status)
        text = text.decode() if isinstance(text, bytes) else ""
        where = f" ({detail})" if detail else ""
        raise CudaError(f"{call} failed{where}: {name}: {text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_present() -> bool:
    """Whether torch sees a CUDA device (and so a driver)."""
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def require_device() -> None:
    if not device_present():
        raise CudaError(
            "no CUDA device is present (torch.cuda.is_available() is False); compile here, save "
            "the artifact (cm.save(folder)) and load it with tessera.runtime.load(folder) on a "
            "machine with an NVIDIA GPU"
        )


@functools.cache
def _context(device: int) -> Any:
    """Makes torch's primary context of ``device`` current for the driver calls that follow."""
    driver = _driver()
    require_device()
    torch.cuda.init()
    try:
        check(driver.cuInit(0), "cuInit")
    except RuntimeError as error:  # cuda-bindings raises this when libcuda cannot be loaded
        raise CudaError(f"the CUDA driver cannot be loaded: {error}") from None
    handle = check(driver.cuDeviceGet(device), "cuDeviceGet")
    context = check(driver.cuDevicePrimaryCtxRetain(handle), "cuDevicePrimaryCtxRetain")
    return context


def make_current(device: int | None = None) -> None:
    driver = _driver()
    require_device()
    index = torch.cuda.current_device() if device is None else device
    check(driver.cuCtxSetCurrent(_context(index)), "cuCtxSetCurrent")


def compute_capability(device: int | None = None) -> tuple[int, int]:
    require_device()
    index = torch.cuda.current_device() if device is None else device
    major, minor = torch.cuda.get_device_capability(index)
    return int(major), int(minor)


class ParamPacker:
    """The argument block of one kernel: a byte buffer holding every parameter value at its
    aligned offset and the ``void*[]`` array the driver reads, built once per launch site and
    refilled per call (only the values change)."""

    def __init__(self, params: Sequence[Mapping[str, str]]) -> None:
        fields: list[type] = []
        self.slots: list[tuple[str, int]] = []  # per parameter: (kind, first field index)
        for param in params:
            kind = param["kind"]
            self.slots.append((kind, len(fields)))
            if kind == "buffer":
                fields.extend(_DESCRIPTOR)
            elif kind in _SCALARS:
                fields.append(_SCALARS[kind])
            elif kind == "tensormap":
                fields.append(ctypes.c_uint64)  # the address of the map (runtime/tensor_map.py)
            else:
                raise CudaError(f"kernel parameter '{param['name']}' has unknown kind '{kind}'")
        self.values = [ctype() for ctype in fields]
        self.pointers = (ctypes.c_void_p * max(1, len(fields)))(
            *[ctypes.addressof(v) for v in self.values]
        )
        self.address = ctypes.addressof(self.pointers)

    def set_buffer(self, index: int, address: int, elements: int) -> None:
        _, first = self.slots[index]
        values = self.values
        values[first].value = address
        values[first + 1].value = address
        values[first + 2].value = 0
        values[first + 3].value = elements
        values[first + 4].value = 1

    def set_scalar(self, index: int, value: int | float) -> None:
        _, first = self.slots[index]
        self.values[first].value = value

    def fill(self, args: Sequence[torch.Tensor | int | float], names: Sequence[str]) -> None:
        for i, ((kind, _), arg) in enumerate(zip(self.slots, args, strict=True)):
            if kind == "buffer":
                if not isinstance(arg, torch.Tensor):
                    raise CudaError(f"parameter '{names[i]}' is a buffer: pass a CUDA tensor")
                if not arg.is_cuda or not arg.is_contiguous():
                    raise CudaError(f"parameter '{names[i]}' must be a contiguous CUDA tensor")
                self.set_buffer(i, arg.data_ptr(), arg.numel())
            elif kind == "tensormap":
                if not isinstance(arg, torch.Tensor) or not arg.is_cuda or arg.nbytes != 128:
                    raise CudaError(
                        f"parameter '{names[i]}' is a tensor map: pass the 128-byte CUDA "
                        "tensor tessera.runtime.tensor_map.tiled made"
                    )
                self.set_scalar(i, arg.data_ptr())
            else:
                if isinstance(arg, torch.Tensor):
                    raise CudaError(f"parameter '{names[i]}' is a scalar ({kind})")
                self.set_scalar(i, arg)


class Kernel:
    """One kernel of a loaded module."""

    def __init__(self, module: CudaModule, name: str, handle: Any) -> None:
        self.module = module
        self.name = name
        self.handle = handle
        self._smem_limit: int | None = None
        self._config: Any = None  # the programmatic launch configuration, made at first use
        self._config_stream: int | None = None  # the stream ``_config`` holds

    def allow_shared_memory(self, smem: int) -> None:
        """Raises the kernel's dynamic shared-memory limit where ``smem`` is above it: by
        default a block gets 48 KiB of shared memory in all, so the dynamic part may be 48 KiB
        less the kernel's static shared memory (a 48 KiB pipeline beside a small static array
        needs the opt-in too)."""
        driver = _driver()
        if self._smem_limit is None:
            static = check(
                driver.cuFuncGetAttribute(
                    driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, self.handle
                ),
                "cuFuncGetAttribute(SHARED_SIZE_BYTES)",
                f"kernel {self.name}",
            )
            self._smem_limit = 48 * 1024 - int(static)
        if smem <= self._smem_limit:
            return
        attribute = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        check(
            driver.cuFuncSetAttribute(self.handle, attribute, smem),
            "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)",
            f"kernel {self.name}, {smem} bytes of shared memory",
        )
        self._smem_limit = smem

    def launch_packed(
        self,
        grid: Sequence[int],
        block: Sequence[int],
        smem: int,
        packer: ParamPacker,
        stream: int | None = None,
        programmatic: bool = False,
    ) -> None:
        """Launches with the arguments ``packer`` holds. ``programmatic``: the kernel may start
        before the previous kernel on the stream ends (CUDA's programmatic stream
        serialization); only for kernels that wait for their predecessors themselves
        (``griddepcontrol.wait``, which the sm_90 lowering gives every kernel)."""
        driver = _driver()
        if stream is None:
            stream = torch.cuda.current_stream().cuda_stream
        if min(grid) <= 0:
            return  # an empty problem (e.g. zero rows): nothing to launch
        self.allow_shared_memory(smem)
        if programmatic:
            config = self._programmatic_config(grid, block, smem, stream)
            result = driver.cuLaunchKernelEx(config, self.handle, packer.address, 0)
            call = "cuLaunchKernelEx (programmatic stream serialization)"
        else:
            result = driver.cuLaunchKernel(
                self.handle, *grid, *block, smem, stream, packer.address, 0
            )
            call = "cuLaunchKernel"
        if result[0] != driver.CUresult.CUDA_SUCCESS:
            check(
                result,
                call,
                f"kernel {self.name}, grid {tuple(grid)}, block {tuple(block)}, "
                f"{smem} bytes of shared memory",
            )

    def _programmatic_config(
        self, grid: Sequence[int], block: Sequence[int], smem: int, stream: int
    ) -> Any:
        """The launch configuration with the programmatic-serialization attribute, made once
        per kernel and refilled per launch."""
        driver = _driver()
        if self._config is None:
            attribute = driver.CUlaunchAttribute()
            attribute.id = (
                driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
            )
            attribute.value.programmaticStreamSerializationAllowed = 1
            self._config = driver.CUlaunchConfig()
            self._config.attrs = [attribute]
            self._config.numAttrs = 1
        config = self._config
        config.gridDimX, config.gridDimY, config.gridDimZ = (int(g) for g in grid)
        config.blockDimX, config.blockDimY, config.blockDimZ = (int(b) for b in block)
        config.sharedMemBytes = smem
        if stream != self._config_stream:  # the stream rarely changes: wrap it once
            config.hStream = driver.CUstream(stream)
            self._config_stream = stream
        return config

    def launch(
        self,
        grid: Sequence[int],
        block: Sequence[int],
        smem: int,
        args: Sequence[torch.Tensor | int | float],
        params: Sequence[Mapping[str, str]],
    ) -> None:
        """Launches on torch's current stream with ``args`` given per parameter."""
        if len(args) != len(params):
            raise CudaError(f"kernel {self.name} takes {len(params)} arguments, got {len(args)}")
        packer = ParamPacker(params)
        packer.fill(args, [p["name"] for p in params])
        self.launch_packed(grid, block, smem, packer)


class CudaModule:
    """A loaded cubin (or PTX, which the driver compiles for the current device)."""

    def __init__(self, image: bytes, name: str = "kernels") -> None:
        driver = _driver()
        make_current()
        data = image if image.endswith(b"\0") or not _is_text(image) else image + b"\0"
        self.name = name
        self.handle = check(driver.cuModuleLoadData(data), "cuModuleLoadData", f"binary {name}")
        self._kernels: dict[str, Kernel] = {}

    def function(self, name: str) -> Kernel:
        kernel = self._kernels.get(name)
        if kernel is None:
            driver = _driver()
            handle = check(
                driver.cuModuleGetFunction(self.handle, name.encode()),
                "cuModuleGetFunction",
                f"kernel {name} in binary {self.name}",
            )
            kernel = self._kernels[name] = Kernel(self, name, handle)
        return kernel


def _is_text(image: bytes) -> bool:
    """PTX is text (it starts with comments or directives); a cubin is an ELF file."""
    return not image.startswith(b"\x7fELF")


def launch_info(
    module: CudaModule,
    info: Mapping[str, Any],
    bindings: Mapping[str, torch.Tensor | int | float],
) -> None:
    """Launches the kernel described by ``info`` (a ``KernelInfo`` as JSON: name, params, grid,
    block, smem_bytes) with each parameter taken from ``bindings`` by name; the grid
    expressions are evaluated over the scalar bindings."""
    params = info["params"]
    missing = [p["name"] for p in params if p["name"] not in bindings]
    if missing:
        raise CudaError(f"kernel {info['name']}: no value for {', '.join(missing)}")
    scalars = {k: int(v) for k, v in bindings.items() if isinstance(v, int)}
    grid = [expr.evaluate(g, scalars) for g in info["grid"]]
    module.function(info["name"]).launch(
        grid,
        list(info["block"]),
        int(info.get("smem_bytes", 0)),
        [bindings[p["name"]] for p in params],
        params,
    )
