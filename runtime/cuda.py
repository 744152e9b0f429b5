"""The CUDA backend: runs a program of kernel launches on torch's current CUDA stream.

Weights are uploaded once at ``bind``; constants once at load. A call checks the inputs (CPU
or CUDA tensors), binds the symbols, allocates the outputs and the arena (reused between calls
while it is large enough), and replays the steps: each launch's argument block is prepared
once (``cuda_driver.ParamPacker``) and only its values are refilled per call. Outputs come back
as CUDA tensors. ``CudaProgram.graph(...)`` captures the whole program as one CUDA graph.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from tessera.errors import RuntimeInputError

from . import cuda_driver, expr, tensor_map
from .checks import InputCheck, gather_inputs, gather_state, gather_weights, resolve_shape
from .manifest import (
    ArgRef,
    ArtifactError,
    KernelLaunch,
    ProgramSpec,
    ScalarArg,
    TargetSpec,
    TensorMapArg,
)
from .memref import DTYPES

KIND = "cuda"
BINARY_KINDS = ("cubin", "ptx")
_ALIGNMENT = 256


def arch_number(arch: str) -> tuple[int, int, bool]:
    """``sm_90a`` → (9, 0, True): major, minor, arch-specific (runs on that exact chip only)."""
    text = arch.removeprefix("sm_")
    specific = text.endswith("a")
    digits = text.removesuffix("a")
    if not digits.isdigit() or len(digits) < 2:
        raise ArtifactError(f"'{arch}' is not a CUDA architecture such as sm_80", "target.arch")
    return int(digits[:-1]), int(digits[-1]), specific


def check_target(target: TargetSpec) -> None:
    """Refuses, saying why, an artifact this process cannot run: no GPU, or a GPU whose compute
    capability cannot run the code (an sm_90a cubin needs exactly compute capability 9.0)."""
    major, minor, specific = arch_number(target.arch)
    if not cuda_driver.device_present():
        raise ArtifactError(
            f"this artifact is for CUDA ({target.arch}) but no CUDA device is present; run it on "
            "a machine with an NVIDIA GPU (compiling works anywhere)",
            "target.kind",
        )
    have = cuda_driver.compute_capability()
    name = torch.cuda.get_device_name()
    if specific and have != (major, minor):
        raise ArtifactError(
            f"the code is built for {target.arch}, which runs only on compute capability "
            f"{major}.{minor}; this GPU ({name}) is {have[0]}.{have[1]}",
            "target.arch",
        )
    if have < (major, minor):
        raise ArtifactError(
            f"the code needs compute capability {major}.{minor} ({target.arch}) or newer; this "
            f"GPU ({name}) is {have[0]}.{have[1]}",
            "target.arch",
        )


@dataclass(frozen=True)
class _Launch:
    """One prepared launch: the kernel, its argument block and how to fill it per call."""

    kernel: cuda_driver.Kernel
    step: KernelLaunch
    packer: cuda_driver.ParamPacker
    # Per argument: (index, producer of (address, elements) or of a scalar value).
    buffers: tuple[tuple[int, Callable[[_Frame], tuple[int, int]]], ...]
    scalars: tuple[tuple[int, Callable[[_Frame], int | float]], ...]


class _Frame:
    """Everything one call binds: symbol values and the tensors behind each name."""

    __slots__ = ("arena", "env", "tensors")

    def __init__(self, env: dict[str, int], tensors: dict[str, torch.Tensor], arena: int) -> None:
        self.env = env
        self.tensors = tensors
        self.arena = arena


class CudaProgram:
    """A program of kernel launches; ``bind`` the weights, then call it like a CPU program."""

    def __init__(self, spec: ProgramSpec, modules: Mapping[str, cuda_driver.CudaModule]) -> None:
        self.spec = spec
        symbols = {s.name: s for s in spec.symbols}
        self._inputs = tuple(InputCheck.of(s, symbols, device="cuda") for s in spec.inputs)
        self._outputs = tuple((s, DTYPES[s.dtype]) for s in spec.outputs)
        self._symbols = symbols
        self._weights: dict[str, torch.Tensor] | None = None if spec.weights else {}
        self._arena: torch.Tensor | None = None
        # TMA tensor maps by (address, rows, cols, box), kept (``_tensor_map_producer``).
        self._tensor_maps: dict[tuple[int, int, int, tuple[int, int]], torch.Tensor] = {}
        self._state_specs = tuple(b for b in spec.buffers if b.kind == "state")
        # The bound state tensors by name and the symbols their shapes bind (a KV cache's
        # block counts); None while a program with state buffers has none bound.
        self._state: dict[str, torch.Tensor] | None = None if self._state_specs else {}
        self._state_env: dict[str, int] = {}
        self._state_source: Mapping[str, torch.Tensor] | None = None
        self._constants = {
            b.name: torch.frombuffer(bytearray.fromhex(b.data), dtype=DTYPES[b.dtype])
            .reshape([int(d) for d in b.shape])
            .cuda()
            for b in spec.buffers
            if b.kind == "constant"
        }
        self._arena_slices = {
            b.name: (expr.parse(b.offset), expr.parse(b.bytes), DTYPES[b.dtype])
            for b in spec.buffers
            if b.kind == "arena"
        }
        self._arena_size = expr.parse(spec.arena)
        # Whether launches the manifest marks ``programmatic`` may start before the launch
        # before them ends (their kernels wait for it themselves); False launches every
        # kernel after the previous one (TESSERA_PROGRAMMATIC_LAUNCH=0 through
        # ``tessera.compile``'s model, and the bench's peer).
        self.programmatic_launch = True
        self._launches = tuple(
            self._prepare(step, modules, i)
            for i, step in enumerate(spec.steps)
            if isinstance(step, KernelLaunch)
        )
        if len(self._launches) != len(spec.steps):
            raise ArtifactError(
                "a CUDA program holds only kernel launches", f"programs.{spec.name}.steps"
            )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def bound(self) -> bool:
        return self._weights is not None

    def _prepare(
        self, step: KernelLaunch, modules: Mapping[str, cuda_driver.CudaModule], index: int
    ) -> _Launch:
        module = modules.get(step.binary)
        if module is None:
            raise ArtifactError(
                f"no code for binary '{step.binary}'", f"programs.{self.spec.name}.steps[{index}]"
            )
        params = []
        buffers = []
        scalars = []
        for i, arg in enumerate(step.args):
            if isinstance(arg, ScalarArg):
                params.append({"name": f"arg{i}", "kind": arg.type, "dtype": ""})
                scalars.append((i, _scalar_producer(arg)))
            elif isinstance(arg, TensorMapArg):
                params.append({"name": arg.of.name, "kind": "tensormap", "dtype": ""})
                scalars.append((i, self._tensor_map_producer(arg)))
            else:
                params.append({"name": arg.name, "kind": "buffer", "dtype": ""})
                buffers.append((i, self._buffer_producer(arg)))
        return _Launch(
            module.function(step.kernel),
            step,
            cuda_driver.ParamPacker(params),
            tuple(buffers),
            tuple(scalars),
        )

    def _tensor_map_producer(self, arg: TensorMapArg) -> Callable[[_Frame], int]:
        """The address of the tensor map of ``arg``'s buffer for this call: made once per
        (address, rows) and kept for the program's life, so a launch captured in a CUDA graph
        keeps reading a live map (a buffer's address repeats from call to call: the arena is
        kept, weights are bound once)."""
        buffer = self._buffer_producer(arg.of)
        rows = expr.parse(arg.rows)
        dtype = self._buffer_dtype(arg.of)

        def address(frame: _Frame) -> int:
            start, _ = buffer(frame)
            count = rows.evaluate(frame.env)
            key = (start, count, arg.cols, arg.box)
            made = self._tensor_maps.get(key)
            if made is None:
                device = torch.device("cuda", torch.cuda.current_device())
                made = tensor_map.encode(start, dtype, count, arg.cols, arg.box, device)
                self._tensor_maps[key] = made
            return made.data_ptr()

        return address

    def _buffer_dtype(self, arg: ArgRef) -> torch.dtype:
        """The element type of the buffer argument ``arg``."""
        for group in (self.spec.inputs, self.spec.weights, self.spec.buffers):
            for spec in group:
                if spec.name == arg.name:
                    return DTYPES[spec.dtype]
        raise ArtifactError(f"no buffer named '{arg.name}'", f"programs.{self.spec.name}")

    def _buffer_producer(self, arg: ArgRef) -> Callable[[_Frame], tuple[int, int]]:
        name = arg.name
        if arg.kind == "buffer" and name in self._arena_slices:
            offset, size, dtype = self._arena_slices[name]
            itemsize = torch.empty((), dtype=dtype).element_size()

            def arena_slice(frame: _Frame) -> tuple[int, int]:
                return frame.arena + offset.evaluate(frame.env), size.evaluate(
                    frame.env
                ) // itemsize

            return arena_slice
        if arg.kind == "buffer" and name in self._constants:
            constant = self._constants[name]
            return lambda frame: (constant.data_ptr(), constant.numel())

        def named(frame: _Frame) -> tuple[int, int]:
            tensor = frame.tensors[name]
            return tensor.data_ptr(), tensor.numel()

        return named

    def bind(self, weights: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> None:
        """Checks ``weights`` and uploads them to the current CUDA device once."""
        tensors = gather_weights(self.spec.weights, weights, device="cuda")
        self._weights = {
            spec.name: tensor.to("cuda", non_blocking=True).contiguous()
            for spec, tensor in zip(self.spec.weights, tensors, strict=True)
        }

    def bind_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Keeps ``tensors`` (CUDA tensors by name, one per state buffer) by reference as the
        memory every later call reads and writes in place, until ``unbind_state``."""
        state = gather_state(self.spec.name, self._state_specs, self._symbols, tensors, "cuda")
        env: dict[str, int] = {}
        for spec, tensor in zip(self._state_specs, state, strict=True):
            for dim, size in zip(spec.shape, tensor.shape, strict=True):
                if isinstance(dim, str):
                    env[dim] = size
        self._state = {spec.name: t for spec, t in zip(self._state_specs, state, strict=True)}
        self._state_env = env
        self._state_source = tensors

    @property
    def bound_state(self) -> Mapping[str, torch.Tensor] | None:
        """The mapping last given to ``bind_state`` (None when unbound)."""
        return self._state_source

    def unbind_state(self) -> None:
        """Drops the state tensors (a program with state buffers then refuses calls)."""
        if self._state_specs:
            self._state = None
            self._state_env = {}
            self._state_source = None

    def share_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Uses already uploaded device weights (another program's) without copying."""
        self._weights = {spec.name: weights[spec.name] for spec in self.spec.weights}

    @property
    def device_weights(self) -> Mapping[str, torch.Tensor]:
        return self._weights or {}

    def _frame(self, tensors: Sequence[torch.Tensor]) -> tuple[_Frame, list[torch.Tensor]]:
        if self._weights is None:
            raise RuntimeInputError(
                f"program '{self.spec.name}' has no weights bound; call bind(weights) first"
            )
        if self._state is None:
            raise RuntimeInputError(
                f"program '{self.spec.name}' reads and writes state buffers "
                f"({', '.join(b.name for b in self._state_specs)}); call bind_state first"
            )
        if len(tensors) != len(self._inputs):
            raise RuntimeInputError(
                f"program '{self.spec.name}' takes {len(self._inputs)} inputs "
                f"({', '.join(c.name for c in self._inputs)}), found {len(tensors)}"
            )
        bound: dict[str, tuple[int, str]] = {}
        checked = [check.check(t, bound) for check, t in zip(self._inputs, tensors, strict=True)]
        device = torch.device("cuda", torch.cuda.current_device())
        named: dict[str, torch.Tensor] = {**self._weights, **self._state}
        for check, tensor in zip(self._inputs, checked, strict=True):
            named[check.name] = tensor.to(device, non_blocking=True)
        outputs = [
            torch.empty(resolve_shape(s, bound), dtype=d, device=device) for s, d in self._outputs
        ]
        for (spec, _), tensor in zip(self._outputs, outputs, strict=True):
            named[spec.name] = tensor
        env = {**self._state_env, **{symbol: size for symbol, (size, _) in bound.items()}}
        arena = self._arena_for(self._arena_size.evaluate(env), device)
        return _Frame(env, named, arena), outputs

    def _arena_for(self, size: int, device: torch.device) -> int:
        if self._arena is None or self._arena.numel() < size:
            # Grown to the largest size seen (rounded up) and kept: no allocation per call.
            rounded = max(_ALIGNMENT, -(-size // (1 << 20)) * (1 << 20))
            self._arena = torch.empty(rounded, dtype=torch.uint8, device=device)
        return self._arena.data_ptr()

    def _make_current(self) -> None:
        """Makes the driver context current before launching (the HIP runtime needs none)."""
        cuda_driver.make_current()

    def _grids(self, frame: _Frame) -> list[list[int] | None]:
        """Each step's grid for this call, or None for a step whose grid has no block: a step
        that serves other sizes only (the decode step's GEMVs: one for a single row, one for
        several, each grid zero for the other's sizes) launches nothing."""
        grids: list[list[int] | None] = []
        for launch in self._launches:
            grid = [expr.evaluate(g, frame.env) for g in launch.step.grid]
            grids.append(grid if min(grid) > 0 else None)
        return grids

    def _run(self, frame: _Frame, marks: Sequence[torch.cuda.Event] = ()) -> None:
        """Launches every step with blocks to run; with ``marks`` (one event per launched
        step, and one more), records ``marks[i]`` before the i-th and the last after them."""
        self._make_current()
        stream = torch.cuda.current_stream().cuda_stream
        env = frame.env
        launched = 0
        for launch, grid in zip(self._launches, self._grids(frame), strict=True):
            if grid is None:
                continue
            if marks:
                marks[launched].record()
            launched += 1
            packer = launch.packer
            for index, produce_buffer in launch.buffers:
                address, elements = produce_buffer(frame)
                packer.set_buffer(index, address, elements)
            for index, produce_scalar in launch.scalars:
                packer.set_scalar(index, produce_scalar(frame))
            step = launch.step
            launch.kernel.launch_packed(
                grid,
                step.block,
                expr.evaluate(step.smem, env),
                packer,
                stream,
                step.programmatic and self.programmatic_launch,
            )
        if marks:
            marks[-1].record()

    def __call__(self, *inputs: torch.Tensor, **named: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tensors = (
            gather_inputs(self.spec.name, self._inputs, inputs, named) if named else list(inputs)
        )
        frame, outputs = self._frame(tensors)
        self._run(frame)
        return tuple(outputs)

    @property
    def kernels(self) -> tuple[str, ...]:
        """The kernel of each launch, in order."""
        return tuple(launch.step.kernel for launch in self._launches)

    def launched_kernels(self, *inputs: torch.Tensor, **named: torch.Tensor) -> tuple[str, ...]:
        """The kernel of each launch a call with these inputs makes, in order (``kernels``
        less the steps whose grid is empty for these sizes)."""
        tensors = (
            gather_inputs(self.spec.name, self._inputs, inputs, named) if named else list(inputs)
        )
        frame, _outputs = self._frame(tensors)
        grids = self._grids(frame)
        return tuple(
            launch.step.kernel
            for launch, grid in zip(self._launches, grids, strict=True)
            if grid is not None
        )

    def launch_times(
        self, *inputs: torch.Tensor, repeats: int = 10, **named: torch.Tensor
    ) -> list[list[float]]:
        """Milliseconds of each launch a call makes (in ``launched_kernels``' order) in each of
        ``repeats`` calls with these inputs, after a warm-up call: the time between CUDA events
        recorded on the stream before and after each launch (a kernel's run, plus any gap
        before the next)."""
        tensors = (
            gather_inputs(self.spec.name, self._inputs, inputs, named) if named else list(inputs)
        )
        frame, _outputs = self._frame(tensors)
        self._run(frame)
        launches = sum(grid is not None for grid in self._grids(frame))
        calls = []
        for _ in range(repeats):
            marks = [torch.cuda.Event(enable_timing=True) for _ in range(launches + 1)]
            self._run(frame, marks)
            calls.append(marks)
        torch.cuda.synchronize()
        return [[a.elapsed_time(b) for a, b in itertools.pairwise(m)] for m in calls]

    def graph(self, *inputs: torch.Tensor) -> Callable[[], tuple[torch.Tensor, ...]]:
        """Captures one call with ``inputs``' shapes as a CUDA graph; returns a function that
        replays it (same input tensors, updated in place by the caller, same outputs)."""
        frame, outputs = self._frame(list(inputs))
        self._run(frame)  # warm-up: loads modules and sets shared-memory limits outside capture
        torch.cuda.synchronize()
        captured = torch.cuda.CUDAGraph()
        with torch.cuda.graph(captured):
            self._run(frame)

        def replay() -> tuple[torch.Tensor, ...]:
            captured.replay()
            return tuple(outputs)

        replay.inputs = [frame.tensors[c.name] for c in self._inputs]  # type: ignore[attr-defined]
        return replay


def _scalar_producer(arg: ScalarArg) -> Callable[[_Frame], int | float]:
    if isinstance(arg.value, str):
        parsed = expr.parse(arg.value)
        return lambda frame: parsed.evaluate(frame.env)
    value = arg.value
    return lambda frame: value


def load_modules(images: Mapping[str, tuple[str, bytes]]) -> dict[str, cuda_driver.CudaModule]:
    """Loads each binary (name → (kind, bytes)); PTX is compiled by the driver for this GPU."""
    modules = {}
    for name, (kind, data) in images.items():
        if kind not in BINARY_KINDS:
            raise ArtifactError(f"binary kind '{kind}' is not CUDA code", f"binaries.{name}")
        modules[name] = cuda_driver.CudaModule(data, name)
    return modules
