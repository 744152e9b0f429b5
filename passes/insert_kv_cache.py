"""tessera-insert-kv-cache: the functions that generation runs, derived from the one traced and
fused forward function (docs/high-level-ir.md, "The KV cache").

The forward function computes logits from token ids with attention over the tokens of the call
(``tessera.attention.flash``, causal, positions the sequence index). Two copies of it are
added next to it, each taking besides the token ids the rope ``positions`` [B, S], the cache
index of each sequence's first new token ``cache_index`` [B], its first valid key
``kv_start`` [B] (keys before it are left padding), one block table [B, M] per group of
layers that share a cache shape (global layers, sliding-window layers), and the caches
themselves, one key and one value memref [N, Hkv, BS, D] per layer, marked as state:

- ``@prefill_kv``: any number of new tokens (a prompt, or a chunk of one);
- ``@decode``: one new token per sequence (``input_ids`` [B, 1]).

In both, each attention layer writes its post-RoPE keys and values into its cache
(``tessera.kv.append``) and attends over the cache (``tessera.attention.paged``) with the
flash op's scale, softcap and window; every ``tessera.rope.apply`` reads ``positions``
instead of the sequence index. Nothing else changes, so the cached functions compute exactly
what the forward function computes. The names of programs, inputs and buffers are those of
``runtime/kv_layout.py``; ``kv_layout_of`` reads the layout back from a derived function.

IR the pass cannot handle is refused at the op that stops it: attention that is not causal,
positions that are not the sequence index, a sequence index that feeds anything but rope.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import tensor

from tessera.diagnostics import source_location
from tessera.dialects import FlashAttention, KvAppend, PagedAttention
from tessera.errors import PassError
from tessera.ir_types import ranked_tensor_type, shaped_dims
from tessera.ir_walk import walk_ops
from tessera.pass_registry import register_pass
from tessera.runtime import kv_layout as names

from .kv_positions import use_positions
from .kv_signature import (
    DIMS_ATTR,
    GROUP_ATTR,
    INPUT_ATTR,
    LAYER_ATTR,
    OUTPUT_ATTR,
    STATE_ATTR,
    WINDOW_ATTR,
    Signature,
    arg_attrs,
    dictionary,
    dims_attr,
    refusal,
    string,
    symbol,
)


@dataclass(frozen=True)
class InsertKvCacheOptions:
    """``block-size``: tokens per cache block."""

    block_size: int = 16


@dataclass
class _Attention:
    """One attention layer of the function being derived."""

    op: ir.Operation
    layer: int
    window: int | None
    group: str = ""


def _error(message: str, op: ir.Operation) -> PassError:
    return PassError(message, source_location(op.location))


def entry_function(module: ir.Operation) -> ir.Operation:
    """The function taking ``input_ids`` (the traced forward function)."""
    found = []
    for view in module.regions[0].blocks[0].operations:
        op = view.operation
        if op.name != "func.func" or not op.regions[0].blocks:
            continue
        if any(string(a, INPUT_ATTR) == names.INPUT_IDS for a in arg_attrs(op)):
            found.append(op)
    if len(found) != 1:
        raise PassError(
            f"tessera-insert-kv-cache: expected one function with an argument "
            f'{INPUT_ATTR} = "{names.INPUT_IDS}", found {len(found)}'
        )
    return found[0]


def _region_of(op: ir.Operation) -> ir.Operation | None:
    parent = op.parent
    while parent is not None and parent.name != "tessera.region":
        parent = parent.parent
    return None if parent is None else parent.operation


def _attentions(function: ir.Operation) -> list[_Attention]:
    """Every flash attention of ``function`` with its layer and window, checked."""
    found: list[_Attention] = []
    for op in walk_ops(function, pre_order=True):
        if op.name != "tessera.attention.flash":
            continue
        view = FlashAttention(op)
        if not view.causal:
            raise _error("attention is not causal; a KV cache serves causal attention only", op)
        if "tessera.layout" in op.attributes:
            raise _error("attention reads a target layout; insert the KV cache before it", op)
        region = _region_of(op)
        layer = len(found)
        if region is not None and "layer" in region.attributes:
            layer = int(ir.IntegerAttr(region.attributes["layer"]).value)
        window = None if view.window is None else int(view.window)
        if region is not None and "kind" in region.attributes:
            kind = str(ir.StringAttr(region.attributes["kind"]).value)
            if (kind == "sliding") != (window is not None):
                raise _error(
                    f"the block's kind is '{kind}' but its attention has "
                    f"{'no window' if window is None else f'window {window}'}",
                    op,
                )
        if any(a.layer == layer for a in found):
            raise _error(f"layer {layer} has more than one attention", op)
        found.append(_Attention(op, layer, window))
    if not found:
        raise PassError(
            f"tessera-insert-kv-cache: @{symbol(function)} has no tessera.attention.flash "
            "(attention must fuse before a KV cache can be inserted)",
            source_location(function.location),
        )
    windows = {a.window for a in found if a.window is not None}
    for attention in found:
        attention.group = names.group_name(attention.window, windows)
    return found


def kv_cache_problem(module: ir.Operation) -> str | None:
    """Why ``tessera-insert-kv-cache`` refuses ``module``, or None when it applies: the pass
    runs on a detached copy. A target asks before building generation programs, so that a
    model the cache cannot serve still compiles for plain calls."""
    return refusal(module, lambda copy: insert_kv_cache(copy, InsertKvCacheOptions()))


def _cast_at_start(block: ir.Block, value: ir.Value, to: ir.Type) -> ir.Value:
    """``tensor.cast value`` to ``to`` at the top of ``block``."""
    first = next(iter(block.operations)).operation
    with ir.InsertionPoint(first), first.location:
        return tensor.CastOp(to, value).result


def _derive(
    function: ir.Operation, name: str, decode: bool, block_size: int, attentions: list[_Attention]
) -> None:
    """Turns ``function`` (a copy of the forward function) into ``@name``."""
    function.attributes["sym_name"] = ir.StringAttr.get(name)
    signature = Signature(function)
    block = signature.block
    ids = next(
        arg
        for arg, attrs in zip(block.arguments, arg_attrs(function), strict=True)
        if string(attrs, INPUT_ATTR) == names.INPUT_IDS
    )
    ids_dims = shaped_dims(ids.type)
    batch = ids_dims[0]
    batch_dim: int | str = "B" if batch is None else batch
    tokens: int | str = 1 if decode else "S"
    i64, i32 = ir.IntegerType.get_signless(64), ir.IntegerType.get_signless(32)
    ids_attrs = arg_attrs(function)[ids.arg_number]
    ids_attrs[DIMS_ATTR] = dims_attr([batch_dim, tokens])
    signature.attrs[ids.arg_number] = dictionary(ids_attrs)
    token_type = ranked_tensor_type([batch, 1 if decode else None], i64)
    if decode:
        dynamic = ids.type
        ids.set_type(token_type)
        cast = _cast_at_start(block, ids, dynamic)
        for use in list(ids.uses):
            if use.owner.operation != cast.owner.operation:
                use.owner.operation.operands[use.operand_number] = cast

    def named(input_name: str, dims: list[int | str]) -> dict[str, ir.Attribute]:
        return {INPUT_ATTR: ir.StringAttr.get(input_name), DIMS_ATTR: dims_attr(dims)}

    positions = signature.add(token_type, named(names.POSITIONS, [batch_dim, tokens]))
    if decode:
        positions = _cast_at_start(block, positions, ranked_tensor_type([batch, None], i64))
    per_sequence = ranked_tensor_type([batch], i64)
    cache_index = signature.add(per_sequence, named(names.CACHE_INDEX, [batch_dim]))
    kv_start = signature.add(per_sequence, named(names.KV_START, [batch_dim]))
    tables: dict[str, ir.Value] = {}
    for attention in attentions:
        group = attention.group
        if group in tables:
            continue
        attrs = named(names.table_input(group), [batch_dim, names.table_symbol(group)])
        if attention.window is not None:
            attrs[WINDOW_ATTR] = ir.IntegerAttr.get(i64, attention.window)
        tables[group] = signature.add(ranked_tensor_type([batch, None], i32), attrs)
    for attention in attentions:
        view = FlashAttention(attention.op)
        caches = []
        for part, value in (("k", view.k), ("v", view.v)):
            _, heads, _, depth = shaped_dims(value.type)
            if heads is None or depth is None:
                raise _error(
                    f"{part} {value.type} needs static kv heads and head dim for its cache",
                    attention.op,
                )
            element = ir.ShapedType(value.type).element_type
            dims: list[int | str] = [names.blocks_symbol(attention.group), heads, block_size]
            any_blocks = ir.ShapedType.get_dynamic_size()
            cache_type = ir.MemRefType.get([any_blocks, heads, block_size, depth], element)
            caches.append(
                signature.add(
                    cache_type,
                    {
                        STATE_ATTR: ir.StringAttr.get(names.state_name(attention.layer, part)),
                        DIMS_ATTR: dims_attr([*dims, depth]),
                        GROUP_ATTR: ir.StringAttr.get(attention.group),
                        LAYER_ATTR: ir.IntegerAttr.get(i64, attention.layer),
                    },
                )
            )
        table = tables[attention.group]
        loc = attention.op.location
        with ir.InsertionPoint(attention.op), loc:
            KvAppend.build([*caches, view.k, view.v, table, cache_index], [], loc=loc)
            paged = PagedAttention.build(
                [view.q, *caches, table, cache_index, kv_start],
                [view.o.type],
                loc=loc,
                scale=view.scale,
                softcap=view.softcap,
                window=view.window,
            )
        view.o.replace_all_uses_with(paged.o)
        attention.op.erase()
    signature.finish()
    results = len(ir.FunctionType(ir.TypeAttr(function.attributes["function_type"]).value).results)
    if results != 1:
        raise _error(f"@{name} returns {results} values; expected the logits alone", function)
    function.attributes["res_attrs"] = ir.ArrayAttr.get(
        [dictionary({OUTPUT_ATTR: ir.StringAttr.get(names.LOGITS)})]
    )
    use_positions(function, positions)


def _functions(module: ir.Operation) -> set[str]:
    return {
        symbol(op.operation)
        for op in module.regions[0].blocks[0].operations
        if "sym_name" in op.operation.attributes
    }


@register_pass("tessera-insert-kv-cache", InsertKvCacheOptions)
def insert_kv_cache(module: ir.Operation, options: InsertKvCacheOptions) -> None:
    """Derive from the forward function @prefill_kv (new tokens of any count) and @decode (one
    new token per sequence), which write each layer's post-RoPE keys and values into a paged
    KV cache (tessera.kv.append) and attend over it (tessera.attention.paged), with rope
    positions, cache indices, block tables and the caches as arguments (option: block-size=N
    tokens per block, default 16)."""
    if options.block_size <= 0:
        raise PassError(
            f"tessera-insert-kv-cache: block-size must be positive, found {options.block_size}"
        )
    forward = entry_function(module)
    taken = _functions(module) & {names.PREFILL_PROGRAM, names.DECODE_PROGRAM}
    if taken:
        raise PassError(
            f"tessera-insert-kv-cache: the module already has @{sorted(taken)[0]}",
            source_location(forward.location),
        )
    for name, decode in ((names.PREFILL_PROGRAM, False), (names.DECODE_PROGRAM, True)):
        copy = forward.clone(ip=ir.InsertionPoint(module.regions[0].blocks[0]))
        try:
            with copy.context, copy.location:
                _derive(copy, name, decode, options.block_size, _attentions(copy))
        except PassError:
            copy.erase()
            raise
