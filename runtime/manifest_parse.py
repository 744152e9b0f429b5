"""Reading a manifest from decoded JSON: every field checked for presence and type, the
first problem reported as an ``ArtifactError`` naming the field's path
(``programs.prefill.inputs[0].dtype``). The specs built from it check the rest.
"""

from __future__ import annotations

from typing import Any

from .manifest import (
    FORMAT,
    READABLE_VERSIONS,
    VERSION,
    ArgRef,
    ArtifactError,
    BinarySpec,
    BufferSpec,
    HostCall,
    KernelLaunch,
    Manifest,
    ProgramSpec,
    ScalarArg,
    Step,
    SymbolSpec,
    TargetSpec,
    TensorMapArg,
    TensorSpec,
)


class _Reader:
    """Typed access to one JSON object, naming the field path in every complaint."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ArtifactError(f"expected an object, found {_kind(data)}", where or "manifest")
        self.data, self.where = data, where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data:
            if default is not ...:
                return default
            raise ArtifactError("required field is missing", self.at(key))
        value = self.data[key]
        # bool is an int in Python; a manifest never means true for 1.
        if isinstance(value, bool) and bool not in _as_tuple(kind):
            raise ArtifactError(f"expected {_names(kind)}, found a bool", self.at(key))
        if not isinstance(value, kind):
            raise ArtifactError(f"expected {_names(kind)}, found {_kind(value)}", self.at(key))
        return value

    def child(self, key: str) -> _Reader:
        return _Reader(self.get(key, dict), self.at(key))


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _names(kind: type | tuple[type, ...]) -> str:
    words = {dict: "an object", list: "a list", str: "a string", int: "an integer"}
    words[type(None)] = "null"
    return " or ".join(words.get(k, k.__name__) for k in _as_tuple(kind))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    return _names(type(value))


def _tensor(data: Any, where: str) -> TensorSpec:
    reader = _Reader(data, where)
    shape = reader.get("shape", list)
    for axis, dim in enumerate(shape):
        if isinstance(dim, bool) or not isinstance(dim, (int, str)):
            raise ArtifactError(
                f"dim {axis} must be an integer or a symbol name, found {_kind(dim)}",
                f"{where}.shape",
            )
    raw_range = reader.get("range", list, None)
    range_: tuple[int, int] | None = None
    if raw_range is not None:
        if len(raw_range) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in raw_range
        ):
            raise ArtifactError("expected [lo, hi] (two integers)", f"{where}.range")
        range_ = (raw_range[0], raw_range[1])
    return TensorSpec(reader.get("name", str), reader.get("dtype", str), tuple(shape), range_)


def _arg(data: Any, where: str) -> ArgRef | ScalarArg | TensorMapArg:
    arg = _Reader(data, where)
    kind = arg.get("kind", str)
    if kind == "scalar":
        value = arg.get("value", (str, int, float))
        return ScalarArg(arg.get("type", str), str(value) if isinstance(value, int) else value)
    if kind == TensorMapArg.kind:
        of = _arg(arg.get("of", dict), f"{where}.of")
        if not isinstance(of, ArgRef):
            raise ArtifactError("a tensor map maps a buffer argument", f"{where}.of")
        box = arg.get("box", list)
        if len(box) != 2 or not all(isinstance(b, int) and not isinstance(b, bool) for b in box):
            raise ArtifactError("expected two integers", f"{where}.box")
        return TensorMapArg(of, _expr(arg, "rows"), arg.get("cols", int), (box[0], box[1]))
    return ArgRef(kind, arg.get("name", str))


def _expr(reader: _Reader, key: str) -> str:
    value = reader.get(key, (str, int))
    return str(value)


def _step(data: Any, where: str) -> Step:
    reader = _Reader(data, where)
    kind = reader.get("kind", str)
    args = tuple(_arg(raw, f"{where}.args[{j}]") for j, raw in enumerate(reader.get("args", list)))
    if kind == HostCall.kind:
        if any(isinstance(a, ScalarArg | TensorMapArg) for a in args):
            raise ArtifactError("a host call takes buffer arguments only", f"{where}.args")
        refs = tuple(a for a in args if isinstance(a, ArgRef))
        return HostCall(reader.get("binary", str), reader.get("symbol", str), refs)
    if kind == KernelLaunch.kind:
        grid = reader.get("grid", list)
        block = reader.get("block", list)
        if len(grid) != 3 or not all(isinstance(g, (str, int)) for g in grid):
            raise ArtifactError("expected three integer expressions", f"{where}.grid")
        if len(block) != 3 or not all(
            isinstance(b, int) and not isinstance(b, bool) for b in block
        ):
            raise ArtifactError("expected three integers", f"{where}.block")
        return KernelLaunch(
            reader.get("binary", str),
            reader.get("kernel", str),
            (str(grid[0]), str(grid[1]), str(grid[2])),
            (block[0], block[1], block[2]),
            _expr(reader, "smem"),
            args,
            reader.get("programmatic", bool, False),
        )
    raise ArtifactError(
        f"step kind '{kind}' is not supported by this runtime (supported: "
        f"{HostCall.kind}, {KernelLaunch.kind})",
        reader.at("kind"),
    )


def _buffer(data: Any, where: str) -> BufferSpec:
    reader = _Reader(data, where)
    shape = reader.get("shape", list)
    for axis, dim in enumerate(shape):
        if isinstance(dim, bool) or not isinstance(dim, (int, str)):
            raise ArtifactError(
                f"dim {axis} must be an integer or an expression, found {_kind(dim)}",
                f"{where}.shape",
            )
    return BufferSpec(
        reader.get("name", str),
        reader.get("kind", str),
        reader.get("dtype", str),
        tuple(shape),
        offset=str(reader.get("offset", (str, int), "0")),
        bytes=str(reader.get("bytes", (str, int), "0")),
        data=reader.get("data", str, ""),
    )


def _program(name: str, data: Any, where: str) -> ProgramSpec:
    reader = _Reader(data, where)
    symbols = []
    symbol_table = reader.child("symbols")
    for symbol, raw in symbol_table.data.items():
        bounds = _Reader(raw, symbol_table.at(symbol))
        symbols.append(
            SymbolSpec(symbol, bounds.get("min", int), bounds.get("max", (int, type(None))))
        )

    def tensors(key: str) -> tuple[TensorSpec, ...]:
        return tuple(_tensor(t, f"{where}.{key}[{i}]") for i, t in enumerate(reader.get(key, list)))

    steps = tuple(_step(s, f"{where}.steps[{i}]") for i, s in enumerate(reader.get("steps", list)))
    buffers = tuple(
        _buffer(b, f"{where}.buffers[{i}]") for i, b in enumerate(reader.get("buffers", list, []))
    )
    return ProgramSpec(
        name,
        tuple(symbols),
        tensors("inputs"),
        tensors("weights"),
        tensors("outputs"),
        steps,
        buffers,
        str(reader.get("arena", (str, int), "0")),
    )


def _target(reader: _Reader) -> TargetSpec:
    features = reader.get("features", list, [])
    for i, feature in enumerate(features):
        if not isinstance(feature, str):
            raise ArtifactError(
                f"expected a string, found {_kind(feature)}", f"target.features[{i}]"
            )
    return TargetSpec(
        reader.get("kind", str),
        reader.get("arch", str),
        reader.get("os", str),
        reader.get("cpu", str, ""),
        tuple(features),
    )


def parse_manifest(data: Any) -> Manifest:
    """A ``Manifest`` from decoded JSON; raises ``ArtifactError`` naming the first bad field."""
    reader = _Reader(data, "")
    fmt = reader.get("format", str)
    if fmt != FORMAT:
        raise ArtifactError(f"expected '{FORMAT}', found '{fmt}'", "format")
    version = reader.get("version", int)
    if version not in READABLE_VERSIONS:
        raise ArtifactError(
            f"manifest version {version} is not supported by this runtime (it reads version "
            f"{VERSION}); rebuild the artifact with a matching tessera",
            "version",
        )
    compiler = reader.child("compiler")
    target = reader.child("target")
    binaries = []
    table = reader.child("binaries")
    for name, raw in table.data.items():
        entry = _Reader(raw, table.at(name))
        binaries.append(
            BinarySpec(
                name, entry.get("file", str), entry.get("kind", str), entry.get("sha256", str)
            )
        )
    programs = reader.child("programs")
    return Manifest(
        compiler_version=compiler.get("version", str),
        target=_target(target),
        binaries=tuple(binaries),
        programs=tuple(_program(n, p, programs.at(n)) for n, p in programs.data.items()),
        metadata=reader.get("metadata", dict, {}),
    )
