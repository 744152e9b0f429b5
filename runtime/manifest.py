"""The artifact manifest: what a compiled model holds and how to run it, as versioned JSON.

One format serves every target. An artifact has binaries (files with their sha256) and
programs; a program ("prefill"; with a KV cache also "prefill_kv" and "decode", whose cache
is ``state`` buffers) declares its symbolic dims, inputs, weights and outputs, and a list of
steps that reference those tensors by name. The CPU target
emits one step, a ``host_call`` of the entry function's packed C interface; GPU targets add
kernel-launch steps over named buffers as new step kinds (docs/architecture.md, "The
manifest").

``Manifest.to_json`` and ``manifest_parse.parse_manifest`` are inverse. Building a spec
checks it (symbols declared and bound, names unique, steps naming existing tensors and
binaries) and reports the first problem as an ``ArtifactError`` naming the field's path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tessera.errors import TesseraError

FORMAT = "tessera.artifact"
VERSION = 2
# Version 1 (CPU artifacts before kernel launches and buffers existed) reads the same way.
READABLE_VERSIONS = (1, 2)
MANIFEST_FILE = "manifest.json"

# Element types by their MLIR spelling (``memref.DTYPES`` maps each to its torch dtype; this
# module stays free of torch so that the compiler can read manifests cheaply).
DTYPES = ("f32", "f64", "bf16", "f16", "i64", "i32", "i8", "i1")
INTEGER_DTYPES = frozenset({"i8", "i32", "i64"})
ARG_KINDS = ("input", "weight", "output", "buffer", "scalar")
BUFFER_KINDS = ("arena", "constant", "state")
SCALAR_TYPES = ("i32", "i64", "f32")

Dim = int | str


class ArtifactError(TesseraError):
    """An artifact cannot be loaded: its manifest is malformed, or a file is missing or altered.

    ``where`` names the manifest field (``programs.prefill.inputs[0].dtype``) or the file."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


@dataclass(frozen=True)
class SymbolSpec:
    """A symbolic dim (``B``, ``S``): bound by the inputs' shapes at each call."""

    name: str
    min: int = 1
    max: int | None = None


@dataclass(frozen=True)
class TensorSpec:
    """An input, weight or output: dtype (MLIR spelling) and shape (ints and symbol names).

    ``range`` = [lo, hi) bounds the values of an integer input that indexes memory (token ids
    index the embedding table); the runtime rejects values outside it before any call."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    range: tuple[int, int] | None = None


@dataclass(frozen=True)
class ArgRef:
    """One argument of a step: the input, weight or output called ``name``."""

    kind: str
    name: str


@dataclass(frozen=True)
class ScalarArg:
    """A scalar argument of a kernel launch: ``type`` i32/i64/f32 and ``value``, an integer
    expression over the program's symbols (``runtime/expr.py``) or, for f32, a number."""

    type: str
    value: str | float

    kind = "scalar"


@dataclass(frozen=True)
class TensorMapArg:
    """A TMA tensor map of the buffer argument ``of`` read as a row-major [rows, cols] matrix
    in boxes of ``box`` = [rows, cols] (128-byte swizzle, zeros past the edges); ``rows`` is an
    expression over the symbols. The kernel takes a pointer to the 128-byte map, which the
    runtime makes once per (address, rows) and keeps (``runtime/tensor_map.py``)."""

    of: ArgRef
    rows: str
    cols: int
    box: tuple[int, int]

    kind = "tensormap"


@dataclass(frozen=True)
class BufferSpec:
    """Storage a program owns besides its inputs, weights and outputs.

    ``arena``: a slice of the program's one arena, ``bytes`` long at ``offset`` (expressions
    over the symbols, from the memory plan); ``constant``: data compiled into the artifact
    (``data``: the bytes in hex); ``state``: memory that lives across calls (a KV cache), zeroed
    when first allocated. ``shape`` describes the contents (ints or expressions)."""

    name: str
    kind: str
    dtype: str
    shape: tuple[Dim, ...]
    offset: str = "0"
    bytes: str = "0"
    data: str = ""


@dataclass(frozen=True)
class KernelLaunch:
    """Launch ``kernel`` of ``binary`` (a cubin) on ``grid`` x ``block`` threads with ``smem``
    bytes of dynamic shared memory (grid and smem are expressions over the symbols). ``args``
    follow the kernel's parameters: a buffer argument (input, weight, output, buffer) is passed
    as a flat ``memref<?xT>`` descriptor, a scalar by value. ``programmatic``: the kernel waits
    for the kernels before it (``griddepcontrol.wait``) before it touches their memory, so it
    may be launched to start before the previous one ends (CUDA's programmatic dependent
    launch)."""

    binary: str
    kernel: str
    grid: tuple[str, str, str]
    block: tuple[int, int, int]
    smem: str
    args: tuple[ArgRef | ScalarArg | TensorMapArg, ...]
    programmatic: bool = False

    kind = "launch"


