"""Rules: structured control flow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from mlir import ir

from .driver import rule
from .kinds import kind_of

if TYPE_CHECKING:
    from .driver import Kernel
    from .state import Step, _Op, _Run


def _uniform(run: _Run, value: np.ndarray) -> int | None:
    """The value every active thread holds, or None."""
    if value.shape[0] == 1:
        return int(value[0])
    lanes = run.lanes(value)
    first = int(lanes[0])
    return first if (lanes == first).all() else None


def _merge(mask: np.ndarray, new: Any, old: Any) -> Any:
    if new is None or old is None or new is old:
        return new
    ndim = max(np.ndim(new), np.ndim(old))
    return np.where(mask.reshape(len(mask), *([1] * (ndim - 1))), new, old)


@rule("scf.for")
def _for(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    lb, ub, st, *inits = k.ins(op)
    body = op.regions[0].blocks[0]
    iv = k.slot(body.arguments[0])
    iv_type = kind_of(body.arguments[0].type).reg
    args = [k.slot(a) for a in list(body.arguments)[1:]]
    steps, yields = k.compile_block(body)
    outs = [k.slot(r) for r in op.results]

    def loop(run: _Run) -> None:
        r = run.regs
        step = _uniform(run, r[st])
        if step is None or step <= 0:
            raise info.fault(run, "the loop step is not a positive block-uniform value")
        carried = [r[i] for i in inits]
        lo, hi = _uniform(run, r[lb]), _uniform(run, r[ub])
        if lo is not None and hi is not None:
            for i in range(lo, hi, step):
                r[iv] = np.array([i], dtype=iv_type)
                for a, v in zip(args, carried, strict=True):
                    r[a] = v
                for s in steps:
                    s(run)
                carried = [r[y] for y in yields]
        else:
            # Bounds differ between threads: run the union of the ranges, each thread active
            # (and its carried values updated) only inside its own.
            outer = run.active
            lo_t = np.broadcast_to(r[lb], (run.T,))
            hi_t = np.broadcast_to(r[ub], (run.T,))
            start, stop = int(run.lanes(lo_t).min()), int(run.lanes(hi_t).max())
            # Every value in the union: a thread's own iterations need not fall on the
            # lowest thread's step grid.
            for i in range(start, stop):
                inside = outer & (i >= lo_t) & (i < hi_t) & ((i - lo_t) % step == 0)
                if not inside.any():
                    continue
                run.set_active(inside)
                r[iv] = np.array([i], dtype=iv_type)
                for a, v in zip(args, carried, strict=True):
                    r[a] = v
                for s in steps:
                    s(run)
                carried = [_merge(inside, r[y], c) for y, c in zip(yields, carried, strict=True)]
            run.set_active(outer)
        for o, v in zip(outs, carried, strict=True):
            r[o] = v

    return loop


@rule("scf.if")
def _if(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    (cond,) = k.ins(op)
    then_steps, then_yields = k.compile_block(op.regions[0].blocks[0])
    has_else = len(op.regions[1].blocks) > 0
    else_steps, else_yields = k.compile_block(op.regions[1].blocks[0]) if has_else else ([], [])
    outs = [k.slot(r) for r in op.results]

    def branch(run: _Run, steps: list[Step], yields: list[int]) -> list[Any]:
        for s in steps:
            s(run)
        return [run.regs[y] for y in yields]

    def if_step(run: _Run) -> None:
        r = run.regs
        c = r[cond]
        if c.shape[0] == 1:
            results = branch(
                run, *((then_steps, then_yields) if c[0] else (else_steps, else_yields))
            )
        else:
            outer = run.active
            taken = outer & c
            rest = outer & ~c
            if not rest.any():
                results = branch(run, then_steps, then_yields)
            elif not taken.any():
                results = branch(run, else_steps, else_yields)
            else:
                run.set_active(taken)
                first = branch(run, then_steps, then_yields)
                run.set_active(rest)
                second = branch(run, else_steps, else_yields)
                run.set_active(outer)
                results = [_merge(c, a, b) for a, b in zip(first, second, strict=True)]
        for o, v in zip(outs, results, strict=False):
            r[o] = v

    return if_step
