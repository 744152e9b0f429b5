"""tessera-derive-greedy-decode: a decode step that returns each sequence's greedy token
instead of its logits, so that a GPU target can fuse the LM head with the token choice and
never write the logits (a [B, vocab] tensor per step: on Gemma's 256K vocabulary, as many
bytes as a few layers' weights).

``@decode`` (from ``tessera-insert-kv-cache``) is copied to ``@decode_greedy``, whose returned
``tessera.mma.proj`` (the LM head: w [V, D] as torch stores it, with Gemma 2's final softcap
folded in) becomes ``tessera.sample.greedy`` on the same operands; the result, [B, 1] token
ids, is the output ``tokens``. A narrow-dtype model's softcap stays three ops after the head
(``tessera-fuse-proj`` folds only a softcap computed at the projection's precision), each
rounding to the dtype: ``(y / c)``, ``tanh``, ``· c``; the op takes it as ``softcap = c`` with
``rounded_softcap``, so its logits round exactly as that chain does. Greedy decoding with
``@decode_greedy`` picks exactly the token that the argmax of ``@decode``'s logits picks: the
op is defined on the logits rounded as the head rounds them.

IR the pass cannot fuse is refused at the op that stops it: no ``@decode``, logits that are
not the direct result of a projection (a sharded vocabulary gathered from ranks, say), a
projection whose weight is [K, N] or whose result is wider than its input.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from tessera.diagnostics import source_location
from tessera.dialects import GreedySample, Projection
from tessera.errors import PassError
from tessera.ir_types import element_type, ranked_tensor_type, shaped_dims
from tessera.pass_registry import NoOptions, register_pass
from tessera.runtime import kv_layout as names

from .constant_values import splat_value
from .kv_signature import OUTPUT_ATTR, dictionary, function_named, refusal, symbol
from .match import producer, replace_and_sweep

PASS = "tessera-derive-greedy-decode"


def _error(message: str, op: ir.Operation) -> PassError:
    return PassError(f"{PASS}: {message}", source_location(op.location))


def _return(function: ir.Operation) -> ir.Operation:
    return list(function.regions[0].blocks[0].operations)[-1].operation


@dataclass(frozen=True)
class _Head:
    """The LM head of a decode function: its projection, and the rounded softcap chain after
    it (the chain's ops, its cap) when the softcap was not folded into the projection."""

    proj: ir.Operation
    chain: tuple[ir.Operation, ...] = ()
    cap: float | None = None


def _single_use(value: ir.Value) -> bool:
    return len(list(value.uses)) == 1


def _by_splat(op: ir.Operation, name: str) -> tuple[ir.Value, float] | None:
    """(the other operand, the splat) of a binary ``name`` op with a splat operand."""
    if op.name != name or len(op.operands) != 2:
        return None
    for value, other in ((op.operands[1], op.operands[0]), (op.operands[0], op.operands[1])):
        splat = splat_value(value)
        if splat is not None and (name == "arith.mulf" or value == op.operands[1]):
            return other, float(splat)
    return None


def _rounded_softcap(logits: ir.Value) -> _Head | None:
    """``((y / c) → tanh) · c`` on a projection's result y, every op in y's type (tanh maybe
    through f32: extf, tanh, truncf), each intermediate used once: the softcap as a narrow-dtype
    model computes it."""
    times = producer(logits)
    scaled = _by_splat(times, "arith.mulf") if times is not None else None
    if times is None or scaled is None:
        return None
    tanh_out, cap = scaled
    chain = [times]
    # tanh in y's type, or through f32 (extf, tanh, truncf)
    through = [producer(tanh_out)]
    if through[0] is not None and through[0].name == "arith.truncf":
        through.append(producer(through[0].operands[0]))
        if through[1] is not None:
            through.append(producer(through[1].operands[0]))
        names: tuple[str, ...] = ("arith.truncf", "math.tanh", "arith.extf")
    else:
        names = ("math.tanh",)
    if len(through) != len(names) or any(
        op is None or op.name != name for op, name in zip(through, names, strict=True)
    ):
        return None
    ops = [op for op in through if op is not None]
    chain += ops
    divided = ops[-1].operands[0]
    divide = producer(divided)
    split = _by_splat(divide, "arith.divf") if divide is not None else None
    if divide is None or split is None or split[1] != cap or not cap > 0:
        return None
    chain.append(divide)
    head = producer(split[0])
    if head is None or head.name != "tessera.mma.proj" or "softcap" in head.attributes:
        return None
    kinds = {str(logits.type), str(tanh_out.type), str(divided.type), str(split[0].type)}
    if len(kinds) != 1:
        return None
    if not all(_single_use(op.results[0]) for op in [*chain[1:], head]):
        return None
    return _Head(head, tuple(chain), cap)


def _head(function: ir.Operation) -> _Head:
    """The LM head whose logits ``function`` returns, checked."""
    ret = _return(function)
    if len(ret.operands) != 1:
        count = len(ret.operands)
        raise _error(f"@{symbol(function)} returns {count} values; expected logits", ret)
    logits = ret.operands[0]
    rounded = _rounded_softcap(logits)
    if rounded is not None:
        _check_projection(rounded.proj)
        return rounded
    owner = logits.owner
    head = owner.operation if isinstance(owner, ir.OpView | ir.Operation) else None
    if head is None or head.name != "tessera.mma.proj":
        found = "an argument" if head is None else f"'{head.name}'"
        raise _error(f"the logits come from {found}, not from a tessera.mma.proj", head or ret)
    _check_projection(head)
    if len(list(head.results[0].uses)) != 1:
        raise _error("the logits have uses besides the return", head)
    return _Head(head)


def _check_projection(head: ir.Operation) -> None:
    view = Projection(head)
    if not view.transpose_w:
        raise _error("the LM head's weight is [K, N]; the greedy head reads it as [N, K]", head)
    if element_type(view.y) != element_type(view.x):
        raise _error(
            f"the LM head widens {element_type(view.x)} to {element_type(view.y)} logits; "
            "the greedy head rounds them as its input",
            head,
        )


def derive_greedy_decode(module: ir.Operation) -> None:
    decode = function_named(module, names.DECODE_PROGRAM)
    if decode is None:
        raise PassError(
            f"{PASS}: the module has no @{names.DECODE_PROGRAM} (run tessera-insert-kv-cache first)"
        )
    if function_named(module, names.GREEDY_DECODE_PROGRAM) is not None:
        raise _error(f"the module already has @{names.GREEDY_DECODE_PROGRAM}", decode)
    _head(decode)  # refuse before copying
    copy = decode.clone(ip=ir.InsertionPoint(module.regions[0].blocks[0]))
    with copy.context, copy.location:
        copy.attributes["sym_name"] = ir.StringAttr.get(names.GREEDY_DECODE_PROGRAM)
        found = _head(copy)
        head = Projection(found.proj)
        ret = _return(copy)
        leading = shaped_dims(head.x.type)[:-1]
        token_type = ranked_tensor_type(leading, ir.IntegerType.get_signless(64))
        operands = [head.x, head.w] + ([head.bias] if head.bias is not None else [])
        rounded = found.cap is not None
        with ir.InsertionPoint(head.op), head.op.location:
            greedy = GreedySample.build(
                operands,
                [token_type],
                loc=head.op.location,
                softcap=found.cap if rounded else head.softcap,
                rounded_softcap=True if rounded else None,
            )
        root = producer(ret.operands[0])
        assert root is not None, "the head's last op"
        # The chain, the head and what only they used (the cap's splat) go.
        replace_and_sweep(root, [greedy.token], (*found.chain, head.op))
        old = ir.FunctionType(ir.TypeAttr(copy.attributes["function_type"]).value)
        copy.attributes["function_type"] = ir.TypeAttr.get(
            ir.FunctionType.get(list(old.inputs), [token_type])
        )
        copy.attributes["res_attrs"] = ir.ArrayAttr.get(
            [dictionary({OUTPUT_ATTR: ir.StringAttr.get(names.TOKENS)})]
        )


def greedy_decode_problem(module: ir.Operation) -> str | None:
    """Why ``tessera-derive-greedy-decode`` refuses ``module``, or None when it applies."""
    return refusal(module, derive_greedy_decode)


@register_pass(PASS, NoOptions)
def derive_greedy_decode_pass(module: ir.Operation, options: NoOptions) -> None:
    """Derive from @decode (tessera-insert-kv-cache) @decode_greedy, which returns each
    sequence's greedy token (tessera.sample.greedy: the LM head and the argmax in one op, the
    logits never written) instead of the logits."""
    derive_greedy_decode(module)
