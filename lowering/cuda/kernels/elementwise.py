"""Any all-parallel ``linalg.generic`` (tensor semantics) as a CUDA kernel.

The plan builder hands over generics made by ``linalg-generalize-named-ops`` and
``linalg-fuse-elementwise-ops``: casts, residual adds, Gemma's final logit softcap
(extf, divf, tanh, mulf, truncf), transposes and broadcasts. Their indexing maps are projected
permutations (an operand may skip loop dims: broadcast; or take them in another order:
transpose; a constant 0 result indexes a unit dim), operand shapes may be dynamic.

The kernel walks the iteration domain flattened in loop order, one thread per ``lanes``
consecutive points of the innermost loop dim. Each operand is a flat row-major buffer of its
own tensor shape, so a point's element is Σ index[d(p)]·stride(p) over the operand's dims p.
Consecutive loop dims that every operand holds adjacently (or not at all) are walked as one
(an identity-mapped add is a single flat loop: no division at all). When the innermost such
group's static part divides by the vector width and the group is innermost (or absent) in
every operand, a thread moves 16 bytes per operand with one vector load/store; otherwise
``lanes`` is 1.
The body is cloned once per lane, scalar, with ``linalg.index`` replaced by the point's
index; constants defined outside the generic are cloned in too.

Parameters: ``in{k}`` for each input k (a buffer; a scalar input of type i32/i64/f32 that is
no constant becomes a scalar parameter of that kind; constants are compiled in and have no
parameter), ``out``, then one i64 ``d{i}`` per dynamic loop dim i (i = the loop dim's
position, so the names say which dim they bind). Booleans (i1) are byte buffers (``i8``).
Grid ``cdiv(points / lanes, 256)``. A division by a dynamic size is done in 32 bits: the
points outside the innermost dynamic group (points / lanes / that group's and the inner
groups' extents) must stay under 2³². Buffers must be 16-byte aligned (torch's allocations
and the arena's 256-byte slices are).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mlir import ir, passmanager
from mlir.dialects import arith, gpu, memref, scf, vector

from ..kernel import KernelInfo, KernelModule, Param
from .rms_norm import ACCESS_BYTES, constant, if_op, index, sqrt

BLOCK = 256
# Upstream passes that turn elementwise tensor IR into fused generics (for tests and tools).
FUSE_ELEMENTWISE = (
    "builtin.module(func.func(convert-elementwise-to-linalg,linalg-generalize-named-ops),"
    "canonicalize,cse,linalg-fuse-elementwise-ops,canonicalize,cse)"
)
SCALAR_PARAM_KINDS = ("i32", "i64", "f32")


class ElementwiseError(ValueError):
    """A generic this kernel generator does not take; the message names what and why."""


@dataclass(frozen=True)
class Access:
    """How one operand is read or written.

    ``kind``: ``buffer`` (a tensor in memory), ``scalar`` (a runtime scalar parameter) or
    ``constant`` (a scalar constant cloned into the kernel). ``dims[p]`` is the loop dim that
    indexes the operand's dim p (None: a constant-0 index into a unit dim)."""

    kind: str
    dtype: str
    dims: tuple[int | None, ...] = ()

    @property
    def storage(self) -> str:
        """Element type in memory: booleans are bytes."""
        return "i8" if self.dtype == "i1" else self.dtype


