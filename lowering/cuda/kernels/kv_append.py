"""``tessera.kv.append`` on the GPU: the new keys and values of a call copied into their cache
slots.

One warp per (batch, token, kv head) copies that token's key row and value row: token s of
sequence b has cache index t = cache_index[b] + s and goes to slot t mod BS of block
``block_table[b, (t / BS) mod M]``. A table of M blocks is a ring of M·BS slots, so when a call
brings more tokens than the ring holds, tokens s and s + M·BS share a slot; only the last M·BS
tokens of the call are written (the op's "the later one stays"), which also keeps two threads
from ever storing to one element.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import gpu, memref, scf

from ..kernel import KernelInfo, KernelModule, Param
from . import attention_ir as a

WARP = 32


@dataclass(frozen=True)
class KvAppendConfig:
    """Static facts: the element type, kv heads, head dims of keys and values, BS."""

    dtype: str
    heads_kv: int
    head_dim: int
    value_dim: int
    block_size: int
    table_dtype: str = "i64"


def build_kv_append(km: KernelModule, cfg: KvAppendConfig) -> KernelInfo:
    name = (
        f"tessera_kv_append_{cfg.dtype}_h{cfg.heads_kv}_d{cfg.head_dim}_{cfg.value_dim}"
        f"_bs{cfg.block_size}_{cfg.table_dtype}"
    )
    params = (
        Param.buffer("k", cfg.dtype),
        Param.buffer("v", cfg.dtype),
        Param.buffer("k_cache", cfg.dtype),
        Param.buffer("v_cache", cfg.dtype),
        Param.buffer("block_table", cfg.table_dtype),
        Param.buffer("cache_index", "i64"),
        *(Param.scalar(f"{t}_{s}", "i64") for t in ("k", "v") for s in ("sb", "sh", "ss")),
        Param.scalar("B", "i64"),
        Param.scalar("S", "i64"),
        Param.scalar("M", "i64"),
    )
    info = KernelInfo(name, params, (f"B * S * {cfg.heads_kv}", "1", "1"), (WARP, 1, 1))
    if km.has_kernel(name):
        return info
    function, block = km.add_kernel(name, params)
    function.attributes["known_block_size"] = ir.DenseI32ArrayAttr.get([WARP, 1, 1])
    args = {p.name: v for p, v in zip(params, block.arguments, strict=True)}
    with ir.InsertionPoint(block):
        _emit(cfg, args)
        gpu.ReturnOp([])
    return info


def _copy_row(
    source: ir.Value, start: ir.Value, target: ir.Value, at: ir.Value, lane: ir.Value, dim: int
) -> None:
    for i in range(-(-dim // WARP)):
        d = a.add(lane, WARP * i)
        if WARP * (i + 1) <= dim:
            value = memref.load(source, [a.add(start, d)])
            memref.store(value, target, [a.add(at, d)])
            continue
        edge = a.if_op(a.cmp("slt", d, dim))
        with ir.InsertionPoint(edge.then_block):
            value = memref.load(source, [a.add(start, d)])
            memref.store(value, target, [a.add(at, d)])
            scf.yield_([])


def cache_slot(
    args: dict[str, ir.Value],
    batch: ir.Value,
    token: ir.Value,
    width: ir.Value,
    kv_head: ir.Value,
    heads_kv: int,
    block_size: int,
) -> ir.Value:
    """The cache row (an index into [blocks, Hkv, BS] rows) of ``token`` of ``batch``'s call
    for ``kv_head``: cache index t = cache_index[batch] + token, slot t mod BS of block
    ``block_table[batch, (t / BS) mod width]``."""
    index = a.add(a.to_index(memref.load(args["cache_index"], [batch])), token)
    page = a.rem(a.div(index, block_size), width)
    physical = a.to_index(memref.load(args["block_table"], [a.add(a.mul(batch, width), page)]))
    return a.add(
        a.mul(a.add(a.mul(physical, heads_kv), kv_head), block_size), a.rem(index, block_size)
    )


def _emit(cfg: KvAppendConfig, args: dict[str, ir.Value]) -> None:
    lane = gpu.thread_id(gpu.Dimension.x)
    seq, width = a.to_index(args["S"]), a.to_index(args["M"])
    # block x = (batch · S + token) · Hkv + kv head
    unit = gpu.block_id(gpu.Dimension.x)
    kv_head = a.rem(unit, cfg.heads_kv)
    token = a.rem(a.div(unit, cfg.heads_kv), seq)
    batch = a.div(a.div(unit, cfg.heads_kv), seq)
    ring = a.mul(width, cfg.block_size)
    kept = a.if_op(a.cmp("sge", a.add(token, ring), seq))
    with ir.InsertionPoint(kept.then_block):
        slot = cache_slot(args, batch, token, width, kv_head, cfg.heads_kv, cfg.block_size)
        for part, dim in (("k", cfg.head_dim), ("v", cfg.value_dim)):
            start = a.add(
                a.add(
                    a.mul(batch, a.to_index(args[f"{part}_sb"])),
                    a.mul(kv_head, a.to_index(args[f"{part}_sh"])),
                ),
                a.mul(token, a.to_index(args[f"{part}_ss"])),
            )
            _copy_row(args[part], start, args[f"{part}_cache"], a.mul(slot, dim), lane, dim)
        scf.yield_([])
