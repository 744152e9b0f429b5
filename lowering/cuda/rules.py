"""The CUDA lowering rules, one per op: each picks (or builds) its kernel and appends the
launch, binding the kernel's parameters to the op's buffers and to its sizes as expressions
over the program's symbols."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlir import ir

from tessera.dialects.head_layout import BSHD, LAYOUT_ATTR
from tessera.errors import LoweringError
from tessera.runtime.manifest import ArgRef, TensorMapArg

from .kernel import KernelInfo, KernelModule
from .kernels.attention import AttentionConfig
from .kernels.flash_attention import build_flash_attention
from .kernels.lookup import LookupConfig, build_lookup
from .kernels.rms_norm import PreNorm, RmsNormConfig, build_rms_norm
from .kernels.rope import BLOCK as ROPE_BLOCK
from .kernels.rope import RopeConfig, build_rope, build_rope_siblings, rope_layout
from .plan import (
    Binding,
    LaunchPlan,
    located,
    product,
    rule,
    run_rule,
    sequence_rule,
)
from .row_classes import guarded, row_classes
from .tuning import gemv_key, wgmma_key

if TYPE_CHECKING:
    from .kernels.gemm import GemmConfig


def dtype_of(value: ir.Value) -> str:
    return str(ir.ShapedType(value.type).element_type)


def static_dim(plan: LaunchPlan, value: ir.Value, axis: int, op: ir.Operation, what: str) -> int:
    dim = plan.shape(value)[axis]
    if not dim.lstrip("-").isdigit():
        raise located(f"{what} must be static for the GPU targets, found '{dim}'", op)
    return int(dim)


def _float(op: ir.Operation, name: str, default: float | None = None) -> float | None:
    if name not in op.attributes:
        return default
    return float(ir.FloatAttr(op.attributes[name]).value)


def _int(op: ir.Operation, name: str) -> int | None:
    if name not in op.attributes:
        return None
    return int(ir.IntegerAttr(op.attributes[name]).value)


def _bool(op: ir.Operation, name: str) -> bool:
    return name in op.attributes and bool(ir.BoolAttr(op.attributes[name]).value)


def _string(op: ir.Operation, name: str, default: str) -> str:
    if name not in op.attributes:
        return default
    return ir.StringAttr(op.attributes[name]).value


@rule("tessera.tensor.lookup")
def lower_lookup(op: ir.Operation, plan: LaunchPlan) -> None:
    table, ids = op.operands[0], op.operands[1]
    cfg = LookupConfig(
        dtype=dtype_of(table),
        vocab=static_dim(plan, table, 0, op, "the table's rows"),
        width=static_dim(plan, table, 1, op, "the table's width"),
        ids_dtype=dtype_of(ids),
        scale=_float(op, "scale", 1.0) or 1.0,
    )
    info = plan.kernel(f"lookup {cfg}", lambda km: build_lookup(km, cfg))
    count = product(plan.shape(ids))
    plan.launch(
        info,
        {"table": plan.ref(table), "ids": plan.ref(ids), "y": plan.ref(op.results[0]), "n": count},
    )


@rule("tessera.norm.rms")
def lower_rms_norm(op: ir.Operation, plan: LaunchPlan) -> None:
    x, w = op.operands[0], op.operands[1]
    shape = plan.shape(x)
    cfg = RmsNormConfig(
        dtype=dtype_of(x),
        width=static_dim(plan, x, len(shape) - 1, op, "the normalised dim"),
        eps=_float(op, "eps") or 0.0,
        offset=_float(op, "offset", 1.0) or 0.0,
        w_dtype=dtype_of(w),
    )
    info = plan.kernel(f"rms {cfg}", lambda km: build_rms_norm(km, cfg))
    rows = product(shape[:-1])
    plan.launch(
        info, {"x": plan.ref(x), "w": plan.ref(w), "y": plan.ref(op.results[0]), "rows": rows}
    )


def _is_residual_add(op: ir.Operation) -> bool:
    """A generic computing a + b elementwise over two tensors of its own shape (the residual
    stream's update)."""
    if len(op.operands) != 3 or len(op.results) != 1:
        return False
    maps = ir.ArrayAttr(op.attributes["indexing_maps"])
    if (
        any(not ir.AffineMapAttr(m).value.is_permutation for m in maps)
        or len({str(m) for m in maps}) != 1
    ):
        return False
    if any(str(value.type) != str(op.results[0].type) for value in op.operands):
        return False
    body = op.regions[0].blocks[0]
    inner = [view.operation for view in body.operations]
    if len(inner) != 2 or inner[0].name != "arith.addf" or inner[1].name != "linalg.yield":
        return False
    arguments = list(body.arguments)
    summed = list(inner[0].operands)
    yields_sum = list(inner[1].operands) == [inner[0].results[0]]
    return yields_sum and summed in ([arguments[0], arguments[1]], [arguments[1], arguments[0]])


def _adds_then_normalises(ops: list[ir.Operation]) -> bool:
    """The sum feeds the norm and is read again later (the residual stream); a sum only the
    norm reads is not worth writing out, and its slice may be the norm's own output."""
    add, norm = ops
    total = add.results[0]
    return _is_residual_add(add) and norm.operands[0] == total and sum(1 for _ in total.uses) > 1


def _norms_adds_then_normalises(ops: list[ir.Operation]) -> bool:
    """Gemma 2 and 3's post-norm, residual add and next pre-norm: the first norm's result is
    read only by the add, the add and the second norm are the residual pair."""
    pre, add, norm = ops
    normed = pre.results[0]
    return (
        _adds_then_normalises([add, norm])
        and normed in list(add.operands)[:2]
        and sum(1 for _ in normed.uses) == 1
        and dtype_of(pre.operands[0]) == dtype_of(add.results[0])
    )


@sequence_rule(("linalg.generic", "tessera.norm.rms"), _adds_then_normalises)
@sequence_rule(
    ("tessera.norm.rms", "linalg.generic", "tessera.norm.rms"), _norms_adds_then_normalises
)
def lower_residual_rms_norm(ops: list[ir.Operation], plan: LaunchPlan) -> None:
    """Gemma's "add, then norm" as one kernel: the sum is written (it stays the residual
    stream) and normalised from registers, saving a launch and a read of the sum. With a norm
    before the add whose result only the add reads (Gemma 2 and 3's post-norms), "norm, add,
    norm": the first norm's rows stay in registers too."""
    *before, add, norm = ops
    pre = before[0] if before else None
    x, r = add.operands[0], add.operands[1]
    if pre is not None:
        normed = pre.results[0]
        r = add.operands[1] if add.operands[0] == normed else add.operands[0]
        x = pre.operands[0]
    w = norm.operands[1]
    shape = plan.shape(x)
    width = static_dim(plan, x, len(shape) - 1, norm, "the normalised dim")
    bindings: dict[str, Binding] = {
        "x": plan.ref(x),
        "r": plan.ref(r),
        "w": plan.ref(w),
        "y": plan.ref(norm.results[0]),
        "s": plan.ref(add.results[0]),
        "rows": product(shape[:-1]),
    }
    pre_norm = None
    if pre is not None:
        if static_dim(plan, x, len(shape) - 1, pre, "the normalised dim") != width:
            raise located("the two norms of a residual pair normalise different widths", pre)
        pre_norm = PreNorm(
            eps=_float(pre, "eps") or 0.0,
            offset=_float(pre, "offset", 1.0) or 0.0,
            w_dtype=dtype_of(pre.operands[1]),
        )
        bindings["pre_w"] = plan.ref(pre.operands[1])
    cfg = RmsNormConfig(
        dtype=dtype_of(x),
        width=width,
        eps=_float(norm, "eps") or 0.0,
        offset=_float(norm, "offset", 1.0) or 0.0,
        w_dtype=dtype_of(w),
        residual=True,
        pre=pre_norm,
    )
    info = plan.kernel(f"rms {cfg}", lambda km: build_rms_norm(km, cfg))
    plan.launch(info, bindings)


def _rope_config(op: ir.Operation, plan: LaunchPlan) -> RopeConfig:
    x, positions = op.operands[0], op.operands[1]
    if _string(op, "layout", "half_split") != "half_split":
        raise located("only the half_split rope layout has a CUDA kernel", op)
    return RopeConfig(
        dtype=dtype_of(x),
        heads=static_dim(plan, x, 2, op, "the head count"),
        head_dim=static_dim(plan, x, 3, op, "the head dim"),
        theta=_float(op, "theta") or 10000.0,
        scaling=_float(op, "scaling", 1.0) or 1.0,
        rotary_dim=_int(op, "rotary_dim"),
        pos_dtype=dtype_of(positions),
    )


@rule("tessera.rope.apply")
def lower_rope(op: ir.Operation, plan: LaunchPlan) -> None:
    cfg = _rope_config(op, plan)
    shape = plan.shape(op.operands[0])
    info = plan.kernel(f"rope {cfg}", lambda km: build_rope(km, cfg))
    plan.launch(
        info,
        {
            "x": plan.ref(op.operands[0]),
            "pos": plan.ref(op.operands[1]),
            "y": plan.ref(op.results[0]),
            "B": shape[0],
            "S": shape[1],
        },
    )


def _sibling_rope(first: ir.Operation, op: ir.Operation) -> bool:
    """A rope of the same positions as ``first`` that does not read its result."""
    return (
        op.name == "tessera.rope.apply"
        and op.operands[1] == first.operands[1]
        and op.operands[0] != first.results[0]
        and all(_string(o, "layout", "half_split") == "half_split" for o in (first, op))
    )


@run_rule("tessera.rope.apply", _sibling_rope)
def lower_sibling_ropes(ops: list[ir.Operation], plan: LaunchPlan) -> None:
    """Two ropes of the same positions (a decode step's q and k) in one launch
    (``build_rope_siblings``); other runs one launch each."""
    if len(ops) != 2:
        for op in ops:
            lower_rope(op, plan)
        return
    cfgs = (_rope_config(ops[0], plan), _rope_config(ops[1], plan))
    info = plan.kernel(f"rope2 {cfgs}", lambda km: build_rope_siblings(km, cfgs))
    shape = plan.shape(ops[0].operands[0])
    per_token = rope_layout(cfgs[0]).per_token
    plan.launch(
        info,
        {
            "x0": plan.ref(ops[0].operands[0]),
            "y0": plan.ref(ops[0].results[0]),
            "x1": plan.ref(ops[1].operands[0]),
            "y1": plan.ref(ops[1].results[0]),
            "pos": plan.ref(ops[0].operands[1]),
            "B": shape[0],
            "S": shape[1],
            "blocks0": f"cdiv({product(shape[:2])} * {per_token}, {ROPE_BLOCK})",
        },
    )


def _strides(shape: tuple[str, ...], bshd: bool) -> tuple[str, str, str]:
    """Element strides of batch, head and sequence of a contiguous [B, H, S, D] tensor, or of
    a [B, S, H, D] one (``bshd``, see ``attention_layout.py``)."""
    if bshd:
        _batch, s, h, d = shape
        return product((s, h, d)), d, product((h, d))
    _batch, h, s, d = shape
    return product((h, s, d)), product((s, d)), d


@rule("tessera.attention.flash")
def lower_attention(op: ir.Operation, plan: LaunchPlan) -> None:
    q, k, v = op.operands[0], op.operands[1], op.operands[2]
    o = op.results[0]
    q_shape, k_shape = plan.shape(q), plan.shape(k)
    window = _int(op, "window")
    bshd = _string(op, LAYOUT_ATTR, "bhsd") == BSHD
    heads, sequence = (2, 1) if bshd else (1, 2)
    cfg = AttentionConfig(
        dtype=dtype_of(q),
        head_dim=static_dim(plan, q, 3, op, "the head dim"),
        heads_q=static_dim(plan, q, heads, op, "the query heads"),
        heads_kv=static_dim(plan, k, heads, op, "the key/value heads"),
        scale=_float(op, "scale") or 1.0,
        value_dim=static_dim(plan, v, 3, op, "the value dim"),
        causal=_bool(op, "causal"),
        window=window,
        softcap=_float(op, "softcap"),
    )
    info = plan.kernel(f"attention {cfg}", lambda km: build_flash_attention(km, cfg))
    bindings: dict[str, ArgRef | str | int | float] = {
        "q": plan.ref(q),
        "k": plan.ref(k),
        "v": plan.ref(v),
        "o": plan.ref(o),
        "B": q_shape[0],
        "S": q_shape[sequence],
        "T": k_shape[sequence],
    }
    for name, value in (("q", q), ("k", k), ("v", v), ("o", o)):
        sb, sh, ss = _strides(plan.shape(value), bshd)
        bindings.update({f"{name}_sb": sb, f"{name}_sh": sh, f"{name}_ss": ss})
    plan.launch(info, bindings)


def _gemm(plan: LaunchPlan, weights: list[Binding], **fields: object) -> list[KernelInfo]:
    """The GEMM builds a launch takes: one, or in a decode plan a GEMV per row class, each
    guarded to its batch sizes (``row_classes``) and reading its ``weights`` early where they
    are the model's; launch each with the same bindings."""
    from .kernels.gemm import GemmConfig, build_gemm

    def build(cfg: GemmConfig) -> KernelInfo:
        return plan.kernel(f"gemm {cfg}", lambda km: build_gemm(km, cfg))

    def chosen(base: GemmConfig, rows: int) -> GemmConfig:
        return decode_gemv(plan, base, rows, weights)

    base = GemmConfig(**fields)  # type: ignore[arg-type]
    return [
        guarded(build(base if rows is None else chosen(base, rows)), guard)
        for rows, guard in row_classes(plan.rows_hint)
    ]


def decode_gemv(
    plan: LaunchPlan, base: GemmConfig, rows: int, weights: Sequence[Binding], tuned: bool = True
) -> GemmConfig:
    """The GEMM of ``base`` for ``rows`` rows in a decode plan: ``select_gemm``'s kernel, its
    GEMV tile from the tuning table where the table has the shape's entry
    (``tuning.gemv_key``) and ``tuned`` allows, reading the ``weights`` early where they are
    the model's."""
    from .kernels.gemm import select_gemm
    from .kernels.gemm_gemv import reading_weights_early, tuned_tile

    cfg = select_gemm(base, rows)
    if tuned and cfg.family == "gemv" and cfg.transpose_w:
        key = gemv_key(cfg.dtype, cfg.N, cfg.K, cfg.gated, cfg.gemv.rows)
        try:
            cfg = tuned_tile(cfg, plan.tuning.get(key))
        except LoweringError as error:
            sources = " or ".join(plan.tuning.sources)
            raise LoweringError(f"tuning entry {key} (from {sources}): {error}") from None
    return reading_weights_early(cfg, plan.kernels.device, weights)


@rule("tessera.mma.proj")
def lower_proj(op: ir.Operation, plan: LaunchPlan) -> None:
    x, w = op.operands[0], op.operands[1]
    bias = op.operands[2] if len(op.operands) > 2 else None
    transpose_w = _bool(op, "transpose_w")
    x_shape = plan.shape(x)
    k = static_dim(plan, x, len(x_shape) - 1, op, "the reduction dim")
    n = static_dim(plan, w, 0 if transpose_w else 1, op, "the output dim")
    bindings: dict[str, Binding] = {
        "x": plan.ref(x),
        "w": plan.ref(w),
        "y": plan.ref(op.results[0]),
        "M": product(x_shape[:-1]),
    }
    if bias is not None:
        bindings["bias"] = plan.ref(bias)
    _launch_gemm(
        plan,
        op,
        bindings,
        dtype=dtype_of(x),
        N=n,
        K=k,
        transpose_w=transpose_w,
        softcap=_float(op, "softcap"),
        has_bias=bias is not None,
    )


def _plain_projection(op: ir.Operation) -> bool:
    """A projection with w as [N, K] and no bias or softcap."""
    return len(op.operands) == 2 and _bool(op, "transpose_w") and _float(op, "softcap") is None


def _sibling_projection(first: ir.Operation, op: ir.Operation) -> bool:
    return (
        op.name == "tessera.mma.proj"
        and op.operands[0] == first.operands[0]
        and _plain_projection(first)
        and _plain_projection(op)
    )


@run_rule("tessera.mma.proj", _sibling_projection)
def lower_sibling_projections(ops: list[ir.Operation], plan: LaunchPlan) -> None:
    """Consecutive projections of one x (q, k and v) in a decode plan: one launch of the
    sibling GEMV per row class (``kernels/gemv_siblings.py``); elsewhere one launch each."""
    from .kernels.gemm import GemmConfig
    from .kernels.gemv_siblings import GemvSiblings, build_gemv_siblings

    if plan.rows_hint is None or not plan.kernels.device.decode_gemv:
        for op in ops:
            lower_proj(op, plan)
        return
    x = ops[0].operands[0]
    x_shape = plan.shape(x)
    k = static_dim(plan, x, len(x_shape) - 1, ops[0], "the reduction dim")
    bases = [
        GemmConfig(dtype_of(x), static_dim(plan, op.operands[1], 0, op, "the output dim"), k)
        for op in ops
    ]
    bindings: dict[str, Binding] = {"x": plan.ref(x), "M": product(x_shape[:-1])}
    for i, op in enumerate(ops):
        bindings[f"w{i}"] = plan.ref(op.operands[1])
        bindings[f"y{i}"] = plan.ref(op.results[0])
    weights = [bindings[f"w{i}"] for i in range(len(ops))]
    for rows, guard in row_classes(plan.rows_hint):
        assert rows is not None, "a decode plan has a row hint"
        parts = tuple(decode_gemv(plan, base, rows, weights) for base in bases)
        if len({cfg.gemv.warps for cfg in parts}) > 1:
            # one block size serves every sibling: tuned tiles that disagree give way to the
            # untuned ones
            parts = tuple(decode_gemv(plan, base, rows, weights, tuned=False) for base in bases)
        siblings = GemvSiblings(parts)

        def build(km: KernelModule, s: GemvSiblings = siblings) -> KernelInfo:
            return build_gemv_siblings(km, s)

        info = plan.kernel(siblings.name, build)
        plan.launch(guarded(info, guard), bindings)


def _launch_gemm(
    plan: LaunchPlan, op: ir.Operation, bindings: dict[str, Binding], **fields: Any
) -> None:
    """Launches the GEMM ``fields`` describe (``GemmConfig``'s) on ``bindings``: the wgmma
    kernel where it serves, x and the weights then also bound as its tensor maps; else the
    builds ``_gemm`` picks (one, or a GEMV per row class in a decode plan)."""
    hopper = _hopper_gemm(plan, **fields)
    if hopper is None:
        weights = [bindings[name] for name in ("w", "w2") if name in bindings]
        for info in _gemm(plan, weights, **fields):
            plan.launch(info, bindings)
        return
    info, box_m, box_n, box_k = hopper
    rows, n, k = str(bindings["M"]), str(fields["N"]), fields["K"]
    x, w = bindings["x"], bindings["w"]
    assert isinstance(x, ArgRef) and isinstance(w, ArgRef)
    maps: dict[str, Binding] = {
        "x_map": TensorMapArg(x, rows, k, (box_m, box_k)),
        "w_map": TensorMapArg(w, n, k, (box_n, box_k)),
    }
    if fields.get("gated"):
        w2 = bindings["w2"]
        assert isinstance(w2, ArgRef)
        maps["w2_map"] = TensorMapArg(w2, n, k, (box_n, box_k))
    plan.launch(info, {**bindings, **maps})


def _hopper_gemm(
    plan: LaunchPlan,
    dtype: str,
    N: int,
    K: int,
    transpose_w: bool = False,
    has_bias: bool = False,
    softcap: float | None = None,
    gated: bool = False,
    activation: str = "gelu_tanh",
) -> tuple[KernelInfo, int, int, int] | None:
    """The wgmma + TMA GEMM for a GEMM outside the decode step on sm_90a (16-bit x and w
    [N, K] with K a multiple of 8, no bias, which its epilogue does not take; gated or not);
    None where the mma.sync family serves. Returns its launch contract and the tensor maps'
    boxes."""
    from .kernels.gemm_wgmma import BLOCK_K, WgmmaConfig, build_wgmma_gemm

    device = plan.kernels.device
    if not device.wgmma or plan.rows_hint is not None:
        return None
    if dtype not in ("bf16", "f16") or not transpose_w or has_bias or K % 8:
        return None
    # Untuned: the warp-specialized kernel (a producer and two consumer warpgroups), which
    # on an H100 matched or beat the single-warpgroup one at every shape timed in the same
    # run: 128x256 tiles three stages deep, and the gated form (two accumulators) 128x128
    # four deep (bench/results/h100-2026-12-07-gemm-warp-specialized.json). A tuning-table
    # entry (bench/tune.py) overrides fields of the default of its kind: an entry without
    # ``consumers`` is a single-warpgroup tile, whose default is 128-row tiles three stages
    # deep (64 columns gated), as tables made before the warp-specialized kernel expect.
    split = {"block_m": 128, "block_n": 128 if gated else 256, "stages": 4 if gated else 3}
    single = {"block_m": 128, "block_n": 64 if gated else 128, "stages": 3, "consumers": 1}
    tuned = plan.tuning.get(wgmma_key(dtype, N, K, gated)) or {}
    base = single if tuned and tuned.get("consumers", 1) == 1 else {**split, "consumers": 2}
    tile = {**base, **tuned}
    cfg = WgmmaConfig(dtype, N, K, **tile, gated=gated, activation=activation, softcap=softcap)
    info = plan.kernel(f"gemm {cfg}", lambda km: build_wgmma_gemm(km, cfg))
    return info, cfg.block_m, cfg.block_n, BLOCK_K


@rule("tessera.mlp.swi_glu")
def lower_gated_mlp(op: ir.Operation, plan: LaunchPlan) -> None:
    if len(op.operands) != 4:
        raise located("the fused [2F, D] gate/up weight form has no CUDA kernel yet", op)
    x, w_gate, w_up, w_down = op.operands
    x_shape = plan.shape(x)
    dtype = dtype_of(x)
    d = static_dim(plan, x, len(x_shape) - 1, op, "the model dim")
    f = static_dim(plan, w_gate, 0, op, "the hidden dim")
    rows = product(x_shape[:-1])
    activation = _string(op, "activation", "gelu_tanh")
    size = {"bf16": 2, "f16": 2, "f32": 4}[dtype]
    hidden = plan.scratch_buffer(
        f"h{len(plan.steps)}", dtype, (*x_shape[:-1], str(f)), product((rows, str(f * size)))
    )
    gate_bindings: dict[str, Binding] = {
        "x": plan.ref(x),
        "w": plan.ref(w_gate),
        "w2": plan.ref(w_up),
        "y": hidden,
        "M": rows,
    }
    _launch_gemm(
        plan,
        op,
        gate_bindings,
        dtype=dtype,
        N=f,
        K=d,
        transpose_w=True,
        gated=True,
        activation=activation,
    )
    down_bindings: dict[str, Binding] = {
        "x": hidden,
        "w": plan.ref(w_down),
        "y": plan.ref(op.results[0]),
        "M": rows,
    }
    _launch_gemm(plan, op, down_bindings, dtype=dtype, N=d, K=f, transpose_w=True)


_SSA = re.compile(r"%[\w.#-]+")


@rule("linalg.generic")
def lower_generic(op: ir.Operation, plan: LaunchPlan) -> None:
    from .kernels.elementwise import ElementwiseError, build_elementwise

    # One kernel per distinct computation: the op's text without its SSA names.
    key = "generic " + _SSA.sub("%", str(op))
    try:
        info = plan.kernel(key, lambda km: build_elementwise(km, op))
    except ElementwiseError as problem:
        # A generic that is not elementwise (a reduction the front end left unfused) has no
        # GPU kernel: say so at the source line that made it.
        raise located(f"no GPU kernel for this linalg.generic: {problem}", op) from None
    inputs = list(op.operands)[: len(op.operands) - len(op.results)]
    bindings: dict[str, ArgRef | str | int | float] = {
        f"in{i}": plan.ref(value)
        for i, value in enumerate(inputs)
        if isinstance(value.type, ir.RankedTensorType)
    }
    result = op.results[0]
    bindings["out"] = plan.ref(result)
    # The output's map names the loop dim behind each of its dims: d{loop} = that dim's size.
    maps = ir.ArrayAttr(op.attributes["indexing_maps"])
    out_map = ir.AffineMapAttr(maps[len(maps) - 1]).value
    for axis, expr in enumerate(out_map.results):
        if isinstance(expr, ir.AffineDimExpr):
            bindings[f"d{ir.AffineDimExpr(expr).position}"] = plan.shape(result)[axis]
    plan.launch(info, bindings)
