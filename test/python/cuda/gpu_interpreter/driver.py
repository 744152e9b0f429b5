"""A kernel: its ops compiled once into steps (closures over register slots), and its launch."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from mlir import ir

from .access import check_global, check_shared
from .kinds import MAX_BATCH_SMEM, MAX_BATCH_THREADS, MAX_SMEM, WARP, KernelFault, kind_of, round_to
from .memory import Buffer, _Log
from .state import Step, _Launch, _Op, _Run

if TYPE_CHECKING:
    from .kinds import Kind


Rule = Callable[["Kernel", ir.Operation, _Op], Step | None]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for name in names:
            RULES[name] = fn
        return fn

    return register


class Kernel:
    """One ``gpu.func`` compiled for interpretation; ``launch`` runs it."""

    def __init__(self, func: ir.Operation | ir.OpView) -> None:
        func = func.operation
        self.name = ir.StringAttr(func.attributes["sym_name"]).value
        self.slots: dict[ir.Value, int] = {}
        self.globals = _module_globals(func)
        entry = func.regions[0].blocks[0]
        self.params: list[Kind | None] = []
        self.buffer_kinds: list[Kind | None] = []
        for arg in entry.arguments:
            is_buffer = isinstance(arg.type, ir.MemRefType)
            self.params.append(None if is_buffer else kind_of(arg.type))
            self.buffer_kinds.append(kind_of(arg.type) if is_buffer else None)
        self.arg_slots = [self.slot(arg) for arg in entry.arguments]
        self.chip = _chip(func)
        self.known_block: tuple[int, ...] | None = None
        if "known_block_size" in func.attributes:
            self.known_block = tuple(ir.DenseI32ArrayAttr(func.attributes["known_block_size"]))
        self.stored: set[int] = set()
        self.waits = False  # set by the rule of a griddepcontrol.wait (``grid_ops``)
        # parameters the kernel loads before its wait (``tessera.reads_before_wait``)
        self.reads_before_wait: tuple[int, ...] = ()
        if "tessera.reads_before_wait" in func.attributes:
            early = ir.DenseI32ArrayAttr(func.attributes["tessera.reads_before_wait"])
            self.reads_before_wait = tuple(early)
        for i, arg in enumerate(entry.arguments):
            for use in arg.uses:
                if use.owner.name in ("memref.store", "vector.store") and use.operand_number == 1:
                    self.stored.add(i)
        for i in self.reads_before_wait:
            if i in self.stored:
                raise KernelFault(
                    f"{self.name} stores to argument {i}, which it reads before its wait"
                )
        self.body, _ = self.compile_block(entry)
        # Only the register count is needed from here on: let go of the IR.
        self.slot_count = len(self.slots)
        self.slots = {}

    def slot(self, value: ir.Value) -> int:
        found = self.slots.get(value)
        if found is None:
            found = self.slots[value] = len(self.slots)
        return found

    def ins(self, op: ir.Operation) -> list[int]:
        return [self.slot(v) for v in op.operands]

    def compile_block(self, block: ir.Block) -> tuple[list[Step], list[int]]:
        """The steps of ``block`` and the slots its terminator yields."""
        for arg in block.arguments:
            self.slot(arg)
        steps: list[Step] = []
        yields: list[int] = []
        for view in block.operations:
            op = view.operation
            name = op.name
            if name in ("scf.yield", "gpu.return"):
                yields = self.ins(op)
                continue
            make = RULES.get(name)
            if make is None:
                raise NotImplementedError(f"{self.name}: the interpreter has no rule for {name}")
            for result in op.results:
                self.slot(result)
            step = make(self, op, _Op(name, str(op.location)))
            if step is not None:
                steps.append(step)
        return steps, yields

    def launch(
        self,
        grid: Sequence[int],
        block: Sequence[int],
        smem: int,
        args: Sequence[Buffer | int | float],
        max_threads: int = MAX_BATCH_THREADS,
        stats: dict[str, list[int]] | None = None,
        prefetched: list[tuple[Buffer, Any, Any]] | None = None,
    ) -> None:
        """Runs the kernel on ``grid`` x ``block`` threads with ``smem`` bytes of dynamic
        shared memory; buffers are updated in place. Raises ``KernelFault``.

        ``stats``, when given, accumulates shared-memory bank conflicts of ldmatrix and 16-byte
        cp.async: ``{"ldmatrix": [extra wavefronts, phases], "cp.async": [...]}``.
        ``prefetched``, when given, receives each L2 prefetch: (buffer, start bytes, lengths)."""
        if tuple(block[1:]) != (1, 1):
            raise NotImplementedError("the interpreter runs 1-D blocks")
        if self.known_block is not None and tuple(block) != self.known_block:
            raise KernelFault(
                f"{self.name} was compiled for blocks of {list(self.known_block)} threads "
                f"(known_block_size), launched with {list(block)}"
            )
        if len(args) != len(self.params):
            raise KernelFault(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        values = [self._argument(i, a) for i, a in enumerate(args)]
        threads = int(block[0])
        lanes = -(-threads // WARP) * WARP
        g = (int(grid[0]), int(grid[1]), int(grid[2]))
        limit = MAX_SMEM.get(self.chip, MAX_SMEM["sm_80"])
        if min(g) < 1 or g[0] >= 2**31 or max(g[1:]) > 65535 or not 1 <= threads <= 1024:
            raise KernelFault(f"{self.name}: no GPU launches a grid of {list(g)} x {threads}")
        if smem > limit:
            raise KernelFault(
                f"{self.name}: {smem} bytes of shared memory exceed the {limit} a {self.chip} "
                "block may have"
            )
        count = g[0] * g[1] * g[2]
        per_batch = max(1, min(count, max_threads // lanes, MAX_BATCH_SMEM // max(smem, 1)))
        tracked = {}
        for i in self.stored:
            storage = values[i].storage
            tracked[id(storage)] = storage
        for storage in tracked.values():
            storage.log = _Log()
        for i in self.reads_before_wait:
            if values[i].unwritten:
                raise KernelFault(
                    f"{self.name} reads {values[i].name} before its griddepcontrol.wait, but "
                    "launches write it (an arena slice or an output, not a weight)"
                )
        early = frozenset(id(values[i]) for i in self.reads_before_wait)
        launch = _Launch(g, threads, lanes, int(smem), stats, early)
        if prefetched is not None:
            launch.prefetched = prefetched
        try:
            with np.errstate(all="ignore"):
                for first in range(0, count, per_batch):
                    ids = np.arange(first, min(first + per_batch, count), dtype=np.int64)
                    run = _Run(self, launch, ids)
                    for slot, value in zip(self.arg_slots, values, strict=True):
                        run.regs[slot] = value
                    for step in self.body:
                        step(run)
                    for space in [run.shared, *run.statics.values()]:
                        check_shared(run, space)
                for storage in tracked.values():
                    check_global(run, storage)
        finally:
            for storage in tracked.values():
                storage.log = None

    def _argument(self, i: int, value: Buffer | int | float) -> Any:
        kind = self.params[i]
        if kind is None:
            expected = self.buffer_kinds[i]
            assert expected is not None
            if not isinstance(value, Buffer):
                raise KernelFault(f"{self.name}: argument {i} takes a Buffer, got {value!r}")
            if value.kind.name != expected.name:
                raise KernelFault(
                    f"{self.name}: argument {i} is a {expected.name} buffer, got {value.dtype}"
                )
            return value
        if isinstance(value, Buffer):
            raise KernelFault(f"{self.name}: argument {i} is a {kind.name} scalar, got a buffer")
        if kind.name in ("i32", "i64"):
            bounds = np.iinfo(kind.reg)
            if not bounds.min <= int(value) <= bounds.max:
                raise KernelFault(f"{self.name}: argument {i} = {value} does not fit {kind.name}")
        return np.array([value], dtype=kind.reg)


@dataclass(frozen=True)
class _GlobalSpec:
    """A ``memref.global``: per-block shared memory (workgroup) or a constant table."""

    name: str
    shape: tuple[int, ...]
    kind: Kind
    data: np.ndarray | None


def _chip(func: ir.Operation) -> str:
    """The ``chip`` of the enclosing gpu.module's NVVM target (``sm_80`` when unknown)."""
    parent = func.parent
    targets = (
        parent.attributes["targets"]
        if parent is not None and "targets" in parent.attributes
        else None
    )
    found = re.search(r'chip = "(sm_\w+)"', str(targets)) if targets is not None else None
    return found.group(1) if found else "sm_80"