@dataclass(frozen=True)
class HostCall:
    """Call ``symbol`` of ``binary`` with MLIR's packed calling convention, ``void(void**)``:
    element i points at a pointer to the memref descriptor of ``args[i]``."""

    binary: str
    symbol: str
    args: tuple[ArgRef, ...]

    kind = "host_call"


# The step kinds this runtime executes.
Step = HostCall | KernelLaunch
STEP_KINDS = (HostCall.kind, KernelLaunch.kind)


@dataclass(frozen=True)
class ProgramSpec:
    """One runnable program: its signature and the steps that compute its outputs."""

    name: str
    symbols: tuple[SymbolSpec, ...]
    inputs: tuple[TensorSpec, ...]
    weights: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    steps: tuple[Step, ...]
    buffers: tuple[BufferSpec, ...] = ()
    # Bytes of the arena the ``arena`` buffers are slices of (an expression over the symbols).
    arena: str = "0"

    def __post_init__(self) -> None:
        _check_program(self, f"programs.{self.name}")


@dataclass(frozen=True)
class BinarySpec:
    """A native file of the artifact, checked against ``sha256`` when loaded."""

    name: str
    file: str
    kind: str
    sha256: str


@dataclass(frozen=True)
class TargetSpec:
    """Where the binaries run: ``kind`` (cpu), machine architecture and OS, and for code
    specialised to the build machine, its CPU name and the instruction-set features the code
    may use (LLVM's names, e.g. ``avx512bf16``)."""

    kind: str
    arch: str
    os: str
    cpu: str = ""
    features: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "arch": self.arch, "os": self.os}
        if self.cpu:
            out["cpu"] = self.cpu
        if self.features:
            out["features"] = list(self.features)
        return out


@dataclass(frozen=True)
class Manifest:
    """A whole artifact: the compiler that built it, the target, binaries and programs."""

    compiler_version: str
    target: TargetSpec
    binaries: tuple[BinarySpec, ...]
    programs: tuple[ProgramSpec, ...]
    # Free-form facts about the model for the layers above the runtime (config, tokenizer ids);
    # the runtime itself never reads them.
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_manifest(self)

    def program(self, name: str) -> ProgramSpec:
        for program in self.programs:
            if program.name == name:
                return program
        known = ", ".join(p.name for p in self.programs)
        raise KeyError(f"no program '{name}' in the artifact (programs: {known})")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "compiler": {"name": "tessera", "version": self.compiler_version},
            "target": self.target.to_json(),
            "binaries": {
                b.name: {"file": b.file, "kind": b.kind, "sha256": b.sha256} for b in self.binaries
            },
            "programs": {p.name: _program_json(p) for p in self.programs},
            "metadata": dict(self.metadata),
        }


def _tensor_json(spec: TensorSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape)}
    if spec.range is not None:
        out["range"] = list(spec.range)
    return out


def _arg_json(arg: ArgRef | ScalarArg | TensorMapArg) -> dict[str, Any]:
    if isinstance(arg, ScalarArg):
        return {"kind": "scalar", "type": arg.type, "value": arg.value}
    if isinstance(arg, TensorMapArg):
        return {
            "kind": arg.kind,
            "of": _arg_json(arg.of),
            "rows": arg.rows,
            "cols": arg.cols,
            "box": list(arg.box),
        }
    return {"kind": arg.kind, "name": arg.name}


def _step_json(step: Step) -> dict[str, Any]:
    if isinstance(step, HostCall):
        return {
            "kind": step.kind,
            "binary": step.binary,
            "symbol": step.symbol,
            "args": [_arg_json(a) for a in step.args],
        }
    return {
        "kind": step.kind,
        "binary": step.binary,
        "kernel": step.kernel,
        "grid": list(step.grid),
        "block": list(step.block),
        "smem": step.smem,
        "args": [_arg_json(a) for a in step.args],
        **({"programmatic": True} if step.programmatic else {}),
    }


def _buffer_json(buffer: BufferSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": buffer.name,
        "kind": buffer.kind,
        "dtype": buffer.dtype,
        "shape": list(buffer.shape),
    }
    if buffer.kind == "arena":
        out.update(offset=buffer.offset, bytes=buffer.bytes)
    if buffer.kind == "constant":
        out["data"] = buffer.data
    return out


def _program_json(program: ProgramSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "symbols": {s.name: {"min": s.min, "max": s.max} for s in program.symbols},
        "inputs": [_tensor_json(t) for t in program.inputs],
        "weights": [_tensor_json(t) for t in program.weights],
        "outputs": [_tensor_json(t) for t in program.outputs],
        "steps": [_step_json(step) for step in program.steps],
    }
    if program.buffers:
        out["buffers"] = [_buffer_json(b) for b in program.buffers]
        out["arena"] = program.arena
    return out