@dataclass(frozen=True)
class ElementwisePlan:
    """The static facts of one elementwise kernel: loop sizes (None: dynamic, bound to the
    scalar parameter ``d{i}``), how each input and the output are accessed, the loop dims
    walked as one (``groups``: consecutive dims that every operand holds adjacently, in order,
    or not at all; they need no division between them) and the points per thread along the
    innermost group."""

    sizes: tuple[int | None, ...]
    inputs: tuple[Access, ...]
    output: Access
    groups: tuple[tuple[int, ...], ...]
    lanes: int = 1

    @property
    def dynamic(self) -> tuple[int, ...]:
        return tuple(i for i, size in enumerate(self.sizes) if size is None)

    def group_size(self, group: int) -> int | None:
        """The group's extent when all its dims are static."""
        if any(self.sizes[dim] is None for dim in self.groups[group]):
            return None
        return self.static_factor(group)

    def static_factor(self, group: int) -> int:
        """Product of the group's static dims (its extent is this times its dynamic dims)."""
        size = 1
        for dim in self.groups[group]:
            size *= self.sizes[dim] or 1
        return size

    def group_of(self, dim: int) -> int:
        return next(g for g, members in enumerate(self.groups) if dim in members)

    def group_dims(self, access: Access) -> tuple[int | None, ...]:
        """The access's dims in groups (a group's dims are adjacent: they collapse to one)."""
        out: list[int | None] = []
        for dim in access.dims:
            group = None if dim is None else self.group_of(dim)
            if group is None or not out or out[-1] != group:
                out.append(group)
        return tuple(out)

    def grid_x(self) -> str:
        """Blocks: cdiv(points / lanes, BLOCK) as an expression over the ``d{i}`` names."""
        static = 1
        for size in self.sizes:
            static *= size if size is not None else 1
        units = static // self.lanes
        if not self.dynamic:
            return str(-(-units // BLOCK))
        names = "*".join(f"d{i}" for i in self.dynamic)
        return f"cdiv({names}*{units}, {BLOCK})" if units != 1 else f"cdiv({names}, {BLOCK})"


# ---------------------------------------------------------------------------------------------
# Analysis


_BYTES = {"i1": 1, "i8": 1, "i16": 2, "i32": 4, "i64": 8, "bf16": 2, "f16": 2, "f32": 4, "f64": 8}


def _bytes(dtype: str) -> int:
    if dtype not in _BYTES:
        raise ElementwiseError(f"element type {dtype} is not supported in elementwise kernels")
    return _BYTES[dtype]


def _map_dims(generic: ir.Operation, attr: ir.Attribute) -> tuple[int | None, ...]:
    affine_map = ir.AffineMapAttr(attr).value
    dims: list[int | None] = []
    for result in affine_map.results:
        if isinstance(result, ir.AffineDimExpr):
            dims.append(result.position)
        elif isinstance(result, ir.AffineConstantExpr) and result.value == 0:
            dims.append(None)
        else:
            raise ElementwiseError(
                f"{generic.name}: indexing map {affine_map} is not a projected permutation"
            )
    return tuple(dims)


def _is_constant(value: ir.Value) -> bool:
    return isinstance(value, ir.OpResult) and value.owner.name == "arith.constant"


def plan_elementwise(generic: ir.Operation) -> ElementwisePlan:
    """What ``build_elementwise`` will build for ``generic``; raises ``ElementwiseError``."""
    generic = generic.operation
    if generic.name != "linalg.generic":
        raise ElementwiseError(f"expected a linalg.generic, found {generic.name}")
    iterators = [str(k) for k in ir.ArrayAttr(generic.attributes["iterator_types"])]
    if any("parallel" not in k for k in iterators):
        raise ElementwiseError(f"linalg.generic has non-parallel iterators {iterators}")
    segments = list(ir.DenseI32ArrayAttr(generic.attributes["operandSegmentSizes"]))
    if segments[1] != 1 or len(generic.results) != 1:
        raise ElementwiseError(f"linalg.generic must have one output, found {segments[1]}")
    maps = list(ir.ArrayAttr(generic.attributes["indexing_maps"]))
    loops = ir.AffineMapAttr(maps[0]).value.n_dims
    operands = list(generic.operands)
    out_value = operands[-1]
    if not isinstance(out_value.type, ir.RankedTensorType):
        raise ElementwiseError(
            f"linalg.generic output must be a ranked tensor, found {out_value.type}"
        )

    sizes: list[int | None] = [None] * loops
    accesses: list[Access] = []
    for value, attr in zip(operands, maps, strict=True):
        if not isinstance(value.type, ir.ShapedType):
            kind = "constant" if _is_constant(value) else "scalar"
            dtype = str(value.type)
            if kind == "scalar" and dtype not in SCALAR_PARAM_KINDS:
                raise ElementwiseError(f"scalar input of type {dtype} must be a constant")
            accesses.append(Access(kind, dtype))
            continue
        shaped = ir.RankedTensorType(value.type)
        dims = _map_dims(generic, attr)
        for dim, size in zip(dims, shaped.shape, strict=True):
            if dim is not None and not ir.ShapedType.is_dynamic_size(size):
                sizes[dim] = size
        accesses.append(Access("buffer", str(shaped.element_type), dims))
    output = accesses[-1]
    if sorted(d for d in output.dims if d is not None) != list(range(loops)):
        raise ElementwiseError(f"output map {output.dims} must be a permutation of the loops")
    groups = _groups(loops, accesses, _indexed_dims(generic))
    plan = ElementwisePlan(tuple(sizes), tuple(accesses[:-1]), output, groups)
    return ElementwisePlan(plan.sizes, plan.inputs, plan.output, groups, _lanes(plan))


def _indexed_dims(generic: ir.Operation) -> set[int]:
    body = generic.regions[0].blocks[0]
    return {
        ir.IntegerAttr(op.attributes["dim"]).value
        for op in body.operations
        if op.operation.name == "linalg.index"
    }


def _groups(loops: int, accesses: list[Access], indexed: set[int]) -> tuple[tuple[int, ...], ...]:
    """Consecutive loop dims that every buffer holds adjacently in order, or not at all (and
    that ``linalg.index`` does not read), walked as one dim."""
    groups: list[list[int]] = []
    for dim in range(loops):
        if groups and dim not in indexed and dim - 1 not in indexed:
            if all(
                _adjacent(access, dim - 1, dim) for access in accesses if access.kind == "buffer"
            ):
                groups[-1].append(dim)
                continue
        groups.append([dim])
    return tuple(tuple(g) for g in groups)


def _adjacent(access: Access, first: int, second: int) -> bool:
    if first not in access.dims and second not in access.dims:
        return True
    if first not in access.dims or second not in access.dims:
        return False
    return access.dims.index(second) == access.dims.index(first) + 1


def _lanes(plan: ElementwisePlan) -> int:
    """Points per thread: 16 bytes of the narrowest vector-accessed operand, halved until it
    divides the static part of the innermost group's extent; 1 when any operand takes the
    innermost group at another position than its last (a transpose of the innermost dim)."""
    if not plan.groups:
        return 1
    inner = len(plan.groups) - 1
    size = plan.static_factor(inner)
    lanes = ACCESS_BYTES
    for access in (*plan.inputs, plan.output):
        dims = plan.group_dims(access) if access.kind == "buffer" else ()
        if inner not in dims:
            continue
        if dims[-1] != inner:
            return 1
        lanes = min(lanes, ACCESS_BYTES // _bytes(access.storage))
    while lanes > 1 and size % lanes:
        lanes //= 2
    return lanes


def _signature(generic: ir.Operation, plan: ElementwisePlan) -> str:
    """Location- and name-free text of what the kernel computes (for its name)."""
    body = generic.regions[0].blocks[0]
    numbers: dict[ir.Value, str] = {arg: f"a{i}" for i, arg in enumerate(body.arguments)}
    lines = [repr(plan), str(generic.attributes["indexing_maps"])]
    for value in generic.operands:
        lines.append(str(value.type))
    for position, entry in enumerate(body.operations):
        op = entry.operation
        refs = []
        for operand in op.operands:
            if operand not in numbers:
                numbers[operand] = f"c{len(numbers)}:{operand.owner.operation}"
            refs.append(numbers[operand])
        attributes = sorted(f"{name}={op.attributes[name]}" for name in op.attributes)
        lines.append(
            f"{op.name}({', '.join(refs)}) {attributes} -> {[str(r.type) for r in op.results]}"
        )
        for i, result in enumerate(op.results):
            numbers[result] = f"r{position}.{i}"
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Emission


def build_elementwise(km: KernelModule, generic: ir.Operation) -> KernelInfo:
    """Adds the kernel computing ``generic`` to ``km`` (once per distinct computation) and says
    how to launch it (see the module docstring for its parameters and grid)."""
    generic = generic.operation
    plan = plan_elementwise(generic)
    _check_body(generic)
    digest = hashlib.sha1(_signature(generic, plan).encode()).hexdigest()[:12]
    name = f"tessera_elementwise_{digest}"
    params: list[Param] = []
    for k, access in enumerate(plan.inputs):
        if access.kind == "buffer":
            params.append(Param.buffer(f"in{k}", access.storage))
        elif access.kind == "scalar":
            params.append(Param.scalar(f"in{k}", access.dtype))
    params.append(Param.buffer("out", plan.output.storage))
    params.extend(Param.scalar(f"d{i}", "i64") for i in plan.dynamic)
    info = KernelInfo(name, tuple(params), (plan.grid_x(), "1", "1"), (BLOCK, 1, 1))
    if km.has_kernel(name):
        return info
    _, entry = km.add_kernel(name, params)
    with ir.InsertionPoint(entry):
        args = dict(zip((p.name for p in params), entry.arguments, strict=True))
        _emit(km, generic, plan, args)
        gpu.ReturnOp([])
    return info


def _check_body(generic: ir.Operation) -> None:
    body = generic.regions[0].blocks[0]
    out_arg = body.arguments[len(body.arguments) - 1]
    for entry in body.operations:
        op = entry.operation
        if len(op.regions):
            raise ElementwiseError(f"{op.name} in a linalg.generic body has regions")
        if op.name not in ("linalg.index", "linalg.yield") and not op.name.startswith(
            ("arith.", "math.")
        ):
            raise ElementwiseError(f"{op.name} in a linalg.generic body is not elementwise")
        if any(operand == out_arg for operand in op.operands):
            raise ElementwiseError(
                f"{op.name} reads the output's initial value; only pure elementwise generics "
                "(the output operand unused in the body) are supported"
            )


def _emit(
    km: KernelModule, generic: ir.Operation, plan: ElementwisePlan, args: dict[str, ir.Value]
) -> None:
    sizes = [
        index(size) if size is not None else arith.index_cast(ir.IndexType.get(), args[f"d{i}"])
        for i, size in enumerate(plan.sizes)
    ]
    extents: list[ir.Value] = []
    for members in plan.groups:
        extent = sizes[members[0]]
        for dim in members[1:]:
            extent = arith.muli(extent, sizes[dim])
        extents.append(extent)
    # Thread → unit t, covering points t·lanes .. t·lanes + lanes - 1 of the flattened domain.
    tid = gpu.thread_id(gpu.Dimension.x)
    block = gpu.block_id(gpu.Dimension.x)
    unit = arith.addi(arith.muli(block, index(BLOCK)), tid)
    units = index(1)
    for extent in extents:
        units = arith.muli(units, extent)
    if plan.lanes > 1:
        units = arith.divui(units, index(plan.lanes))
    branch = if_op(arith.cmpi(arith.CmpIPredicate.ult, unit, units))
    with ir.InsertionPoint(branch.then_block):
        point = _decompose(plan, unit, extents)
        _emit_point(km, generic, plan, args, point, extents)
        scf.YieldOp([])


def _decompose(plan: ElementwisePlan, unit: ir.Value, extents: list[ir.Value]) -> list[ir.Value]:
    """Group indices of the unit's first point. Static extents divide in 64 bits (multiply-
    high); from the last dynamic group outwards the quotient is cut to 32 bits, where a
    division by a run-time value is far cheaper."""
    count = len(plan.groups)
    indices: list[ir.Value] = [index(0)] * count
    i32 = ir.IntegerType.get_signless(32)
    rest = unit
    narrow = False
    for group in range(count - 1, -1, -1):
        static = plan.group_size(group)
        extent = extents[group]
        if group == count - 1 and plan.lanes > 1:
            # The innermost group counts units of `lanes` points (lanes divides its extent).
            static = None if static is None else static // plan.lanes
            extent = arith.divui(extent, index(plan.lanes))
        if group == 0:
            position = rest
        elif static is None:
            if not narrow:
                rest = arith.index_castui(i32, rest)
                narrow = True
            size32 = arith.index_castui(i32, extent)
            quotient = arith.divui(rest, size32)
            position = arith.subi(rest, arith.muli(quotient, size32))
            rest = quotient
        else:
            divisor = constant(rest.type, static)
            position = arith.remui(rest, divisor)
            rest = arith.divui(rest, divisor)
        if narrow:
            position = arith.index_castui(ir.IndexType.get(), position)
        if group == count - 1 and plan.lanes > 1:
            position = arith.muli(position, index(plan.lanes))
        indices[group] = position
    return indices


def _offset(
    plan: ElementwisePlan, access: Access, point: list[ir.Value], extents: list[ir.Value]
) -> ir.Value:
    """Σ index[g]·stride(g) over the access's (grouped) dims, strides row-major."""
    offset: ir.Value | None = None
    stride: ir.Value | None = None  # None: 1
    for group in reversed(plan.group_dims(access)):
        if group is None:
            continue
        term = point[group] if stride is None else arith.muli(point[group], stride)
        offset = term if offset is None else arith.addi(offset, term)
        stride = extents[group] if stride is None else arith.muli(stride, extents[group])
    return offset if offset is not None else index(0)


def _emit_point(
    km: KernelModule,
    generic: ir.Operation,
    plan: ElementwisePlan,
    args: dict[str, ir.Value],
    point: list[ir.Value],
    extents: list[ir.Value],
) -> None:
    lanes = plan.lanes
    inner = len(plan.groups) - 1
    body = generic.regions[0].blocks[0]
    operands = list(generic.operands)
    # Per input, its value at each of the unit's points.
    per_lane: list[list[ir.Value]] = []
    for k, access in enumerate(plan.inputs):
        if access.kind == "constant":
            per_lane.append([_clone_constant(operands[k])] * lanes)
        elif access.kind == "scalar":
            per_lane.append([args[f"in{k}"]] * lanes)
        elif lanes > 1 and inner in plan.group_dims(access):
            loaded = _load(args[f"in{k}"], _offset(plan, access, point, extents), lanes, access)
            per_lane.append(
                [_unpack(vector.extract(loaded, [], [j]), access) for j in range(lanes)]
            )
        else:
            offset = _offset(plan, access, point, extents)
            per_lane.append([_unpack(memref.load(args[f"in{k}"], [offset]), access)] * lanes)
    results: list[ir.Value] = []
    outside: dict[ir.Value, ir.Value] = {}
    for j in range(lanes):
        mapping = {body.arguments[k]: values[j] for k, values in enumerate(per_lane)}
        # linalg.index reads ungrouped dims: dim d's index is its group's.
        loop_point = [point[plan.group_of(d)] for d in range(len(plan.sizes))]
        if j:
            last = len(plan.sizes) - 1
            loop_point[last] = arith.addi(loop_point[last], index(j))
        results.append(_clone_body(km, body, mapping, outside, loop_point))
    out_offset = _offset(plan, plan.output, point, extents)
    stored = [_pack(value, plan.output) for value in results]
    if lanes == 1:
        memref.store(stored[0], args["out"], [out_offset])
        return
    vtype = ir.VectorType.get([lanes], stored[0].type)
    alignment = min(ACCESS_BYTES, lanes * _bytes(plan.output.storage))
    vector.store(
        vector.from_elements(vtype, stored), args["out"], [out_offset], alignment=alignment
    )


def _load(buffer: ir.Value, offset: ir.Value, lanes: int, access: Access) -> ir.Value:
    element = ir.Type.parse(access.storage)
    alignment = min(ACCESS_BYTES, lanes * _bytes(access.storage))
    return vector.load(ir.VectorType.get([lanes], element), buffer, [offset], alignment=alignment)


def _unpack(value: ir.Value, access: Access) -> ir.Value:
    """A stored element as the body sees it (bytes back to i1)."""
    if access.dtype != "i1":
        return value
    zero = constant(value.type, 0)
    return arith.cmpi(arith.CmpIPredicate.ne, value, zero)


def _pack(value: ir.Value, access: Access) -> ir.Value:
    if access.dtype != "i1":
        return value
    return arith.extui(ir.IntegerType.get_signless(8), value)


def _clone_constant(value: ir.Value) -> ir.Value:
    op = value.owner.operation
    return ir.Operation.create(
        op.name,
        results=[r.type for r in op.results],
        attributes={name: op.attributes[name] for name in op.attributes},
    ).results[0]


def _clone_body(
    km: KernelModule,
    body: ir.Block,
    mapping: dict[ir.Value, ir.Value],
    outside: dict[ir.Value, ir.Value],
    point: list[ir.Value],
) -> ir.Value:
    """Clones the body's ops for one point; returns the yielded value. Constants from outside
    the generic are cloned once per kernel (``outside``)."""
    for entry in body.operations:
        op = entry.operation
        if op.name == "linalg.yield":
            return _lookup(op.operands[0], mapping, outside)
        if op.name == "linalg.index":
            dim = ir.IntegerAttr(op.attributes["dim"]).value
            mapping[op.results[0]] = point[dim]
            continue
        operands = [_lookup(v, mapping, outside) for v in op.operands]
        if op.name == "math.sqrt" and str(op.results[0].type) == "f32":
            mapping[op.results[0]] = sqrt(km, operands[0])
            continue
        clone = ir.Operation.create(
            op.name,
            results=[r.type for r in op.results],
            operands=operands,
            attributes={name: op.attributes[name] for name in op.attributes},
        )
        for old, new in zip(op.results, clone.results, strict=True):
            mapping[old] = new
    raise ElementwiseError("linalg.generic body has no linalg.yield")


def _lookup(
    value: ir.Value, mapping: dict[ir.Value, ir.Value], outside: dict[ir.Value, ir.Value]
) -> ir.Value:
    if value in mapping:
        return mapping[value]
    if value in outside:
        return outside[value]
    if not _is_constant(value):
        owner = value.owner
        what = owner.operation.name if isinstance(value, ir.OpResult) else "a block argument"
        raise ElementwiseError(f"the generic body uses a value defined outside it by {what}")
    outside[value] = _clone_constant(value)
    return outside[value]


# ---------------------------------------------------------------------------------------------
# From IR text (tests, tools)


def generics_from_text(text: str, context: ir.Context) -> tuple[ir.Module, list[ir.Operation]]:
    """Parses ``text`` (elementwise tensor IR: arith/math on tensors, linalg named ops) and runs
    the upstream passes the plan builder runs (``FUSE_ELEMENTWISE``); returns the module (keep
    it alive) and its ``linalg.generic`` ops in order."""
    with context:
        module = ir.Module.parse(text)
        passmanager.PassManager.parse(FUSE_ELEMENTWISE).run(module.operation)
        found: list[ir.Operation] = []

        def collect(op: ir.Operation) -> ir.WalkResult:
            if op.name == "linalg.generic":
                found.append(op)
            return ir.WalkResult.ADVANCE

        module.operation.walk(collect, ir.WalkOrder.PRE_ORDER)
    return module, found
