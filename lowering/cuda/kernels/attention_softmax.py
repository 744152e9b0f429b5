"""The online softmax of the tensor-core attention kernel, on one warp's score fragments.

A thread holds, for the two rows g and g + 8 of its warp's 16 queries, the scores of columns
8·j + 2q and 8·j + 2q + 1 of every 8-key n-tile j (the mma.sync C layout). The four threads of
a quad share a row, so a row's maximum is the thread's own maximum combined over lanes
``^1`` and ``^2``; a row's sum stays per thread until the end (the rescale factors are the
same on the four threads, so the partial sums add up once, after the last tile).

Scores live in a "raw" domain r with a positive factor f such that r·f is the score in base-2
logits: r = q·k and f = scale·log2(e) without a softcap, r = tanh(q·k·scale/c) and
f = c·log2(e) with one. Maxima are taken on r (f > 0 keeps the order) and p = 2^(r·f − m·f)
is one fma and one ex2 per score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlir import ir

from . import attention_ir as a
from .attention import AttentionConfig

NEG_INF = -math.inf


@dataclass(frozen=True)
class RowState:
    """Per thread: the running maximum (raw domain) and partial sum of rows g and g + 8."""

    m: tuple[ir.Value, ir.Value]
    l: tuple[ir.Value, ir.Value]


def score_factor(cfg: AttentionConfig) -> float:
    log2e = 1.0 / math.log(2.0)
    if cfg.softcap is None:
        return cfg.scale * log2e
    return cfg.softcap * log2e


def raw_scores(cfg: AttentionConfig, s: list[list[ir.Value]]) -> list[list[ir.Value]]:
    """q·k to the raw domain: unchanged, or tanh(q·k·scale/c) with a softcap."""
    if cfg.softcap is None:
        return s
    factor = cfg.scale / cfg.softcap
    return [[a.fast_tanh(x, factor) for x in tile] for tile in s]


@dataclass(frozen=True)
class MaskFrame:
    """What the per-element mask needs (i32): the first key of this thread's columns
    (k0 + 2q), and for each of its two rows ``row + T - S`` (the last key it may see)."""

    key0: ir.Value
    last_key: tuple[ir.Value, ir.Value]
    keys: ir.Value  # T


def mask_scores(
    cfg: AttentionConfig, s: list[list[ir.Value]], frame: MaskFrame
) -> list[list[ir.Value]]:
    """-inf where key t is not visible to the row: t >= T, or (causal) t > row + T - S, or
    (window) t <= row + T - S - w."""
    out = []
    for j, tile in enumerate(s):
        masked = []
        for e, x in enumerate(tile):
            key = a.add(frame.key0, 8 * j + e % 2)
            last = frame.last_key[e // 2]
            visible = a.cmp("slt", key, frame.keys)
            if cfg.causal:
                visible = a.both(visible, a.cmp("sle", key, last))
            if cfg.window is not None:
                visible = a.both(visible, a.cmp("sgt", key, a.sub(last, cfg.window)))
            masked.append(a.select(visible, x, NEG_INF))
        out.append(masked)
    return out


def quad_max(value: ir.Value) -> ir.Value:
    value = a.fmax(value, a.shuffle_xor(value, 1))
    return a.fmax(value, a.shuffle_xor(value, 2))


def quad_sum(value: ir.Value) -> ir.Value:
    value = a.fadd(value, a.shuffle_xor(value, 1))
    return a.fadd(value, a.shuffle_xor(value, 2))


def softmax_step(
    cfg: AttentionConfig, r: list[list[ir.Value]], state: RowState
) -> tuple[list[list[ir.Value]], tuple[ir.Value, ir.Value], RowState]:
    """One key tile of the online softmax: returns p (same layout as r), the factor α of each
    row by which the output accumulator must be rescaled, and the new row state.

    A row whose maximum is still -inf (no visible key yet) subtracts 0 instead, so that p and
    α come out 0 rather than NaN (2^(-inf - -inf))."""
    f = score_factor(cfg)
    p = [list(tile) for tile in r]
    alphas = []
    ms = []
    ls = []
    for half in range(2):
        values = [tile[2 * half + i] for tile in r for i in range(2)]
        tile_max = a.tree(values, a.fmax)
        m_new = a.fmax(state.m[half], quad_max(tile_max))
        m_use = a.select(a.fcmp("oeq", m_new, NEG_INF), 0.0, m_new)
        shift = a.fmul(m_use, -f)
        alpha = a.exp2(a.fma(state.m[half], f, shift), fast=True)
        for tile_p, tile in zip(p, r, strict=True):
            for i in range(2):
                tile_p[2 * half + i] = a.exp2(a.fma(tile[2 * half + i], f, shift), fast=True)
        total = a.tree([tile[2 * half + i] for tile in p for i in range(2)], a.fadd)
        ls.append(a.fma(state.l[half], alpha, total))
        ms.append(m_new)
        alphas.append(alpha)
    return p, (alphas[0], alphas[1]), RowState((ms[0], ms[1]), (ls[0], ls[1]))


def rescale(acc: list[list[ir.Value]], alpha: tuple[ir.Value, ir.Value]) -> list[list[ir.Value]]:
    """The output accumulator's rows times their α."""
    return [[a.fmul(x, alpha[e // 2]) for e, x in enumerate(tile)] for tile in acc]


def pack_probabilities(dtype: str, p: list[list[ir.Value]]) -> list[list[ir.Value]]:
    """p as the A operands of the P·V MMAs: for each 16-key step kk, the four registers
    (rows g / g + 8 of n-tile 2kk, then of n-tile 2kk + 1), each two keys rounded to dtype.
    The C layout of two adjacent n-tiles is exactly the A layout of one k step."""
    packed = [
        (a.pack_f32x2(dtype, tile[0], tile[1]), a.pack_f32x2(dtype, tile[2], tile[3])) for tile in p
    ]
    return [
        [packed[2 * kk][0], packed[2 * kk][1], packed[2 * kk + 1][0], packed[2 * kk + 1][1]]
        for kk in range(len(p) // 2)
    ]