# --------------------------------------------------------------------------- semantic checks


def _check_program(program: ProgramSpec, where: str) -> None:
    symbols = {s.name: s for s in program.symbols}
    if len(symbols) != len(program.symbols):
        raise ArtifactError("a symbol is declared twice", f"{where}.symbols")
    for s in program.symbols:
        if s.min < 0 or (s.max is not None and s.max < s.min):
            raise ArtifactError(f"bounds [{s.min}, {s.max}] are empty", f"{where}.symbols.{s.name}")
    groups = {"inputs": program.inputs, "weights": program.weights, "outputs": program.outputs}
    bound_by_inputs: set[str] = set()
    for group, specs in groups.items():
        seen: set[str] = set()
        for i, spec in enumerate(specs):
            at = f"{where}.{group}[{i}]"
            if spec.name in seen:
                raise ArtifactError(f"'{spec.name}' appears twice", at)
            seen.add(spec.name)
            if spec.dtype not in DTYPES:
                raise ArtifactError(
                    f"unknown dtype '{spec.dtype}' (known: {', '.join(DTYPES)})", f"{at}.dtype"
                )
            for axis, dim in enumerate(spec.shape):
                if isinstance(dim, int) and dim < 0:
                    raise ArtifactError(f"dim {axis} is negative ({dim})", f"{at}.shape")
                if isinstance(dim, str):
                    if group == "weights":
                        raise ArtifactError("a weight's shape must be static", f"{at}.shape")
                    if dim not in symbols:
                        raise ArtifactError(f"symbol '{dim}' is not declared", f"{at}.shape")
                    if group == "inputs":
                        bound_by_inputs.add(dim)
                    elif dim not in bound_by_inputs:
                        raise ArtifactError(
                            f"symbol '{dim}' appears in no input shape, so it cannot be resolved",
                            f"{at}.shape",
                        )
            if spec.range is not None:
                lo, hi = spec.range
                if group != "inputs" or spec.dtype not in INTEGER_DTYPES:
                    raise ArtifactError("only integer inputs take a range", f"{at}.range")
                if lo >= hi:
                    raise ArtifactError(f"range [{lo}, {hi}) is empty", f"{at}.range")
    buffer_names = _check_buffers(program, where, symbols, groups)
    written: set[str] = set()
    if not program.steps:
        raise ArtifactError("a program needs at least one step", f"{where}.steps")
    for i, step in enumerate(program.steps):
        if isinstance(step, KernelLaunch):
            _check_launch(step, f"{where}.steps[{i}]", symbols)
        for j, raw in enumerate(step.args):
            at = f"{where}.steps[{i}].args[{j}]"
            if isinstance(raw, ScalarArg):
                _check_scalar(raw, at, symbols)
                continue
            if isinstance(raw, TensorMapArg):
                _check_tensor_map(raw, at, symbols)
                arg, at = raw.of, f"{at}.of"
            else:
                arg = raw
            names = (
                buffer_names
                if arg.kind == "buffer"
                else {s.name for s in groups.get(arg.kind + "s", ())}
            )
            if arg.kind not in ARG_KINDS:
                raise ArtifactError(
                    f"unknown argument kind '{arg.kind}' (kinds: {', '.join(ARG_KINDS)})", at
                )
            if arg.name not in names:
                raise ArtifactError(f"no {arg.kind} named '{arg.name}'", at)
            if arg.kind == "output":
                written.add(arg.name)
    for spec in program.outputs:
        if spec.name not in written:
            raise ArtifactError(f"output '{spec.name}' is written by no step", f"{where}.steps")


def _check_tensor_map(arg: TensorMapArg, at: str, symbols: Mapping[str, SymbolSpec]) -> None:
    _check_expr(arg.rows, f"{at}.rows", symbols)
    if arg.cols <= 0 or len(arg.box) != 2 or min(arg.box) <= 0:
        raise ArtifactError(
            f"a tensor map needs positive columns and a box of two sizes, found {arg.cols} "
            f"columns and box {list(arg.box)}",
            at,
        )
    if arg.of.kind == "output":
        raise ArtifactError("a tensor map is read from, so it cannot map an output", at)


def _check_expr(text: str, at: str, symbols: Mapping[str, SymbolSpec]) -> None:
    from .expr import ExprError, parse

    try:
        names = parse(text).names
    except ExprError as error:
        raise ArtifactError(str(error), at) from None
    unknown = sorted(names - set(symbols))
    if unknown:
        raise ArtifactError(f"'{text}' uses undeclared symbols: {', '.join(unknown)}", at)


