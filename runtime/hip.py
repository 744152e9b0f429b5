"""The HIP backend: runs a ROCm artifact (an AMDGPU code object and its launch plan) on an AMD
GPU through the HIP runtime, ``libamdhip64.so``, called with ctypes.

The plan is the CUDA backend's (``cuda.CudaProgram``: inputs checked, symbols bound, outputs
and the arena allocated with torch, launches replayed with argument blocks prepared once); a
ROCm build of torch names the AMD device ``cuda`` and its current stream is a HIP stream. Only
the calls differ: ``hipModuleLoadData``, ``hipModuleGetFunction`` and ``hipModuleLaunchKernel``
(whose arguments match ``cuLaunchKernel``'s, so ``cuda_driver.ParamPacker`` builds the same
``void*[]`` block: a buffer is MLIR's five-value memref descriptor).

``check_target`` refuses, saying which, an artifact this process cannot run: no HIP runtime
library, no AMD GPU, a torch without ROCm, or a GPU of another architecture than the code
object's. Nothing here needs MLIR or the ROCm toolkit to import.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch

from tessera.errors import TesseraError

from . import cuda, cuda_driver
from .manifest import ArtifactError, ProgramSpec, TargetSpec

KIND = "rocm"
BINARY_KINDS = ("hsaco",)
# The HIP runtime's shared library: the unversioned name (ROCm's development symlink), then
# the sonames of ROCm 6 and 5.
LIBRARIES = ("libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5")


class HipError(TesseraError):
    """A HIP runtime call failed."""


@functools.lru_cache(maxsize=1)
def library() -> Any:
    """The HIP runtime (a ``ctypes.CDLL``), or None when no library of ``LIBRARIES`` loads."""
    for name in LIBRARIES:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _require() -> Any:
    hip = library()
    if hip is None:
        raise HipError(f"the HIP runtime is not installed (none of {', '.join(LIBRARIES)} loads)")
    return hip


def check(status: int, call: str, detail: str = "") -> None:
    """Raises ``HipError`` naming ``call`` (and ``detail``) when ``status`` is not hipSuccess."""
    if status == 0:
        return
    hip = library()
    name = f"error {status}"
    if hip is not None:
        hip.hipGetErrorString.restype = ctypes.c_char_p
        text = hip.hipGetErrorString(ctypes.c_int(status))
        if text:
            name = f"{text.decode()} ({status})"
    raise HipError(f"{call} failed: {name}" + (f" [{detail}]" if detail else ""))


def device_count() -> int:
    """AMD GPUs the HIP runtime sees (0 without one, or without the runtime)."""
    hip = library()
    if hip is None:
        return 0
    count = ctypes.c_int(0)
    if hip.hipGetDeviceCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def device_arch() -> str:
    """The current AMD GPU's architecture (``gfx942``; the feature suffixes dropped)."""
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    name: str = getattr(properties, "gcnArchName", "")
    return name.split(":", 1)[0]


def check_target(target: TargetSpec) -> None:
    """Refuses, saying why, an artifact this process cannot run (module docstring)."""
    if library() is None:
        raise ArtifactError(
            f"this artifact is for ROCm ({target.arch}) but no HIP runtime is present (none of "
            f"{', '.join(LIBRARIES)} loads); run it on a machine with ROCm and an AMD GPU "
            "(compiling works anywhere)",
            "target.kind",
        )
    if device_count() == 0:
        raise ArtifactError(
            f"this artifact is for ROCm ({target.arch}) but no AMD GPU is present (the HIP "
            "runtime reports no device); run it on a machine with an AMD GPU",
            "target.kind",
        )
    if getattr(torch.version, "hip", None) is None:
        raise ArtifactError(
            f"this artifact is for ROCm ({target.arch}) but this torch is not a ROCm build, so "
            "its tensors cannot live on the AMD GPU; install torch for ROCm",
            "target.kind",
        )
    have = device_arch()
    if have != target.arch:
        raise ArtifactError(
            f"the code is built for {target.arch}; this GPU ({torch.cuda.get_device_name()}) is "
            f"{have or 'of an unknown architecture'}",
            "target.arch",
        )


class HipKernel:
    """One kernel of a loaded code object."""

    def __init__(self, module: HipModule, name: str, handle: ctypes.c_void_p) -> None:
        self.module = module
        self.name = name
        self.handle = handle

    def launch_packed(
        self,
        grid: Sequence[int],
        block: Sequence[int],
        smem: int,
        packer: cuda_driver.ParamPacker,
        stream: int | None = None,
        programmatic: bool = False,
    ) -> None:
        # ``programmatic`` permits an early start, which HIP does not have: every kernel
        # starts after the one before it, which is always correct.
        if min(grid) <= 0:
            return  # an empty problem (e.g. zero rows): nothing to launch
        if stream is None:
            stream = torch.cuda.current_stream().cuda_stream
        hip = _require()
        status = hip.hipModuleLaunchKernel(
            self.handle,
            *(ctypes.c_uint(v) for v in grid),
            *(ctypes.c_uint(v) for v in block),
            ctypes.c_uint(smem),
            ctypes.c_void_p(stream),
            ctypes.c_void_p(packer.address),
            ctypes.c_void_p(0),
        )
        check(
            status,
            "hipModuleLaunchKernel",
            f"kernel {self.name}, grid {tuple(grid)}, block {tuple(block)}, {smem} bytes of LDS",
        )


class HipModule:
    """A loaded AMDGPU code object."""

    def __init__(self, image: bytes, name: str = "kernels") -> None:
        hip = _require()
        self.name = name
        # The runtime reads the image during the call; the buffer only has to outlive it.
        self._image = ctypes.create_string_buffer(image, len(image))
        self.handle = ctypes.c_void_p()
        check(
            hip.hipModuleLoadData(ctypes.byref(self.handle), self._image),
            "hipModuleLoadData",
            f"binary {name}",
        )
        self._kernels: dict[str, HipKernel] = {}

    def function(self, name: str) -> HipKernel:
        kernel = self._kernels.get(name)
        if kernel is None:
            hip = _require()
            handle = ctypes.c_void_p()
            check(
                hip.hipModuleGetFunction(ctypes.byref(handle), self.handle, name.encode()),
                "hipModuleGetFunction",
                f"kernel {name} in binary {self.name}",
            )
            kernel = self._kernels[name] = HipKernel(self, name, handle)
        return kernel


class HipProgram(cuda.CudaProgram):
    """A program of kernel launches on an AMD GPU (``CudaProgram``'s plan, HIP's calls)."""

    def __init__(self, spec: ProgramSpec, modules: Mapping[str, HipModule]) -> None:
        # The plan only calls ``function(name)`` and then ``launch_packed(...)``, which the HIP
        # classes provide with the CUDA ones' signatures.
        super().__init__(spec, cast(Mapping[str, cuda_driver.CudaModule], modules))

    def _make_current(self) -> None:
        """HIP launches on torch's current device; there is no driver context to set."""


def load_modules(images: Mapping[str, tuple[str, bytes]]) -> dict[str, HipModule]:
    """Loads each code object (name → (kind, bytes))."""
    modules = {}
    for name, (kind, data) in images.items():
        if kind not in BINARY_KINDS:
            raise ArtifactError(f"binary kind '{kind}' is not AMDGPU code", f"binaries.{name}")
        modules[name] = HipModule(data, name)
    return modules
