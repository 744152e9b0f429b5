"""Rules: warp collectives (shuffles, mma fragments, ldmatrix)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from mlir import ir

from .access import _addresses, _aligned, _initialized, _not_flying, _words
from .control_flow import _uniform
from .driver import rule
from .kinds import KINDS, WARP, from_bits, kind_of
from .memory import _SharedRef
from .vector_ops import _enum_word

if TYPE_CHECKING:
    from .driver import Kernel
    from .kinds import Kind
    from .state import Step, _Op, _Run


def _full_warps(run: _Run, info: _Op) -> None:
    if run.full:
        return
    lanes = run.active.reshape(-1, WARP)
    partial = lanes.any(axis=1) & ~lanes.all(axis=1)
    if partial.any():
        w = int(np.flatnonzero(partial)[0])
        raise info.fault(
            run,
            f"only {int(lanes[w].sum())} of the 32 lanes of a warp execute this warp-collective "
            "op (it sits in divergent control flow)",
        )


def _shuffle_source(
    kind: str, b: np.ndarray, c: np.ndarray, lane: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """shfl.sync's source lane per the PTX ISA (``c``: clamp in bits 0-4, segment mask in
    bits 8-12); a lane whose source is out of range reads its own value."""
    b = b.astype(np.int64) & 31
    c = c.astype(np.int64)
    mask = (c >> 8) & 31
    clamp = c & 31
    max_lane = (lane & mask) | (clamp & ~mask)
    min_lane = lane & mask
    if kind == "up":
        j = lane - b
        valid = j >= max_lane
    elif kind == "down":
        j = lane + b
        valid = j <= max_lane
    elif kind == "bfly":
        j = lane ^ b
        valid = j <= max_lane
    else:
        j = min_lane | (b & ~mask)
        valid = j <= max_lane
    return np.where(valid, j, lane), valid


def _shuffled(
    run: _Run, info: _Op, value: np.ndarray, kind: str, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    _full_warps(run, info)
    lane = run.tid % WARP
    source, valid = _shuffle_source(kind, np.broadcast_to(b, (run.T,)), c, lane)
    if value.shape[0] == 1:
        return value, valid
    return value[(np.arange(run.T) - lane) + source], valid


@rule("gpu.shuffle")
def _gpu_shuffle(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    value, offset, width = k.ins(op)
    out, valid_out = (k.slot(r) for r in op.results)
    mode = _enum_word(op.attributes["mode"])
    kind = {"xor": "bfly", "down": "down", "up": "up", "idx": "idx"}[mode]

    def shuffle(run: _Run) -> None:
        r = run.regs
        w = r[width].astype(np.int64)
        c = ((32 - w) << 8) | (0 if kind == "up" else 31)
        r[out], r[valid_out] = _shuffled(run, info, r[value], kind, r[offset], c)

    return shuffle


@rule("nvvm.shfl.sync")
def _nvvm_shuffle(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    mask, value, offset, clamp = k.ins(op)
    out = k.slot(op.results[0])
    kind = _enum_word(op.attributes["kind"])
    if "return_value_and_is_valid" in op.attributes:
        raise NotImplementedError(f"{k.name}: nvvm.shfl.sync returning a validity bit")

    def shuffle(run: _Run) -> None:
        r = run.regs
        if _uniform(run, r[mask]) != -1:
            raise info.fault(run, "a shuffle over part of the warp")
        r[out], _ = _shuffled(run, info, r[value], kind, r[offset], r[clamp])

    return shuffle


# Fragment tables of mma.m16n8k16 / m16n8k8 (PTX ISA, "Matrix Fragments for mma.m16n8k16"):
# lane = 4 * group + t; each register holds two 16-bit elements (consecutive columns of A,
# consecutive rows of B) or one f32 of C/D.
GROUP = np.arange(WARP) // 4
QUAD = np.arange(WARP) % 4
PAIR = np.arange(2)


def _a_cell(reg: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, first column) of A register ``reg`` per lane (K = 16: a0..a3, K = 8: a0, a1)."""
    if k == 16:
        return GROUP + 8 * (reg % 2), 2 * QUAD + 8 * (reg // 2)
    return GROUP + 8 * reg, 2 * QUAD


def _b_cell(reg: int) -> tuple[np.ndarray, np.ndarray]:
    """(first row k, column n) of B register ``reg``."""
    return 2 * QUAD + 8 * reg, GROUP


def _c_cell(reg: int) -> tuple[np.ndarray, np.ndarray]:
    return GROUP + 8 * (reg // 2), 2 * QUAD + reg % 2


def _halves(value: np.ndarray, kind: Kind, T: int) -> np.ndarray:
    """A register of two 16-bit elements as (threads, 2) floats: a vector<2xT> or a packed
    i32 (element 0 in the low half)."""
    value = np.broadcast_to(value, (T, *value.shape[1:]))
    if value.dtype == np.int32:
        bits = value.view(np.uint32)
        pair = np.stack([bits & 0xFFFF, bits >> 16], axis=-1).astype(np.uint16)
        return from_bits(kind, pair)
    return value.reshape(T, 2)


def mma(
    run: _Run,
    info: _Op,
    kind: Kind,
    k: int,
    a: list[np.ndarray],
    b: list[np.ndarray],
    c: list[np.ndarray],
) -> list[np.ndarray]:
    """D = A·B + C of m16n8k{k} for every warp (float64 products and sums, rounded once);
    returns D's four registers per thread."""
    _full_warps(run, info)
    T = run.T
    W = T // WARP
    A = np.zeros((W, 16, k))
    B = np.zeros((W, k, 8))
    C = np.zeros((W, 16, 8))
    for reg, value in enumerate(a):
        row, col = _a_cell(reg, k)
        A[:, row[:, None], col[:, None] + PAIR] = _halves(value, kind, T).reshape(W, WARP, 2)
    for reg, value in enumerate(b):
        row, col = _b_cell(reg)
        B[:, row[:, None] + PAIR, col[:, None]] = _halves(value, kind, T).reshape(W, WARP, 2)
    for reg, value in enumerate(c):
        row, col = _c_cell(reg)
        C[:, row, col] = np.broadcast_to(value, (T,)).reshape(W, WARP)
    D = A @ B + C
    out = []
    for reg in range(4):
        row, col = _c_cell(reg)
        out.append(D[:, row, col].reshape(T).astype(np.float32))
    return out


def _mma_type(attr: ir.Attribute) -> str:
    return str(attr).split("<")[-1].rstrip(">")


@rule("nvvm.mma.sync")
def _nvvm_mma(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    na, nb, nc = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))
    ins = k.ins(op)
    out = k.slot(op.results[0])
    shape = str(op.attributes["shape"])
    kdim = 16 if "k = 16" in shape else 8
    if "m = 16" not in shape or "n = 8" not in shape:
        raise NotImplementedError(f"{k.name}: mma shape {shape}")
    if "row" not in str(op.attributes["layoutA"]) or "col" not in str(op.attributes["layoutB"]):
        raise NotImplementedError(f"{k.name}: mma.sync layouts other than row.col")
    if "multiplicandAPtxType" in op.attributes:
        kind = KINDS[_mma_type(op.attributes["multiplicandAPtxType"])]
    else:
        kind = kind_of(op.operands[0].type)
    if kind.name not in ("bf16", "f16") or nc != 4 or "f32" not in str(op.results[0].type):
        raise NotImplementedError(f"{k.name}: mma.sync of {kind.name} into {op.results[0].type}")
    if (na, nb) != ((4, 2) if kdim == 16 else (2, 1)):
        raise NotImplementedError(f"{k.name}: mma.sync with {na} A and {nb} B registers")

    def step(run: _Run) -> None:
        r = run.regs
        regs = [r[i] for i in ins]
        d = mma(run, info, kind, kdim, regs[:na], regs[na : na + nb], regs[na + nb :])
        r[out] = np.stack(d, axis=1)

    return step


@rule("nvgpu.mma.sync")
def _nvgpu_mma(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    a, b, c = k.ins(op)
    out = k.slot(op.results[0])
    m, n, kdim_value = (ir.IntegerAttr(x).value for x in ir.ArrayAttr(op.attributes["mmaShape"]))
    kind = kind_of(op.operands[0].type)
    accumulator = kind_of(op.operands[2].type).name
    if (m, n) != (16, 8) or kind.name not in ("bf16", "f16") or accumulator != "f32":
        raise NotImplementedError(f"{k.name}: nvgpu.mma.sync {m}x{n}x{kdim_value} of {kind.name}")

    def step(run: _Run) -> None:
        r = run.regs
        A, B, C = (np.broadcast_to(r[i], (run.T, *r[i].shape[1:])) for i in (a, b, c))
        d = mma(
            run,
            info,
            kind,
            kdim_value,
            [A[:, i] for i in range(A.shape[1])],
            [B[:, i] for i in range(B.shape[1])],
            [C[:, 0, 0], C[:, 0, 1], C[:, 1, 0], C[:, 1, 1]],
        )
        r[out] = np.stack(d, axis=1).reshape(run.T, 2, 2)

    return step


@rule("nvgpu.ldmatrix")
def _ldmatrix(k: Kernel, op: ir.Operation, info: _Op) -> Step:
    """ldmatrix.sync.aligned.m8n8.x{tiles}[.trans].b16: lanes 8j..8j+7 address the rows of
    matrix j; lane l receives row l/4, columns 2(l%4), 2(l%4)+1 (``.trans``: that column's
    two rows)."""
    view: Any = op.opview
    ref = k.slot(view.srcMemref)
    idx = [k.slot(v) for v in view.indices]
    out = k.slot(op.results[0])
    tiles = ir.IntegerAttr(op.attributes["numTiles"]).value
    trans = ir.BoolAttr(op.attributes["transpose"]).value
    kind = kind_of(op.results[0].type)

    def step(run: _Run) -> None:
        _full_warps(run, info)
        r = run.regs
        memory = r[ref]
        outer = run.active
        addressing = outer & (run.tid % WARP < 8 * tiles)
        run.set_active(addressing)
        try:
            at = _addresses(run, info, memory, [r[i] for i in idx], 8)
            if not isinstance(memory, _SharedRef):
                raise info.fault(run, "ldmatrix reads shared memory only")
            _aligned(run, info, at, 16, "an ldmatrix row")
            run.launch.count_conflicts("ldmatrix", at % memory.space.stride)
            words = _words(at, 16, True)
            _not_flying(run, info, memory.space, words, "reads")
            _initialized(run, info, memory.space, words)
            memory.space.log.add(words, run.warp_sel, False, info, memory.space)
        finally:
            run.set_active(outer)
        raw = np.ascontiguousarray(memory.space.data[at[:, None] + np.arange(16)])
        rows = raw.view(np.uint16).reshape(-1, tiles, 8, 8)  # warp, matrix, row, column
        if trans:
            picked = rows[:, :, (2 * QUAD)[:, None] + PAIR, GROUP[:, None]]
        else:
            picked = rows[:, :, GROUP[:, None], (2 * QUAD)[:, None] + PAIR]
        fragments = from_bits(kind, picked.transpose(0, 2, 1, 3))  # warp, lane, matrix, pair
        values = fragments.reshape(-1, tiles, 2)
        if run.full:
            r[out] = values
            return
        full = np.zeros((run.T, tiles, 2), dtype=np.float32)
        warps = outer.reshape(-1, WARP).any(axis=1)
        full.reshape(-1, WARP, tiles, 2)[warps] = values.reshape(-1, WARP, tiles, 2)
        r[out] = full

    return step