def _module_globals(func: ir.Operation) -> dict[str, _GlobalSpec]:
    out: dict[str, _GlobalSpec] = {}
    parent = func.parent
    if parent is None:
        return out
    for view in parent.regions[0].blocks[0].operations:
        op = view.operation
        if op.name != "memref.global":
            continue
        name = ir.StringAttr(op.attributes["sym_name"]).value
        type_ = ir.MemRefType(ir.TypeAttr(op.attributes["type"]).value)
        kind = kind_of(type_)
        data = None
        if "workgroup" not in str(type_.memory_space):
            initial = op.attributes["initial_value"]
            data = round_to(kind, np.array(ir.DenseElementsAttr(initial)).reshape(-1))
        out[name] = _GlobalSpec(name, tuple(type_.shape), kind, data)
    return out


def kernels_in(module: ir.Module | ir.Operation) -> dict[str, ir.Operation]:
    """Every ``gpu.func`` of ``module`` (inside its ``gpu.module``s) by name."""
    found: dict[str, ir.Operation] = {}

    def visit(op: ir.Operation) -> None:
        for region in op.regions:
            for block in region.blocks:
                for child in block.operations:
                    child_op = child.operation
                    if child_op.name == "gpu.func":
                        found[ir.StringAttr(child_op.attributes["sym_name"]).value] = child_op
                    elif child_op.name in ("gpu.module", "builtin.module"):
                        visit(child_op)

    visit(module.operation if isinstance(module, ir.Module) else module)
    return found


def run_kernel(
    module: ir.Module, info: Any, bindings: Mapping[str, Buffer | int | float], **options: Any
) -> None:
    """Runs the kernel of ``info`` (a ``KernelInfo``) in ``module`` with its parameters bound
    by name; the grid is ``info.grid`` evaluated over the integer bindings."""
    from tessera.runtime import expr

    with module.context:
        kernel = Kernel(kernels_in(module)[info.name])
    scalars = {k: v for k, v in bindings.items() if isinstance(v, int)}
    grid = [expr.evaluate(g, scalars) for g in info.grid]
    kernel.launch(
        grid, info.block, info.smem_bytes, [bindings[p.name] for p in info.params], **options
    )