def _check_scalar(arg: ScalarArg, at: str, symbols: Mapping[str, SymbolSpec]) -> None:
    if arg.type not in SCALAR_TYPES:
        raise ArtifactError(
            f"unknown scalar type '{arg.type}' (types: {', '.join(SCALAR_TYPES)})", f"{at}.type"
        )
    if isinstance(arg.value, str):
        _check_expr(arg.value, f"{at}.value", symbols)
    elif arg.type != "f32":
        raise ArtifactError("an integer scalar takes an expression", f"{at}.value")


def _check_launch(step: KernelLaunch, at: str, symbols: Mapping[str, SymbolSpec]) -> None:
    if len(step.grid) != 3 or len(step.block) != 3:
        raise ArtifactError("grid and block have three dimensions each", at)
    for axis, dim in enumerate(step.grid):
        _check_expr(dim, f"{at}.grid[{axis}]", symbols)
    if any(b <= 0 for b in step.block) or step.block[0] * step.block[1] * step.block[2] > 1024:
        raise ArtifactError(f"block {list(step.block)} is not a valid CUDA block", f"{at}.block")
    _check_expr(step.smem, f"{at}.smem", symbols)


def _check_buffers(
    program: ProgramSpec,
    where: str,
    symbols: Mapping[str, SymbolSpec],
    groups: Mapping[str, tuple[TensorSpec, ...]],
) -> set[str]:
    taken = {s.name for specs in groups.values() for s in specs}
    names: set[str] = set()
    for i, buffer in enumerate(program.buffers):
        at = f"{where}.buffers[{i}]"
        if buffer.name in names or buffer.name in taken:
            raise ArtifactError(f"'{buffer.name}' is named twice", at)
        names.add(buffer.name)
        if buffer.kind not in BUFFER_KINDS:
            raise ArtifactError(
                f"unknown buffer kind '{buffer.kind}' (kinds: {', '.join(BUFFER_KINDS)})",
                f"{at}.kind",
            )
        if buffer.dtype not in DTYPES:
            raise ArtifactError(f"unknown dtype '{buffer.dtype}'", f"{at}.dtype")
        for axis, dim in enumerate(buffer.shape):
            if isinstance(dim, str):
                _check_expr(dim, f"{at}.shape[{axis}]", symbols)
            elif dim < 0:
                raise ArtifactError(f"dim {axis} is negative ({dim})", f"{at}.shape")
        if buffer.kind == "arena":
            _check_expr(buffer.offset, f"{at}.offset", symbols)
            _check_expr(buffer.bytes, f"{at}.bytes", symbols)
        if buffer.kind == "constant":
            if any(isinstance(d, str) for d in buffer.shape):
                raise ArtifactError("a constant's shape must be static", f"{at}.shape")
            if len(buffer.data) % 2 or any(c not in "0123456789abcdef" for c in buffer.data):
                raise ArtifactError("expected the bytes as lowercase hex", f"{at}.data")
    _check_expr(program.arena, f"{where}.arena", symbols)
    return names


def _plain_file_name(name: str) -> bool:
    """A name inside the artifact's folder: no path separators, no way up or out."""
    return (
        bool(name)
        and name == name.strip()
        and not set(name) & {"/", "\\", "\0"}
        and (name not in (".", ".."))
    )


def _check_manifest(manifest: Manifest) -> None:
    binaries = {b.name for b in manifest.binaries}
    if len(binaries) != len(manifest.binaries):
        raise ArtifactError("a binary name appears twice", "binaries")
    for b in manifest.binaries:
        if not _plain_file_name(b.file):
            raise ArtifactError(
                f"'{b.file}' must be a plain file name in the artifact's folder",
                f"binaries.{b.name}.file",
            )
        if len(b.sha256) != 64 or any(c not in "0123456789abcdef" for c in b.sha256):
            raise ArtifactError("expected 64 lowercase hex digits", f"binaries.{b.name}.sha256")
    if len({p.name for p in manifest.programs}) != len(manifest.programs):
        raise ArtifactError("a program name appears twice", "programs")
    weights: dict[str, tuple[TensorSpec, str]] = {}
    for program in manifest.programs:
        for i, step in enumerate(program.steps):
            if step.binary not in binaries:
                raise ArtifactError(
                    f"no binary named '{step.binary}'", f"programs.{program.name}.steps[{i}].binary"
                )
        for spec in program.weights:
            other = weights.setdefault(spec.name, (spec, program.name))
            if (other[0].dtype, other[0].shape) != (spec.dtype, spec.shape):
                raise ArtifactError(
                    f"weight '{spec.name}' is {spec.dtype}{list(spec.shape)} here but "
                    f"{other[0].dtype}{list(other[0].shape)} in program '{other[1]}'",
                    f"programs.{program.name}.weights",
                )
