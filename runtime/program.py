"""The plan executor: runs one program of an artifact step by step.

A ``Program`` is built from a ``ProgramSpec`` and, per binary the steps name, a resolver
(symbol name → address). The CPU backend resolves symbols in a loaded shared object; the
compiler resolves them in its in-process JIT, so both run through this one executor and one
calling convention: MLIR's packed interface ``void fn(void** args)``, where ``args[i]`` points
at a pointer to the memref descriptor of argument i.

Weights are bound once (their descriptors are built once); a call checks the inputs, binds
the symbolic dims, allocates the outputs with torch and builds only the per-call descriptors.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from tessera.errors import RuntimeInputError

from .checks import InputCheck, gather_inputs, gather_state, gather_weights, resolve_shape
from .manifest import ArtifactError, HostCall, ProgramSpec
from .memref import DTYPES, descriptor

Resolver = Callable[[str], int]

# void fn(void** args): MLIR's packed wrapper `_mlir_<name>` of a function `<name>`.
PackedFunction = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

_POINTER = ctypes.sizeof(ctypes.c_void_p)
_INPUT, _WEIGHT, _OUTPUT, _STATE = 0, 1, 2, 3
# A host call's "buffer" arguments are the program's state buffers (the CPU code allocates
# its own scratch, so it has no arena).
_KIND = {"input": _INPUT, "weight": _WEIGHT, "output": _OUTPUT, "buffer": _STATE}


@dataclass(frozen=True)
class _Call:
    """A prepared host call: the function and, per argument, (kind, index in its group)."""

    function: Callable[[ctypes.Array], None]
    slots: tuple[tuple[int, int], ...]
    cells: type[ctypes.Array]


class Program:
    """One program (``prefill``, ``decode``) ready to run; ``bind`` the weights (and, for a
    program with ``state`` buffers such as a KV cache, ``bind_state`` the tensors that hold
    them), then call it with the inputs (positionally in the manifest's order, or by name).
    Returns the outputs as a tuple of torch tensors in the manifest's order."""

    def __init__(
        self, spec: ProgramSpec, resolvers: Mapping[str, Resolver], keepalive: object = None
    ) -> None:
        self.spec = spec
        # The library or JIT engine that owns the code must live as long as the program.
        self._keepalive = keepalive
        symbols = {s.name: s for s in spec.symbols}
        self._symbols = symbols
        for i, buffer in enumerate(spec.buffers):
            if buffer.kind != "state":
                raise ArtifactError(
                    f"buffer kind '{buffer.kind}' is planned for GPU programs; a CPU program "
                    "takes state buffers only",
                    f"programs.{spec.name}.buffers[{i}]",
                )
        self._state_specs = spec.buffers
        self._inputs = tuple(InputCheck.of(s, symbols) for s in spec.inputs)
        self._input_index = {s.name: i for i, s in enumerate(spec.inputs)}
        self._outputs = tuple((s, DTYPES[s.dtype]) for s in spec.outputs)
        indices = {
            "input": self._input_index,
            "weight": {s.name: i for i, s in enumerate(spec.weights)},
            "output": {s.name: i for i, s in enumerate(spec.outputs)},
            "buffer": {s.name: i for i, s in enumerate(spec.buffers)},
        }
        calls = []
        for i, step in enumerate(spec.steps):
            if not isinstance(step, HostCall):
                raise ArtifactError(
                    f"step kind '{step.kind}' runs on a GPU, not in a CPU program",
                    f"programs.{spec.name}.steps[{i}]",
                )
            resolver = resolvers.get(step.binary)
            if resolver is None:
                raise ArtifactError(
                    f"no code for binary '{step.binary}'", f"programs.{spec.name}.steps[{i}]"
                )
            address = resolver(step.symbol)
            slots = tuple((_KIND[a.kind], indices[a.kind][a.name]) for a in step.args)
            calls.append(_Call(PackedFunction(address), slots, ctypes.c_void_p * len(slots)))
        self._calls = tuple(calls)
        self._weights: list[torch.Tensor] | None = None if spec.weights else []
        self._weight_descriptors: list[ctypes.Structure] = []
        self._weight_addresses: list[int] = []
        self._state: list[torch.Tensor] | None = None if spec.buffers else []
        self._state_source: Mapping[str, torch.Tensor] | None = None
        self._state_descriptors: list[ctypes.Structure] = []
        self._state_addresses: list[int] = []

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def bound(self) -> bool:
        return self._weights is not None

    def bind(self, weights: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> None:
        """Checks ``weights`` (a state dict, or tensors in the manifest's order) against the
        program's weights and keeps them, by reference, for every later call."""
        tensors = gather_weights(self.spec.weights, weights)
        descriptors = [descriptor(t) for t in tensors]
        self._weights = tensors
        self._weight_descriptors = descriptors
        self._weight_addresses = [ctypes.addressof(d) for d in descriptors]

    def bind_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Keeps ``tensors`` (by name, one per state buffer of the manifest) by reference as
        the memory every later call reads and writes in place, until ``unbind_state``."""
        state = gather_state(self.spec.name, self._state_specs, self._symbols, tensors)
        descriptors = [descriptor(t) for t in state]
        self._state = state
        self._state_source = tensors
        self._state_descriptors = descriptors
        self._state_addresses = [ctypes.addressof(d) for d in descriptors]

    @property
    def bound_state(self) -> Mapping[str, torch.Tensor] | None:
        """The mapping last given to ``bind_state`` (None when unbound): a caller that shares
        the program with others checks it before a call and binds its own if it changed."""
        return self._state_source

    def unbind_state(self) -> None:
        """Drops the state tensors (a program with state buffers then refuses calls)."""
        if self.spec.buffers:
            self._state = None
            self._state_source = None
            self._state_descriptors = []
            self._state_addresses = []

    def __call__(self, *inputs: torch.Tensor, **named: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self._weights is None:
            raise RuntimeInputError(
                f"program '{self.spec.name}' has no weights bound; call bind(weights) first"
            )
        if self._state is None:
            raise RuntimeInputError(
                f"program '{self.spec.name}' reads and writes state buffers "
                f"({', '.join(b.name for b in self._state_specs)}); call bind_state first"
            )
        tensors = gather_inputs(self.spec.name, self._inputs, inputs, named) if named else inputs
        if len(tensors) != len(self._inputs):
            raise RuntimeInputError(
                f"program '{self.spec.name}' takes {len(self._inputs)} inputs "
                f"({', '.join(c.name for c in self._inputs)}), found {len(tensors)}"
            )
        bound: dict[str, tuple[int, str]] = {}
        checked = [check.check(t, bound) for check, t in zip(self._inputs, tensors, strict=True)]
        outputs = [torch.empty(resolve_shape(s, bound), dtype=d) for s, d in self._outputs]
        # The descriptors must stay alive until the calls return: the code reads them.
        input_descriptors = [descriptor(t) for t in checked]
        output_descriptors = [descriptor(t) for t in outputs]
        addresses = (
            [ctypes.addressof(d) for d in input_descriptors],
            self._weight_addresses,
            [ctypes.addressof(d) for d in output_descriptors],
            self._state_addresses,
        )
        for call in self._calls:
            cells = call.cells(*[addresses[kind][i] for kind, i in call.slots])
            base = ctypes.addressof(cells)
            packed = call.cells(*range(base, base + _POINTER * len(call.slots), _POINTER))
            call.function(packed)
        return tuple(outputs)
