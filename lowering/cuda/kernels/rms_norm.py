"""``tessera.norm.rms`` on CUDA: y = x · rsqrt(mean(x²) + eps) · (offset + w), per row, in f32.

The numerics are the CPU path's (``lowering/cpu/rms_norm.py``), which are Gemma's: the row is
widened to f32, the mean divides the sum of squares by D, the inverse root is 1/sqrt (both
correctly rounded, as torch's CPU computes it; not the ``rsqrt.approx`` instruction),
``(x · inv) · (offset + w)`` is computed in f32 and rounded once to x's dtype. Only the order of
the sum of squares differs (a tree across lanes instead of four sequential accumulators).

With ``residual=True`` the kernel is Gemma's "add, then norm": s = x + r, rounded to the dtype
and written out (the next residual stream), and y = rmsnorm(s) from the rounded s, as the
model computes it from the stored bf16 sum. With a ``pre`` norm too it is Gemma 2 and 3's
"norm, add, norm": x is first normalised with the pre-norm's weight (rounded to the dtype, as
the model stores it), then added and normalised as above; the pre-normed rows never leave
registers.

Each row is spread over ``RowLayout.threads`` lanes, each lane holding ``chunks`` vectors of
``lanes`` elements in registers (``RowLayout`` below, which ``lookup`` shares): the
row is read from memory once, its sum of squares reduced with warp shuffles (and through
shared memory when a row spans several warps), and then written. A lane reads and writes only
its own elements, so y may alias x (and s may alias x or r): the kernel is in-place safe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, gpu, math, memref, scf, vector

from ..kernel import KernelInfo, KernelModule, Param, element_type

# Bytes per global access: the widest single load a thread issues (ld.global.v4.b32).
ACCESS_BYTES = 16
# Vectors one lane holds per row before the layout widens to more lanes: enough independent
# loads in flight per thread, few enough registers.
MAX_CHUNKS = 4
# Threads of a block when several rows share it (rows narrower than a warp's worth of access).
SMALL_ROWS_BLOCK = 128
WARP = 32
MAX_BLOCK = 1024

DTYPE_BYTES = {"bf16": 2, "f16": 2, "f32": 4, "i32": 4, "i64": 8}


# ---------------------------------------------------------------------------------------------
# Rows spread over lanes (used by the norm and by the lookup)


@dataclass(frozen=True)
class RowLayout:
    """A row of ``width`` elements read as ``width // lanes`` vectors of ``lanes`` elements,
    spread round-robin over ``threads`` lanes (vector ``k·threads + lane`` belongs to
    ``lane``), each lane holding at most ``chunks`` of them. ``rows_per_block`` rows share a
    block when ``threads`` is under a warp; a row spanning several warps has a block of its own.
    """

    width: int
    lanes: int
    threads: int
    chunks: int
    rows_per_block: int

    @property
    def vectors(self) -> int:
        return self.width // self.lanes

    @property
    def block(self) -> int:
        return self.threads * self.rows_per_block

    @property
    def warps_per_row(self) -> int:
        return max(1, self.threads // WARP)

    def chunk_always_in_row(self, k: int) -> bool:
        """Whether vector ``k·threads + lane`` exists for every lane (no bound check needed)."""
        return (k + 1) * self.threads <= self.vectors


def vector_lanes(width: int, element_bytes: int) -> int:
    """The most elements per access (a power of two) that divide ``width`` and fit
    ``ACCESS_BYTES``: every vector of a row then starts at a multiple of its own size."""
    lanes = ACCESS_BYTES // element_bytes
    while lanes > 1 and width % lanes:
        lanes //= 2
    return lanes


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def row_layout(width: int, element_bytes: int) -> RowLayout:
    """Lanes per row: the fewest whole warps that leave each lane at most ``MAX_CHUNKS``
    vectors; rows with fewer vectors than a warp's ``MAX_CHUNKS`` get a power-of-two share of
    a warp (so the shuffle tree stays inside the row) and share a block with other rows."""
    if width <= 0:
        raise ValueError(f"row width must be positive, got {width}")
    lanes = vector_lanes(width, element_bytes)
    vectors = width // lanes
    warps = -(-vectors // (WARP * MAX_CHUNKS))
    if warps == 1:
        threads = min(WARP, _next_power_of_two(-(-vectors // MAX_CHUNKS)))
        rows_per_block = SMALL_ROWS_BLOCK // threads
    else:
        warps = min(warps, MAX_BLOCK // WARP)
        threads = warps * WARP
        rows_per_block = 1
    chunks = -(-vectors // threads)
    return RowLayout(width, lanes, threads, chunks, rows_per_block)


# ---------------------------------------------------------------------------------------------
# Small builders shared by the kernels of this package (rope, lookup and elementwise import
# them from here)


def constant(type_: ir.Type, value: int | float | ir.Attribute) -> ir.Value:
    """``arith.constant`` (the bindings' wrapper, whose signature the generated stubs that
    type checkers see do not describe)."""
    return arith.constant(type_, value)  # type: ignore[call-arg]


def index(value: int) -> ir.Value:
    return constant(ir.IndexType.get(), value)


def f32(value: float) -> ir.Value:
    return constant(ir.F32Type.get(), value)


def if_op(condition: ir.Value, results: list[ir.Type] | None = None) -> scf.IfOp:
    """``scf.if`` with an else block when it yields ``results`` (the bindings' wrapper)."""
    if results:
        return scf.IfOp(condition, results, has_else=True)  # type: ignore[call-arg]
    return scf.IfOp(condition)  # type: ignore[call-arg]


def vector_of(lanes: int, dtype: str) -> ir.VectorType:
    return ir.VectorType.get([lanes], element_type(dtype))


def load_vector(buffer: ir.Value, offset: ir.Value, lanes: int, dtype: str) -> ir.Value:
    """``lanes`` elements at ``buffer[offset]``, one access: ``offset`` must be a multiple of
    ``lanes`` and the buffer 16-byte aligned, which the alignment attribute promises."""
    return vector.load(vector_of(lanes, dtype), buffer, [offset], alignment=alignment(lanes, dtype))


def store_vector(value: ir.Value, buffer: ir.Value, offset: ir.Value, dtype: str) -> None:
    lanes = ir.VectorType(value.type).shape[0]
    vector.store(value, buffer, [offset], alignment=alignment(lanes, dtype))


def alignment(lanes: int, dtype: str) -> int:
    """Bytes a vector of ``lanes`` elements at a multiple of ``lanes`` is aligned to, given
    buffers aligned to 16 bytes (torch's allocations and the arena's slices are)."""
    return min(ACCESS_BYTES, lanes * DTYPE_BYTES[dtype])


def widen(value: ir.Value, dtype: str) -> ir.Value:
    """A vector of ``dtype`` as f32 (exact)."""
    if dtype == "f32":
        return value
    lanes = ir.VectorType(value.type).shape[0]
    return arith.extf(vector_of(lanes, "f32"), value)


def narrow(value: ir.Value, dtype: str) -> ir.Value:
    """An f32 vector rounded to ``dtype`` (to nearest even, as torch's casts)."""
    if dtype == "f32":
        return value
    lanes = ir.VectorType(value.type).shape[0]
    return arith.truncf(vector_of(lanes, dtype), value)


def splat(value: float, lanes: int, dtype: str = "f32") -> ir.Value:
    vtype = vector_of(lanes, dtype)
    return constant(
        vtype, ir.DenseElementsAttr.get_splat(vtype, ir.FloatAttr.get(vtype.element_type, value))
    )


def when(
    condition: ir.Value | None,
    then: Callable[[], ir.Value | None],
    otherwise: ir.Value | None = None,
) -> ir.Value | None:
    """Runs the builder ``then`` (returning a value, or None) under ``condition`` (None:
    unconditionally); a value-returning branch yields ``otherwise`` when the condition fails."""
    if condition is None:
        return then()
    if otherwise is None:
        branch = if_op(condition)
        with ir.InsertionPoint(branch.then_block):
            then()
            scf.YieldOp([])
        return None
    branch = if_op(condition, [otherwise.type])
    with ir.InsertionPoint(branch.then_block):
        value = then()
        assert value is not None, "a branch that yields must return its value"
        scf.YieldOp([value])
    with ir.InsertionPoint(branch.else_block):
        scf.YieldOp([otherwise])
    return branch.results[0]


def all_of(*conditions: ir.Value | None) -> ir.Value | None:
    present = [c for c in conditions if c is not None]
    if not present:
        return None
    result = present[0]
    for condition in present[1:]:
        result = arith.andi(result, condition)
    return result


def sqrt(km: KernelModule, value: ir.Value) -> ir.Value:
    """Correctly rounded f32 square root (``sqrt.rn.f32``, as torch's), spelled as the kernel
    module's device needs it (``device.py``: libdevice's ``__nv_fsqrt_rn`` on NVIDIA)."""
    return km.device.sqrt(km, value)


def kernel_name(family: str, readable: str, config: object) -> str:
    """A PTX-safe, deterministic kernel name: the family, the readable static facts and a short
    digest of the whole configuration (eps, scale, theta... never printed as floats)."""
    digest = hashlib.sha1(repr(config).encode()).hexdigest()[:8]
    return f"tessera_{family}_{readable}_{digest}"


@dataclass(frozen=True)
class RowPosition:
    """Where a thread sits in the row layout: its row (index), whether that row exists, and
    its lane within the row."""

    row: ir.Value
    row_valid: ir.Value
    lane: ir.Value


def row_position(layout: RowLayout, rows: ir.Value) -> RowPosition:
    """Row and lane of this thread; ``rows`` is the i32 row count."""
    tid = gpu.thread_id(gpu.Dimension.x)
    block = gpu.block_id(gpu.Dimension.x)
    if layout.rows_per_block == 1:
        row, lane = block, tid
    else:
        first = arith.muli(block, index(layout.rows_per_block))
        row = arith.addi(first, arith.divui(tid, index(layout.threads)))
        lane = arith.remui(tid, index(layout.threads))
    count = arith.index_cast(ir.IndexType.get(), rows)
    valid = arith.cmpi(arith.CmpIPredicate.slt, row, count)
    return RowPosition(row, valid, lane)


def chunk_column(layout: RowLayout, lane: ir.Value, k: int) -> ir.Value:
    """Column of the first element of this lane's ``k``-th vector: (k·threads + lane)·lanes."""
    column = arith.muli(lane, index(layout.lanes))
    return arith.addi(column, index(k * layout.threads * layout.lanes))


def chunk_valid(layout: RowLayout, lane: ir.Value, k: int) -> ir.Value | None:
    """None when vector ``k`` exists for every lane, else the condition that it does."""
    if layout.chunk_always_in_row(k):
        return None
    limit = index(layout.vectors - k * layout.threads)
    return arith.cmpi(arith.CmpIPredicate.ult, lane, limit)


# ---------------------------------------------------------------------------------------------
# The norm


@dataclass(frozen=True)
class PreNorm:
    """The norm applied to x before the residual add: its eps, offset and weight dtype."""

    eps: float
    offset: float = 1.0
    w_dtype: str = "bf16"


@dataclass(frozen=True)
class RmsNormConfig:
    """Static facts of one RMSNorm kernel. ``dtype`` is x's (and y's, s's, r's) element type;
    ``w_dtype`` the weight's (default: ``dtype``); ``width`` is D, the normalised last axis."""

    dtype: str
    width: int
    eps: float
    offset: float = 1.0
    w_dtype: str = ""
    residual: bool = False
    pre: PreNorm | None = None

    @property
    def weight_dtype(self) -> str:
        return self.w_dtype or self.dtype


FLOAT_DTYPES = ("bf16", "f16", "f32")


def _warp_sum(value: ir.Value, width: int) -> ir.Value:
    """Butterfly sum over aligned groups of ``width`` lanes (a power of two ≤ 32): every lane
    of the group ends with the same total. All 32 lanes must execute it."""
    i32 = ir.IntegerType.get_signless(32)
    warp = constant(i32, WARP)
    step = width // 2
    while step:
        other = gpu.shuffle(value, constant(i32, step), warp, gpu.ShuffleMode.XOR)[0]
        value = arith.addf(value, other)
        step //= 2
    return value


def _block_sum(km: KernelModule, name: str, value: ir.Value, warps: int) -> ir.Value:
    """Sum over a block of ``warps`` whole warps: warp sums through a small shared array, then
    every thread adds the partials in the same order (so all hold the identical total)."""
    value = _warp_sum(value, WARP)
    partials = km.shared_array(f"{name}_partials", [warps], ir.F32Type.get())
    tid = gpu.thread_id(gpu.Dimension.x)
    lane = arith.remui(tid, index(WARP))
    first_lane = arith.cmpi(arith.CmpIPredicate.eq, lane, index(0))
    warp = arith.divui(tid, index(WARP))
    when(first_lane, lambda: memref.store(value, partials, [warp]))
    gpu.barrier()
    total = memref.load(partials, [index(0)])
    for w in range(1, warps):
        total = arith.addf(total, memref.load(partials, [index(w)]))
    return total


def build_rms_norm(km: KernelModule, cfg: RmsNormConfig) -> KernelInfo:
    """Adds the RMSNorm kernel for ``cfg`` to ``km`` (once) and says how to launch it.

    Params: ``x``, [``r``,] ``w``, ``y``, [``s``,] ``rows`` (i32), with x/r/y/s flat buffers of
    rows × D elements and w of D. Block: ``RowLayout.block`` threads; grid
    ``cdiv(rows, rows_per_block)`` blocks."""
    if cfg.dtype not in FLOAT_DTYPES or cfg.weight_dtype not in FLOAT_DTYPES:
        raise ValueError(f"rms_norm takes bf16/f16/f32, got {cfg.dtype}, {cfg.weight_dtype}")
    if cfg.pre is not None and not cfg.residual:
        raise ValueError("a pre-norm comes with the residual add")
    layout = row_layout(cfg.width, DTYPE_BYTES[cfg.dtype])
    suffix = ("_prenorm" if cfg.pre else "") + ("_residual" if cfg.residual else "")
    name = kernel_name("rms_norm", f"{cfg.dtype}_{cfg.width}{suffix}", cfg)
    params: tuple[Param, ...]
    if cfg.pre is not None:
        params = (
            Param.buffer("x", cfg.dtype),
            Param.buffer("pre_w", cfg.pre.w_dtype),
            Param.buffer("r", cfg.dtype),
            Param.buffer("w", cfg.weight_dtype),
            Param.buffer("y", cfg.dtype),
            Param.buffer("s", cfg.dtype),
            Param.scalar("rows", "i32"),
        )
    elif cfg.residual:
        params = (
            Param.buffer("x", cfg.dtype),
            Param.buffer("r", cfg.dtype),
            Param.buffer("w", cfg.weight_dtype),
            Param.buffer("y", cfg.dtype),
            Param.buffer("s", cfg.dtype),
            Param.scalar("rows", "i32"),
        )
    else:
        params = (
            Param.buffer("x", cfg.dtype),
            Param.buffer("w", cfg.weight_dtype),
            Param.buffer("y", cfg.dtype),
            Param.scalar("rows", "i32"),
        )
    rows_per_block = layout.rows_per_block
    grid = "rows" if rows_per_block == 1 else f"cdiv(rows, {rows_per_block})"
    info = KernelInfo(name, params, (grid, "1", "1"), (layout.block, 1, 1))
    if km.has_kernel(name):
        return info
    _, entry = km.add_kernel(name, params)
    with ir.InsertionPoint(entry):
        args = dict(zip((p.name for p in params), entry.arguments, strict=True))
        _emit_rms_norm(km, name, cfg, layout, args)
        gpu.ReturnOp([])
    return info


def _emit_rms_norm(
    km: KernelModule, name: str, cfg: RmsNormConfig, layout: RowLayout, args: dict[str, ir.Value]
) -> None:
    dtype, lanes = cfg.dtype, layout.lanes
    where = row_position(layout, args["rows"])
    row_start = arith.muli(where.row, index(cfg.width))
    zero = splat(0.0, lanes)
    adds_here = cfg.residual and cfg.pre is None

    # Read the row once into registers (after the residual add, written out as s).
    values: list[ir.Value] = []
    columns: list[ir.Value] = []
    conditions: list[ir.Value | None] = []
    squares = zero
    for k in range(layout.chunks):
        column = chunk_column(layout, where.lane, k)
        offset = arith.addi(row_start, column)
        valid = all_of(where.row_valid, chunk_valid(layout, where.lane, k))

        def read(offset: ir.Value = offset) -> ir.Value:
            value = widen(load_vector(args["x"], offset, lanes, dtype), dtype)
            return _add_residual(cfg, args, value, offset) if adds_here else value

        value = when(valid, read, zero)
        assert value is not None
        squares = math.fma(value, value, squares)
        values.append(value)
        columns.append(column)
        conditions.append(valid)

    if cfg.pre is not None:
        # The pre-norm of x, rounded as stored, then the residual add: the rows to normalise.
        pre = cfg.pre
        scale = _row_scale(km, f"{name}_pre", layout, squares, cfg.width, pre.eps)
        squares = zero
        for k, (value, column, valid) in enumerate(zip(values, columns, conditions, strict=True)):

            def add(value: ir.Value = value, column: ir.Value = column) -> ir.Value:
                normed = weighted(value, scale, args["pre_w"], column, pre.offset, pre.w_dtype)
                normed = widen(narrow(normed, dtype), dtype)
                return _add_residual(cfg, args, normed, arith.addi(row_start, column))

            summed = when(valid, add, zero)
            assert summed is not None
            squares = math.fma(summed, summed, squares)
            values[k] = summed

    scale = _row_scale(km, name, layout, squares, cfg.width, cfg.eps)
    for value, column, valid in zip(values, columns, conditions, strict=True):

        def write(value: ir.Value = value, column: ir.Value = column) -> None:
            normed = weighted(value, scale, args["w"], column, cfg.offset, cfg.weight_dtype)
            store_vector(narrow(normed, dtype), args["y"], arith.addi(row_start, column), dtype)

        when(valid, write)


def _add_residual(
    cfg: RmsNormConfig, args: dict[str, ir.Value], value: ir.Value, offset: ir.Value
) -> ir.Value:
    """value + r[offset], rounded to the dtype, stored to s and returned widened."""
    dtype, lanes = cfg.dtype, ir.VectorType(value.type).shape[0]
    residual = widen(load_vector(args["r"], offset, lanes, dtype), dtype)
    total = narrow(arith.addf(value, residual), dtype)
    store_vector(total, args["s"], offset, dtype)
    return widen(total, dtype)


def _row_scale(
    km: KernelModule, name: str, layout: RowLayout, squares: ir.Value, width: int, eps: float
) -> ir.Value:
    """1 / sqrt(mean of the row's squares + eps), broadcast to a vector (every lane of the
    row holds it; ``name`` names the block's shared partials)."""
    return inverse_root(km, row_total(km, name, layout, squares), layout, width, eps)


def row_total(km: KernelModule, name: str, layout: RowLayout, squares: ir.Value) -> ir.Value:
    """The sum of the row's ``squares`` (each lane's vector of partial sums), held by every
    lane of the row; every thread of the block must run it (shuffles, and a barrier when a
    row spans several warps; ``name`` names the block's shared partials)."""
    total = vector.reduction(ir.F32Type.get(), vector.CombiningKind.ADD, squares)
    if layout.threads <= WARP:
        return _warp_sum(total, layout.threads)
    return _block_sum(km, name, total, layout.warps_per_row)


def inverse_root(
    km: KernelModule, total: ir.Value, layout: RowLayout, width: int, eps: float
) -> ir.Value:
    """1 / sqrt(total / width + eps), broadcast to a vector of the layout's lanes."""
    mean = arith.divf(total, f32(float(width)))
    inverse = arith.divf(f32(1.0), sqrt(km, arith.addf(mean, f32(eps))))
    return vector.broadcast(vector_of(layout.lanes, "f32"), inverse)


def weighted(
    value: ir.Value, scale: ir.Value, w: ir.Value, column: ir.Value, offset: float, w_dtype: str
) -> ir.Value:
    """(value · scale) · (offset + w[column]) in f32."""
    lanes = ir.VectorType(value.type).shape[0]
    weight = widen(load_vector(w, column, lanes, w_dtype), w_dtype)
    return arith.mulf(arith.mulf(value, scale), arith.addf(splat(offset, lanes), weight))
