"""Several GEMVs of one x in one launch: the decode step's q, k and v projections.

At batch 1 the k and v projections of a multi-query model read 1 MB of weights each, a few
microseconds of bandwidth, and as launches of their own each also costs a launch and a ramp
up and down on a card mostly idle. Here the grid's x blocks are the GEMVs' column blocks one
after another: a block finds its GEMV by its index and runs that GEMV's block (``Gemv``,
w as [N, K]) with the index offset to its first one, so every GEMV keeps its own tile and its
own output.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, gpu, scf

from tessera.errors import LoweringError

from ..kernel import KernelInfo, KernelModule, Param, mark_reads_before_wait
from ..pipeline_smem import SMEM_ATTR
from .gemm import GemmConfig, kernel_name
from .gemm_gemv import Gemv, check_early_reads, check_tile, column_blocks, split_sums
from .gemm_ir import constant, if_op, index


@dataclass(frozen=True)
class GemvSiblings:
    """GEMVs that read the same x: no bias, gate or softcap, w as [N, K], one dtype, K and
    row count (their tiles may differ in columns)."""

    parts: tuple[GemmConfig, ...]

    def __post_init__(self) -> None:
        if len(self.parts) < 2:
            raise LoweringError("sibling GEMVs are two or more")
        first = self.parts[0]
        for cfg in self.parts:
            plain = not (cfg.has_bias or cfg.gated or cfg.softcap)
            if cfg.family != "gemv" or not cfg.transpose_w or not plain:
                raise LoweringError(f"{kernel_name(cfg)} is no plain [N, K] GEMV")
            shared = (cfg.dtype, cfg.K, cfg.gemv.rows, cfg.weights_before_wait)
            if shared != (first.dtype, first.K, first.gemv.rows, first.weights_before_wait):
                raise LoweringError(
                    "sibling GEMVs share dtype, K, rows per block and whether they read w "
                    "before their grid wait"
                )
            check_tile(cfg)

    def blocks(self) -> list[int]:
        """Each GEMV's column blocks, in order."""
        return [column_blocks(cfg) for cfg in self.parts]

    @property
    def name(self) -> str:
        first = self.parts[0]
        widths = "_".join(f"n{cfg.N}" for cfg in self.parts)
        tiles = "_".join(cfg.gemv.label.removeprefix(f"r{cfg.gemv.rows}") for cfg in self.parts)
        early = "_early" if first.weights_before_wait else ""
        return (
            f"gemm_gemv_siblings_{first.dtype}_k{first.K}_{widths}_r{first.gemv.rows}{tiles}"
            + early
        )

    def params(self) -> tuple[Param, ...]:
        dtype = self.parts[0].dtype
        out = [Param.buffer("x", dtype)]
        for i in range(len(self.parts)):
            out += [Param.buffer(f"w{i}", dtype), Param.buffer(f"y{i}", dtype)]
        return (*out, Param.scalar("M", "i32"))


def build_gemv_siblings(km: KernelModule, siblings: GemvSiblings) -> KernelInfo:
    """Adds the kernel (once) and returns how to launch it: x, then each GEMV's w and y, then
    M; grid x the GEMVs' column blocks together, grid y cdiv(M, rows)."""
    first = siblings.parts[0]
    warps = {cfg.gemv.warps for cfg in siblings.parts}
    if len(warps) != 1:
        raise LoweringError("sibling GEMVs share their warps per block")
    threads = warps.pop() * 32
    name = siblings.name
    weights = [f"w{i}" for i in range(len(siblings.parts))]
    info = KernelInfo(
        name,
        siblings.params(),
        (str(sum(siblings.blocks())), f"cdiv(M, {first.gemv.rows})", "1"),
        (threads, 1, 1),
        reads_before_wait=tuple(weights) if first.weights_before_wait else (),
    )
    if km.has_kernel(name):
        return info
    check_early_reads(km, first)
    function, block = km.add_kernel(name, info.params)
    with ir.InsertionPoint(block):
        args = list(block.arguments)
        x, m = args[0], args[-1]
        block_x = gpu.block_id(gpu.Dimension.x)
        start = 0
        for i, (cfg, count) in enumerate(zip(siblings.parts, siblings.blocks(), strict=True)):
            w, y = args[1 + 2 * i], args[2 + 2 * i]
            lower = arith.cmpi(arith.CmpIPredicate.uge, block_x, _index(start))
            upper = arith.cmpi(arith.CmpIPredicate.ult, block_x, _index(start + count))
            mine = if_op(arith.andi(lower, upper))
            with ir.InsertionPoint(mine.then_block):
                gemv = Gemv(cfg, x, [w], None)
                gemv.start(m, arith.subi(block_x, _index(start)))
                partials = split_sums(km, f"{name}_{i}", cfg)
                gemv.store_rows_of_w(y, *gemv.rows_of_w(partials))
                scf.YieldOp([])
            start += count
        gpu.ReturnOp([])
    function.attributes[SMEM_ATTR] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), 0)
    function.attributes["known_block_size"] = ir.DenseI32ArrayAttr.get([threads, 1, 1])
    mark_reads_before_wait(function, info.params, info.reads_before_wait)
    return info


def _index(value: int) -> ir.Value:
    return constant(index(), value)
