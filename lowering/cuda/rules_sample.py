"""The CUDA lowering rule of ``tessera.sample.greedy``: the LM head as a GEMV whose epilogue
keeps each block's largest logit and its index instead of storing the logits, then a combine
kernel that reduces the blocks' partials to one token per row (``kernels/greedy_head.py``).
The partials go after the planned arena."""

from __future__ import annotations

from mlir import ir

from .kernels.gemm import GemmConfig, select_gemm
from .kernels.gemm_gemv import reading_weights_early
from .kernels.greedy_head import build_greedy_head, partial_count
from .plan import Binding, LaunchPlan, aligned_bytes, located, product, rule
from .row_classes import guarded, row_classes
from .rules import _bool, _float, dtype_of, static_dim

# Bytes of an element of the partials: an f32 logit and an i32 index.
_PARTIAL_BYTES = 4


@rule("tessera.sample.greedy")
def lower_greedy_sample(op: ir.Operation, plan: LaunchPlan) -> None:
    x, w = op.operands[0], op.operands[1]
    bias = op.operands[2] if len(op.operands) > 2 else None
    if not plan.kernels.device.decode_gemv:
        raise located(
            "the greedy head is built on the GEMV, which this GPU target does not use", op
        )
    x_shape = plan.shape(x)
    cfg = GemmConfig(
        dtype=dtype_of(x),
        N=static_dim(plan, w, 0, op, "the vocabulary"),
        K=static_dim(plan, x, len(x_shape) - 1, op, "the model dim"),
        transpose_w=True,
        softcap=_float(op, "softcap"),
        has_bias=bias is not None,
    )
    # A build per row class of the decode step (its batch; any count is correct), each
    # guarded to its sizes; they share the scratch, sized for the one with more partials.
    rounded = _bool(op, "rounded_softcap")
    builds = []
    parts = 0
    for rows_class, guard in row_classes(plan.rows_hint or 1):
        chosen = reading_weights_early(
            select_gemm(cfg, rows_class or 1), plan.kernels.device, [plan.ref(w)]
        )
        partial, combine = build_greedy_head(plan.kernels, chosen, rounded)  # once per config
        plan.infos.update({partial.name: partial, combine.name: combine})
        builds.append((guarded(partial, guard), guarded(combine, guard)))
        parts = max(parts, partial_count(chosen))
    rows = product(x_shape[:-1])
    elements = product((rows, str(parts)))
    part_bytes = product((elements, str(_PARTIAL_BYTES)))
    step = len(plan.steps)
    part_value = plan.scratch_buffer(f"part_value{step}", "f32", (elements,), part_bytes)
    part_index = plan.scratch_buffer(
        f"part_index{step}", "i32", (elements,), part_bytes, after=str(aligned_bytes(part_bytes))
    )
    bindings: dict[str, Binding] = {"x": plan.ref(x), "w": plan.ref(w), "M": rows}
    if bias is not None:
        bindings["bias"] = plan.ref(bias)
    for partial, combine in builds:
        plan.launch(partial, {**bindings, "part_value": part_value, "part_index": part_index})
        plan.launch(
            combine,
            {
                "part_value": part_value,
                "part_index": part_index,
                "tokens": plan.ref(op.results[0]),
                "M": rows,
            },
        )
