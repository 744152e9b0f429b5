"""Rules: memref views, gpu ids, barriers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from mlir import ir

from .access import check_shared
from .driver import rule
from .kinds import KINDS, WARP, kind_of
from .memory import _ConstRef, _SharedRef, _Space
from .vector_ops import _enum_word

if TYPE_CHECKING:
    from .driver import Kernel
    from .state import Step, _Op, _Run


@rule("gpu.dynamic_shared_memory")
def _dynamic_shared(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    out = k.slot(op.results[0])
    base = np.zeros(1, dtype=np.int64)

    def dynamic(run: _Run) -> None:
        run.regs[out] = _SharedRef(run.shared, base, (run.launch.smem,), KINDS["i8"])

    return dynamic


@rule("memref.view")
def _view(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    source, shift, *sizes = k.ins(op)
    out = k.slot(op.results[0])
    type_ = ir.MemRefType(op.results[0].type)
    kind = kind_of(type_)
    static = list(type_.shape)

    def view(run: _Run) -> None:
        r = run.regs
        src = r[source]
        if not isinstance(src, _SharedRef):
            raise info.fault(run, "views only shared memory here")
        offset = r[shift].astype(np.int64)
        if (run.lanes(offset) % kind.size).any():
            raise info.fault(run, f"a {kind.name} view at a misaligned byte offset")
        dims = iter(int(r[s][0]) for s in sizes)
        shape = tuple(d if d >= 0 else next(dims) for d in static)
        r[out] = _SharedRef(src.space, src.base + offset, shape, kind)

    return view


@rule("memref.get_global")
def _get_global(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    name = ir.FlatSymbolRefAttr(op.attributes["name"]).value
    spec = k.globals[name]
    out = k.slot(op.results[0])
    if spec.data is not None:
        constant = _ConstRef(spec.data, spec.kind, name)

        def constant_step(run: _Run) -> None:
            run.regs[out] = constant

        return constant_step
    size = int(np.prod(spec.shape)) * spec.kind.size
    base = np.zeros(1, dtype=np.int64)

    def workgroup(run: _Run) -> None:
        space = run.statics.get(name)
        if space is None:
            space = run.statics[name] = _Space(size, run.blocks, f"shared @{name}")
        run.regs[out] = _SharedRef(space, base, spec.shape, spec.kind)

    return workgroup


def _dimension(op: ir.Operation) -> int:
    return "xyz".index(_enum_word(op.attributes["dimension"]))


@rule("gpu.thread_id", "gpu.block_id", "gpu.grid_dim", "gpu.block_dim", "gpu.lane_id")
def _ids(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    out = k.slot(op.results[0])
    name = op.name
    axis = _dimension(op) if name != "gpu.lane_id" else 0
    zero = np.zeros(1, dtype=np.int64)

    def ids(run: _Run) -> None:
        if name == "gpu.thread_id":
            value = run.tid if axis == 0 else zero
        elif name == "gpu.lane_id":
            value = run.tid % WARP
        elif name == "gpu.block_id":
            value = run.block_xyz[axis]
        elif name == "gpu.grid_dim":
            value = np.array([run.launch.grid[axis]], dtype=np.int64)
        else:
            value = np.array([run.launch.threads if axis == 0 else 1], dtype=np.int64)
        run.regs[out] = value

    return ids


@rule("gpu.barrier", "nvvm.barrier0")
def _barrier(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    def barrier(run: _Run) -> None:
        spaces = [run.shared, *run.statics.values()]
        if run.full:
            for space in spaces:
                check_shared(run, space)
            return
        threads = run.launch.threads
        counts = run.active.reshape(run.blocks, run.launch.lanes)[:, :threads].sum(axis=1)
        split = (counts != 0) & (counts != threads)
        if split.any():
            b = int(np.flatnonzero(split)[0])
            raise info.fault(
                run,
                f"{int(counts[b])} of {threads} threads of a block reach the barrier (it sits "
                "in control flow that diverges within the block)",
            )
        for space in spaces:
            check_shared(run, space, np.flatnonzero(counts))

    return barrier
