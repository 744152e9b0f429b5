"""tessera-lower-dynamic-expand-shapes: a ``memref.expand_shape`` that splits one dim into
several dynamic ones becomes an explicit ``memref.reinterpret_cast``.

The front end reshapes [B·S, N] back to [B, S, N] with both B and S dynamic;
``expand-strided-metadata`` cannot lower that (it aborts: "at most one dynamic size per
group"). This pass does the lowering it would do: the result's sizes are the op's output
shape, and in each group the strides are the source dim's stride times the sizes of the dims
after it.
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import arith, memref

from tessera.ir_walk import walk_ops
from tessera.pass_registry import NoOptions, register_pass

_DYNAMIC = ir.ShapedType.get_dynamic_size()


def _needs_rewrite(op: ir.Operation) -> bool:
    static = list(ir.DenseI64ArrayAttr(op.attributes["static_output_shape"]))
    for group in ir.ArrayAttr(op.attributes["reassociation"]):
        dims = [int(ir.IntegerAttr(d).value) for d in ir.ArrayAttr(group)]
        if sum(1 for d in dims if static[d] == _DYNAMIC) > 1:
            return True
    return False


def _rewrite(op: ir.Operation) -> None:
    source, result_type = op.operands[0], ir.MemRefType(op.results[0].type)
    static = list(ir.DenseI64ArrayAttr(op.attributes["static_output_shape"]))
    dynamic = iter(list(op.operands)[1:])
    index = ir.IndexType.get()
    sizes = [next(dynamic) if s == _DYNAMIC else None for s in static]
    metadata = memref.ExtractStridedMetadataOp(source)
    source_strides = list(metadata.strides)

    def size_value(dim: int) -> ir.Value:
        value = sizes[dim]
        if value is not None:
            return value
        # mypy reads the generated arith.constant; arith.py replaces it with (type, value).
        return arith.constant(index, static[dim])  # type: ignore[call-arg]

    strides: list[ir.Value | None] = [None] * len(static)
    for axis, group in enumerate(ir.ArrayAttr(op.attributes["reassociation"])):
        dims = [int(ir.IntegerAttr(d).value) for d in ir.ArrayAttr(group)]
        stride = source_strides[axis]
        for dim in reversed(dims):
            strides[dim] = stride
            stride = arith.muli(stride, size_value(dim))
    expected_strides, expected_offset = result_type.get_strides_and_offset()
    offsets = [] if expected_offset != _DYNAMIC else [metadata.offset]
    dynamic_sizes = [s for s in sizes if s is not None]
    dynamic_strides = [s for s, e in zip(strides, expected_strides, strict=True) if e == _DYNAMIC]
    cast = memref.ReinterpretCastOp(
        result_type,
        metadata.base_buffer,
        offsets,
        dynamic_sizes,
        dynamic_strides,
        [expected_offset],
        static,
        list(expected_strides),
    )
    op.results[0].replace_all_uses_with(cast.result)
    op.erase()


@register_pass("tessera-lower-dynamic-expand-shapes")
def lower_dynamic_expand_shapes(module: ir.Operation, options: NoOptions) -> None:
    """Rewrite memref.expand_shape with several dynamic sizes in one group as
    memref.reinterpret_cast."""
    for op in walk_ops(module):
        if op.name != "memref.expand_shape" or not _needs_rewrite(op):
            continue
        with ir.InsertionPoint(op), op.location:
            _rewrite(op)
