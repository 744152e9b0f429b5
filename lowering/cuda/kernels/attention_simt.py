"""The SIMT flash-attention kernel: one warp per query, correct before fast. It runs f32 on
NVIDIA (bf16/f16 there take the tensor-core kernel) and every dtype on devices without a
matrix-core attention kernel (``device.py``): 16-bit elements are widened to f32 as they are
loaded and the output rounded once.

A warp holds its query's row spread over the lanes (lane l holds elements l, l + 32, ...), and
walks exactly the keys its query may see (the causal and window bounds are computed per row,
so no score is ever masked): the lanes' partial dot products are summed with five butterfly
shuffles, then every lane runs the same online-softmax update (m, l) and rescales its slice of
the output accumulator. exp2 and tanh are libdevice's correctly rounded versions, and the
final division is exact, so results stay within a few f32 ulps of a float64 reference. The
warps of a block take consecutive queries of one head, so they read the same K/V rows through
L1.
"""

from __future__ import annotations

import math

from mlir import ir
from mlir.dialects import arith, gpu, memref, scf

from ..kernel import KernelModule
from . import attention_ir as a
from .attention import AttentionConfig, typed_params

WARP = 32


def emit_simt_kernel(km: KernelModule, cfg: AttentionConfig, name: str) -> int:
    """Adds the kernel; returns its threads per block (``cfg.warps`` warps, one query each)."""
    params = typed_params(cfg.dtype)
    fn, block = km.add_kernel(name, params)
    threads = cfg.warps * WARP
    fn.attributes["known_block_size"] = ir.DenseI32ArrayAttr.get([threads, 1, 1])
    args = {p.name: v for p, v in zip(params, block.arguments, strict=True)}
    with ir.InsertionPoint(block):
        _emit(km, cfg, args)
        gpu.ReturnOp([])
    return threads


def _load_row(buffer: ir.Value, start: ir.Value, lane: ir.Value, dim: int) -> list[ir.Value]:
    """Elements lane, lane + 32, ... of a row as f32 (0 past ``dim``; the index stays in the
    row)."""
    values = []
    for i in range(-(-dim // WARP)):
        d = a.add(lane, WARP * i)
        if WARP * (i + 1) <= dim:
            values.append(_widen(memref.load(buffer, [a.add(start, d)])))
            continue
        inside = a.cmp("slt", d, dim)
        value = _widen(memref.load(buffer, [a.add(start, a.select(inside, d, 0))]))
        values.append(a.select(inside, value, 0.0))
    return values


def _widen(value: ir.Value) -> ir.Value:
    return value if isinstance(value.type, ir.F32Type) else arith.extf(a.f32_type(), value)


def _narrow(value: ir.Value, buffer: ir.Value) -> ir.Value:
    """An f32 value rounded (to nearest even) to ``buffer``'s element type."""
    element = ir.MemRefType(buffer.type).element_type
    return value if isinstance(element, ir.F32Type) else arith.truncf(element, value)


def _emit(km: KernelModule, cfg: AttentionConfig, args: dict[str, ir.Value]) -> None:
    tid = gpu.thread_id(gpu.Dimension.x)
    lane = a.rem(tid, WARP)
    bh = gpu.block_id(gpu.Dimension.x)
    batch, head = a.div(bh, cfg.heads_q), a.rem(bh, cfg.heads_q)
    kv_head = a.div(head, cfg.group)
    row = a.add(a.mul(gpu.block_id(gpu.Dimension.y), cfg.warps), a.div(tid, WARP))
    seq_q, seq_k = a.to_index(args["S"]), a.to_index(args["T"])

    def at(t: str, h: ir.Value) -> ir.Value:
        sb, sh = a.to_index(args[f"{t}_sb"]), a.to_index(args[f"{t}_sh"])
        return a.add(a.mul(batch, sb), a.mul(h, sh))

    inside = a.if_op(a.cmp("slt", row, seq_q))
    with ir.InsertionPoint(inside.then_block):
        q_start = a.add(at("q", head), a.mul(row, a.to_index(args["q_ss"])))
        q = _load_row(args["q"], q_start, lane, cfg.head_dim)
        last = a.add(row, a.sub(seq_k, seq_q))  # the last key this query may see
        end = a.smin(a.smax(a.add(last, 1), 0), seq_k) if cfg.causal else seq_k
        first = a.idx(0)
        if cfg.window is not None:
            first = a.smin(a.smax(a.add(last, 1 - cfg.window), 0), seq_k)
        k_base, v_base = at("k", kv_head), at("v", kv_head)
        k_ss, v_ss = a.to_index(args["k_ss"]), a.to_index(args["v_ss"])
        n_out = -(-cfg.dv // WARP)
        init = [a.f32(-math.inf), a.f32(0.0)] + [a.f32(0.0)] * n_out
        loop = a.for_op(first, a.smax(end, first), init)
        with ir.InsertionPoint(loop.body):
            t = loop.induction_variable
            m, l, *acc = loop.inner_iter_args
            k = _load_row(args["k"], a.add(k_base, a.mul(t, k_ss)), lane, cfg.head_dim)
            dot = a.fmul(q[0], k[0])
            for x, y in zip(q[1:], k[1:], strict=True):
                dot = a.fma(x, y, dot)
            for mask in (16, 8, 4, 2, 1):
                dot = a.fadd(dot, km.device.shuffle_xor(dot, mask))
            score = a.fmul(dot, cfg.scale)
            if cfg.softcap is not None:
                score = a.fmul(a.tanh(a.fmul(score, 1.0 / cfg.softcap)), cfg.softcap)
            x = a.fmul(score, 1.0 / math.log(2.0))
            m_new = a.fmax(m, x)
            alpha = a.exp2(a.fsub(m, m_new), fast=False)
            p = a.exp2(a.fsub(x, m_new), fast=False)
            v = _load_row(args["v"], a.add(v_base, a.mul(t, v_ss)), lane, cfg.dv)
            acc = [a.fma(p, vi, a.fmul(o, alpha)) for o, vi in zip(acc, v, strict=True)]
            scf.yield_([m_new, a.fma(l, alpha, p), *acc])
        _, total, *acc = loop.results
        inverse = a.select(a.fcmp("ogt", total, 0.0), a.fdiv(1.0, total), 0.0)
        o_start = a.add(at("o", head), a.mul(row, a.to_index(args["o_ss"])))
        for i, value in enumerate(acc):
            d = a.add(lane, WARP * i)
            out = _narrow(a.fmul(value, inverse), args["o"])
            if WARP * (i + 1) <= cfg.dv:
                memref.store(out, args["o"], [a.add(o_start, d)])
                continue
            edge = a.if_op(a.cmp("slt", d, cfg.dv))
            with ir.InsertionPoint(edge.then_block):
                memref.store(out, args["o"], [a.add(o_start, d)])
                scf.yield_([])
        scf.yield_([])
