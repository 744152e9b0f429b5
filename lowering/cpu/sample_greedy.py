"""``tessera.sample.greedy`` on the CPU: the LM head's logits computed by the projection's own
kernel core (``proj.py``: same accumulation, bias, softcap and rounding) into a scratch buffer,
then a scan per row for the first largest (NaN above every number, as torch.argmax).

On a GPU the point of the op is that the logits are never written; a CPU core's output stays
in its caches for the scan, so the op is lowered for completeness of the dialect (any module
with it compiles for the CPU), not for speed.
"""

from __future__ import annotations

from mlir import ir

from tessera.dialects import GreedySample
from tessera.ir_types import shaped_dims
from tessera.mlir_text import memref_type

from ..kernel_call import mangle, replace_with_call
from . import vector_math as vm
from .builder import Kernel
from .host import Host
from .kernel_types import float_dtype, static_dim, static_dims
from .proj import ProjSpec, core_source, projection_wrapper
from .registry import lowering_error, rule
from .tensors import alloc, return_tensor, rows_view


def _rounded(k: Kernel, value: str, dtype: str) -> str:
    """The f32 ``value`` rounded to ``dtype`` and widened back."""
    if dtype == "f32":
        return value
    narrow = k.op("r", f"arith.truncf {value} : f32 to {dtype}")
    return k.op("r", f"arith.extf {narrow} : {dtype} to f32")


def _logit(k: Kernel, value: str, dtype: str, cap: float | None) -> str:
    """The stored logit ``value`` (in ``dtype``) as f32, after a softcap whose steps each round
    (``cap``; None: the projection already applied any softcap)."""
    if dtype != "f32":
        value = k.op("v", f"arith.extf {value} : {dtype} to f32")
    if cap is None:
        return value
    scaled = _rounded(k, vm.binary(k, "divf", value, vm.const(k, cap, "f32"), "f32"), dtype)
    tanh = _rounded(k, vm.tanh(k, scaled, "f32"), dtype)
    return _rounded(k, vm.binary(k, "mulf", tanh, vm.const(k, cap, "f32"), "f32"), dtype)


def wrapper_source(
    spec: ProjSpec,
    symbol: str,
    op: GreedySample,
    rounded_cap: float | None,
    host: Host,
) -> str:
    """The tensor-level function the op becomes a call to: logits, then the scan."""
    k, logits, x_dims = projection_wrapper(spec, symbol, op.x, op.w, op.bias, op.token, host)
    rows = rows_view(k, logits, spec.y_view, spec.y_dtype)
    rows_type = memref_type([None, spec.width], spec.y_dtype)
    token_view = spec.y_view[:-1]
    tokens = alloc(k, token_view, "i64", x_dims[:-1])
    flat = tokens
    if len(token_view) > 1:
        groups = ", ".join(str(i) for i in range(len(token_view)))
        flat = k.op(
            "m",
            f"memref.collapse_shape {tokens} [[{groups}]] : "
            f"{memref_type(token_view, 'i64')} into {memref_type([None], 'i64')}",
        )
    count = k.op("n", f"memref.dim {rows}, {k.index(0)} : {rows_type}")
    zero = k.index(0)
    with k.loop(0, count, 1) as row:
        load = f"memref.load {rows}[{row.iv}, {{}}] : {rows_type}"
        first = _logit(k, k.op("y", load.format(zero)), spec.y_dtype, rounded_cap)
        carried = [(first, "f32"), (zero, "index")]
        with k.loop(1, spec.width, 1, carried) as column:
            best, at = column.args
            value = _logit(k, k.op("y", load.format(column.iv)), spec.y_dtype, rounded_cap)
            # value beats best: greater, or NaN where best is a number (ugt is true when
            # either is NaN, so best must be ordered); equals keep the first.
            greater = k.op("p", f"arith.cmpf ugt, {value}, {best} : f32")
            ordered = k.op("p", f"arith.cmpf ord, {best}, {best} : f32")
            beats = k.op("p", f"arith.andi {greater}, {ordered} : i1")
            column.yield_(
                [
                    k.op("b", f"arith.select {beats}, {value}, {best} : f32"),
                    k.op("b", f"arith.select {beats}, {column.iv}, {at} : index"),
                ]
            )
        index = k.op("t", f"arith.index_cast {column.results[1]} : index to i64")
        k.line(f"memref.store {index}, {flat}[{row.iv}] : {memref_type([None], 'i64')}")
    return return_tensor(k, tokens, token_view, "i64", op.token.type)


@rule("tessera.sample.greedy")
def lower_greedy_sample(op: ir.Operation, host: Host) -> None:
    view = GreedySample(op)
    x, w, bias = view.x, view.w, view.bias
    rows, columns = static_dim(op, w, 0, "weight"), static_dim(op, w, 1, "weight")
    static_dims(op, x, [len(shaped_dims(x.type)) - 1], "x")
    if len(shaped_dims(x.type)) < 2:
        raise lowering_error(op, "the CPU greedy head takes rows of x ([..., K], rank 2 or more)")
    rounded = bool(view.rounded_softcap)
    x_dtype = float_dtype(op, x, "x")
    spec = ProjSpec(
        rank=len(shaped_dims(x.type)),
        depth=columns,
        width=rows,
        x_dtype=x_dtype,
        w_dtype=float_dtype(op, w, "w"),
        y_dtype=x_dtype,
        bias_dtype=float_dtype(op, bias, "bias") if bias is not None else None,
        transpose_w=True,
        # A rounded softcap is applied by the scan, after the logits round.
        softcap=None if rounded else view.softcap,
    )
    rounded_cap = float(view.softcap) if rounded and view.softcap is not None else None
    symbol = mangle("tessera_greedy", spec.symbol(), "rounded" if rounded else "", str(x.type))
    source = core_source(spec, host) + wrapper_source(spec, symbol, view, rounded_cap, host)
    operands = [x, w] + ([bias] if bias is not None else [])
    replace_with_call(op, symbol, source, operands)
