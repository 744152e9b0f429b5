"""Checking tensors against a program's specs: weights once at binding, inputs at every call.

Compiled code trusts its arguments: a wrong dtype reads garbage, a wrong size or an
out-of-range token id reads or writes out of bounds. So everything the code assumes is checked
here first, and each problem is a ``RuntimeInputError`` naming the tensor and the mismatch.
The per-call checks are precomputed into plain tuples to keep a call cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy
import torch

from tessera.errors import RuntimeInputError

from .manifest import BufferSpec, Dim, SymbolSpec, TensorSpec
from .memref import DTYPES

_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    return _NAMES.get(dtype, str(dtype).removeprefix("torch."))


def describe(dtype: str, shape: Sequence[Dim]) -> str:
    return f"{dtype}[{', '.join(str(d) for d in shape)}]"


def _describe_tensor(tensor: torch.Tensor) -> str:
    return describe(dtype_name(tensor.dtype), list(tensor.shape))


def check_weight(spec: TensorSpec, tensor: object, device: str = "cpu") -> torch.Tensor:
    """``tensor`` as the compiled code takes it (contiguous; on the CPU for a CPU program, on
    the CPU or a CUDA device for a CUDA program, which uploads it), or an error."""
    if not isinstance(tensor, torch.Tensor):
        raise RuntimeInputError(
            f"weight '{spec.name}' must be a torch.Tensor, found {type(tensor).__name__}"
        )
    if tensor.device.type not in ("cpu", device):
        raise RuntimeInputError(
            f"weight '{spec.name}' is on {tensor.device}; this program runs on {device}"
        )
    if tensor.dtype != DTYPES[spec.dtype] or tuple(tensor.shape) != spec.shape:
        raise RuntimeInputError(
            f"weight '{spec.name}': expected {describe(spec.dtype, spec.shape)}, "
            f"found {_describe_tensor(tensor)}"
        )
    # Compiled code assumes the identity layout; a strided view is copied once, here.
    return tensor.detach().contiguous()


def gather_weights(
    specs: Sequence[TensorSpec],
    weights: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
    device: str = "cpu",
) -> list[torch.Tensor]:
    """The tensors for ``specs``, from a state dict (extra entries are ignored) or a sequence
    in the specs' order, each checked by ``check_weight``."""
    if isinstance(weights, Mapping):
        missing = [s.name for s in specs if s.name not in weights]
        if missing:
            shown = ", ".join(f"'{n}'" for n in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise RuntimeInputError(f"missing weights: {shown}{more}")
        return [check_weight(s, weights[s.name], device) for s in specs]
    if isinstance(weights, torch.Tensor) or not isinstance(weights, Sequence):
        raise RuntimeInputError(
            "weights must be a mapping from state-dict names to tensors or a sequence of "
            f"tensors, found {type(weights).__name__}"
        )
    if len(weights) != len(specs):
        raise RuntimeInputError(
            f"expected {len(specs)} weights ({', '.join(s.name for s in specs)}), "
            f"found {len(weights)}"
        )
    return [check_weight(s, t, device) for s, t in zip(specs, weights, strict=True)]


@dataclass(frozen=True)
class InputCheck:
    """What one input must be, precomputed from its spec and the program's symbols."""

    name: str
    dtype: torch.dtype
    dtype_text: str
    shape: tuple[Dim, ...]
    # (axis, symbol, min, max) for each symbolic dim; static dims are (axis, size).
    symbolic: tuple[tuple[int, str, int, int | None], ...]
    static: tuple[tuple[int, int], ...]
    range: tuple[int, int] | None
    # Where the program runs: a CUDA program also takes CPU inputs (and uploads them).
    device: str = "cpu"

    @classmethod
    def of(
        cls, spec: TensorSpec, symbols: Mapping[str, SymbolSpec], device: str = "cpu"
    ) -> InputCheck:
        symbolic = tuple(
            (axis, d, symbols[d].min, symbols[d].max)
            for axis, d in enumerate(spec.shape)
            if isinstance(d, str)
        )
        static = tuple((axis, d) for axis, d in enumerate(spec.shape) if isinstance(d, int))
        return cls(
            spec.name,
            DTYPES[spec.dtype],
            spec.dtype,
            spec.shape,
            symbolic,
            static,
            spec.range,
            device,
        )

    def check(self, tensor: object, bound: dict[str, tuple[int, str]]) -> torch.Tensor:
        """``tensor`` made contiguous; binds its symbolic dims into ``bound`` (symbol → size and
        where it was seen) and checks them against earlier bindings and bounds."""
        if not isinstance(tensor, torch.Tensor):
            raise RuntimeInputError(
                f"input '{self.name}' must be a torch.Tensor, found {type(tensor).__name__}"
            )
        if tensor.dtype != self.dtype:
            raise RuntimeInputError(
                f"input '{self.name}' has dtype {dtype_name(tensor.dtype)}, expected "
                f"{self.dtype_text} ({describe(self.dtype_text, self.shape)})"
            )
        shape = tensor.shape
        if len(shape) != len(self.shape):
            raise RuntimeInputError(
                f"input '{self.name}' has rank {len(shape)} {list(shape)}, expected rank "
                f"{len(self.shape)} {list(self.shape)}"
            )
        if tensor.device.type not in ("cpu", self.device):
            raise RuntimeInputError(
                f"input '{self.name}' is on {tensor.device}; this program runs on {self.device}"
            )
        for axis, size in self.static:
            if shape[axis] != size:
                raise RuntimeInputError(
                    f"input '{self.name}' dim {axis} is {shape[axis]}, expected {size} "
                    f"(shape {list(shape)}, expected {list(self.shape)})"
                )
        for axis, symbol, low, high in self.symbolic:
            size = shape[axis]
            seen = bound.get(symbol)
            if seen is not None:
                if seen[0] != size:
                    raise RuntimeInputError(
                        f"input '{self.name}' dim {axis} ({symbol}) is {size}, but {seen[1]} "
                        f"gave {symbol} = {seen[0]}"
                    )
                continue
            if size < low or (high is not None and size > high):
                limits = f"[{low}, {high}]" if high is not None else f"at least {low}"
                raise RuntimeInputError(
                    f"input '{self.name}' dim {axis} ({symbol}) is {size}; {symbol} must be "
                    f"{limits}"
                )
            bound[symbol] = (size, f"input '{self.name}' dim {axis}")
        if self.range is not None and tensor.numel():
            self._check_range(tensor, *self.range)
        return tensor.contiguous()

    def _check_range(self, tensor: torch.Tensor, low: int, high: int) -> None:
        smallest, largest = (int(v) for v in torch.aminmax(tensor))
        if smallest >= low and largest < high:
            return
        bad = largest if largest >= high else smallest
        where = [int(i) for i in (tensor == bad).nonzero()[0]]
        raise RuntimeInputError(
            f"input '{self.name}' holds {bad} at index {where}, outside [{low}, {high})"
        )


_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _describe_value(value: object) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def _nested_integers(value: object, name: str, where: str = "") -> object:
    """``value`` (nested lists or tuples) checked to hold Python ints only, as they are."""
    if isinstance(value, list | tuple):
        return [_nested_integers(item, name, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, bool) or not isinstance(value, int):
        shown = repr(value) if isinstance(value, float | int | str) else _describe_value(value)
        raise RuntimeInputError(
            f"{name} holds {shown} at {where or 'its top level'}; it must hold integers"
        )
    return value


def as_integer_tensor(value: object, name: str) -> torch.Tensor:
    """``value`` (a torch tensor or numpy array of an integer dtype, or nested lists of
    ints, as tokenizers return them) as an int64 tensor; anything else (text, None, floats,
    bools, ragged lists) is a ``RuntimeInputError`` naming ``name`` and what it holds."""
    if isinstance(value, str | bytes):
        raise RuntimeInputError(
            f"{name} must be token ids, found {_describe_value(value)}; tokenize the text "
            "first (tokenizer(texts, return_tensors='pt'))"
        )
    if value is None:
        raise RuntimeInputError(f"{name} must be token ids (a tensor or lists of ints), found None")
    if not isinstance(value, torch.Tensor):
        if isinstance(value, numpy.ndarray):
            if value.dtype.kind not in "iu":
                raise RuntimeInputError(
                    f"{name} has dtype {value.dtype}; token ids and masks are integers"
                )
            value = torch.from_numpy(value)
        elif isinstance(value, list | tuple):
            nested = _nested_integers(value, name)
            try:
                value = torch.tensor(nested, dtype=torch.int64)
            except (ValueError, TypeError, RuntimeError, OverflowError) as problem:
                raise RuntimeInputError(
                    f"{name} is not a rectangular array of integers ({problem}); pad the rows "
                    "to one length (tokenizer(..., padding=True))"
                ) from None
        else:
            raise RuntimeInputError(
                f"{name} must be a tensor, a numpy array or lists of ints, found "
                f"{_describe_value(value)}"
            )
    assert isinstance(value, torch.Tensor)
    if value.dtype not in _INTEGER_DTYPES:
        raise RuntimeInputError(
            f"{name} has dtype {dtype_name(value.dtype)}; token ids and masks are integers "
            "(int64, as tokenizers return them)"
        )
    return value.to(torch.int64)


def token_ids(value: object) -> torch.Tensor:
    """The ``input_ids`` of a call as the compiled programs take them: int64 [B, S]."""
    ids = as_integer_tensor(value, "input_ids")
    if ids.dim() != 2:
        raise RuntimeInputError(
            f"input_ids has rank {ids.dim()} {list(ids.shape)}; expected rank 2 [batch, "
            "sequence] (one sequence: ids[None])"
        )
    return ids


def gather_state(
    program: str,
    specs: Sequence[BufferSpec],
    symbols: Mapping[str, SymbolSpec],
    tensors: Mapping[str, torch.Tensor],
    device: str = "cpu",
) -> list[torch.Tensor]:
    """The tensors for a program's ``state`` buffers (memory the code reads and writes in
    place across calls, such as a KV cache), in the specs' order. Each must have the spec's
    dtype and static dims, a symbolic dim must agree across buffers and lie within its
    symbol's bounds, and each must be contiguous and on ``device``: the code writes into it,
    so a copy made here would lose the writes."""
    if not isinstance(tensors, Mapping):
        raise RuntimeInputError(
            f"state of program '{program}' must be a mapping from buffer names to tensors, "
            f"found {type(tensors).__name__}"
        )
    missing = [s.name for s in specs if s.name not in tensors]
    if missing:
        raise RuntimeInputError(
            f"program '{program}' is missing state buffers: {', '.join(missing)}"
        )
    unknown = sorted(set(tensors) - {s.name for s in specs})
    if unknown:
        raise RuntimeInputError(
            f"program '{program}' has no state buffers {', '.join(unknown)} (state: "
            f"{', '.join(s.name for s in specs)})"
        )
    bound: dict[str, tuple[int, str]] = {}
    out = []
    for spec in specs:
        tensor = tensors[spec.name]
        where = f"state '{spec.name}' of program '{program}'"
        if not isinstance(tensor, torch.Tensor):
            raise RuntimeInputError(
                f"{where} must be a torch.Tensor, found {type(tensor).__name__}"
            )
        if tensor.device.type != device:
            raise RuntimeInputError(f"{where} is on {tensor.device}; this program runs on {device}")
        if tensor.dtype != DTYPES[spec.dtype] or tensor.dim() != len(spec.shape):
            raise RuntimeInputError(
                f"{where}: expected {describe(spec.dtype, spec.shape)}, found "
                f"{_describe_tensor(tensor)}"
            )
        if not tensor.is_contiguous():
            raise RuntimeInputError(f"{where} must be contiguous (the code writes into it)")
        for axis, dim in enumerate(spec.shape):
            size = int(tensor.shape[axis])
            if isinstance(dim, int):
                if size != dim:
                    raise RuntimeInputError(
                        f"{where} dim {axis} is {size}, expected {dim} "
                        f"({describe(spec.dtype, spec.shape)})"
                    )
                continue
            symbol = symbols.get(dim)
            if symbol is None:
                raise RuntimeInputError(f"{where} dim {axis} is '{dim}', which is not a symbol")
            seen = bound.get(dim)
            if seen is not None and seen[0] != size:
                raise RuntimeInputError(
                    f"{where} dim {axis} ({dim}) is {size}, but {seen[1]} gave {dim} = {seen[0]}"
                )
            if size < symbol.min or (symbol.max is not None and size > symbol.max):
                limits = (
                    f"[{symbol.min}, {symbol.max}]"
                    if symbol.max is not None
                    else (f"at least {symbol.min}")
                )
                raise RuntimeInputError(
                    f"{where} dim {axis} ({dim}) is {size}; it must be {limits}"
                )
            bound[dim] = (size, f"state '{spec.name}' dim {axis}")
        out.append(tensor)
    return out


def resolve_shape(spec: TensorSpec, bound: Mapping[str, tuple[int, str]]) -> list[int]:
    """An output's concrete shape from the symbols bound by the inputs."""
    return [d if isinstance(d, int) else bound[d][0] for d in spec.shape]


def gather_inputs(
    program: str,
    checks: Sequence[InputCheck],
    inputs: Sequence[torch.Tensor],
    named: Mapping[str, torch.Tensor],
) -> list[torch.Tensor]:
    """A program's inputs in the manifest's order: positional ones first, then those given by
    name; a name that is unknown, given twice or missing is a ``RuntimeInputError``."""
    index = {check.name: i for i, check in enumerate(checks)}
    gathered: list[torch.Tensor | None] = list(inputs)
    gathered += [None] * (len(checks) - len(inputs))
    for name, tensor in named.items():
        position = index.get(name)
        if position is None:
            known = ", ".join(c.name for c in checks)
            raise RuntimeInputError(f"program '{program}' has no input '{name}' (inputs: {known})")
        if gathered[position] is not None:
            raise RuntimeInputError(f"input '{name}' is given twice (by position and name)")
        gathered[position] = tensor
    missing = [c.name for c, t in zip(checks, gathered, strict=False) if t is None]
    if missing:
        raise RuntimeInputError(f"program '{program}' is missing inputs: {', '.join(missing)}")
    return [t for t in gathered if t is not None]
