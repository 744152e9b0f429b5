"""From planned mid-level IR to a program of kernel launches.

The function's body is walked in order; each op that computes something is handed to the rule
registered for its name (``rules.py``), which builds (or reuses) a kernel in the shared
``KernelModule`` and appends the launch. Tensors are named by where the memory plan
(``tessera-plan-memory``) put them: an input, a weight, an output, or an arena slice; views
and in-place results share their source's name. Scratch that a rule needs beyond the planned
values (the gated MLP's hidden activations) goes after the planned arena.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mlir import ir

from tessera.diagnostics import source_location
from tessera.errors import LoweringError
from tessera.passes.plan_memory import ALIGNMENT, MemoryPlan, PlannedValue
from tessera.passes.shape_exprs import Poly
from tessera.runtime.expr import substitute
from tessera.runtime.manifest import ArgRef, BufferSpec, KernelLaunch, ScalarArg, TensorMapArg

from .kernel import KernelInfo, KernelModule
from .tuning import Tuning

Binding = ArgRef | TensorMapArg | str | int | float
Rule = Callable[[ir.Operation, "LaunchPlan"], None]
RULES: dict[str, Rule] = {}
# Ops that compute nothing at run time: shapes, views, index arithmetic, constants folded
# into kernels.
NO_CODE = frozenset(
    {
        "tensor.empty",
        "tensor.dim",
        "tensor.expand_shape",
        "tensor.collapse_shape",
        "tensor.cast",
        "arith.constant",
        "arith.index_cast",
        "arith.muli",
        "arith.addi",
        "arith.divsi",
        "arith.divui",
        "func.return",
    }
)


def rule(name: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        RULES[name] = fn
        return fn

    return register


@dataclass
class LaunchPlan:
    """The program being built: kernels, launches, buffers, and the memory plan's facts."""

    kernels: KernelModule
    plan: MemoryPlan
    shapes: Mapping[ir.Value, tuple[str, ...]]
    refs: dict[ir.Value, ArgRef] = field(default_factory=dict)
    buffers: list[BufferSpec] = field(default_factory=list)
    steps: list[KernelLaunch] = field(default_factory=list)
    scratch: Poly = field(default_factory=lambda: Poly.parse("0"))
    binary: str = "kernels"
    infos: dict[str, KernelInfo] = field(default_factory=dict)
    # The rows a GEMM of this program is expected to have (None: many). The decode program's
    # rows are its batch, a few sequences: its GEMMs take the bandwidth-bound GEMV.
    rows_hint: int | None = None
    # Kernel choices timed on the card (``tuning.py``); empty: every rule's defaults.
    tuning: Tuning = field(default_factory=Tuning)

    def shape(self, value: ir.Value) -> tuple[str, ...]:
        return self.shapes[value]

    def ref(self, value: ir.Value) -> ArgRef:
        found = self.refs.get(value)
        if found is None:
            raise LoweringError(f"no buffer holds {value.get_name()} (is it computed?)")
        return found

    def kernel(self, name: str, build: Callable[[KernelModule], KernelInfo]) -> KernelInfo:
        """The kernel ``name``, built once per program however many ops use it."""
        info = self.infos.get(name)
        if info is None:
            info = self.infos[name] = build(self.kernels)
        return info

    def scratch_buffer(
        self, name: str, dtype: str, shape: tuple[str, ...], bytes_: str, after: str = "0"
    ) -> ArgRef:
        """Space after the planned arena, shared by every op that asks (used one op at a time:
        a rule's scratch dies when its op ends). An op that needs several buffers at once
        places each ``after`` the bytes of the ones before it (``aligned`` sizes)."""
        start = Poly.parse(after)
        self.scratch = self.scratch.maximum(start + aligned_bytes(bytes_))
        offset = str(Poly.parse(self.plan.arena_bytes) + start)
        spec = BufferSpec(name, "arena", dtype, shape, offset=offset, bytes=bytes_)
        self.buffers.append(spec)
        return ArgRef("buffer", name)

    def launch(self, info: KernelInfo, bindings: Mapping[str, Binding]) -> None:
        """Appends a launch of ``info`` with each parameter bound: buffers to ``ArgRef``s,
        scalars to expressions over the program's symbols (or a float for f32)."""
        self.steps.append(self.step(info, bindings))

    def step(self, info: KernelInfo, bindings: Mapping[str, Binding]) -> KernelLaunch:
        """The launch ``launch`` appends, checked, without appending it."""
        args: list[ArgRef | ScalarArg | TensorMapArg] = []
        scalars: dict[str, str | int] = {}
        for param in info.params:
            if param.name not in bindings:
                raise LoweringError(f"kernel {info.name}: parameter '{param.name}' is unbound")
            value = bindings[param.name]
            if (param.kind == "tensormap") != isinstance(value, TensorMapArg):
                raise LoweringError(
                    f"kernel {info.name}: '{param.name}' takes "
                    + ("a tensor map" if param.kind == "tensormap" else "no tensor map")
                )
            if isinstance(value, TensorMapArg):
                args.append(value)
                continue
            if param.kind == "buffer":
                if not isinstance(value, ArgRef):
                    raise LoweringError(f"kernel {info.name}: '{param.name}' takes a buffer")
                if param.name in info.reads_before_wait and value.kind != "weight":
                    # read before the grid wait: a kernel still running may be writing it
                    raise LoweringError(
                        f"kernel {info.name}: '{param.name}' is read before the kernel waits "
                        f"for the ones before it, so it takes a weight, not {value.name!r}"
                    )
                args.append(value)
                continue
            if isinstance(value, ArgRef):
                raise LoweringError(f"kernel {info.name}: '{param.name}' takes a scalar")
            if param.kind == "f32":
                args.append(ScalarArg("f32", float(value)))
                continue
            text = str(int(value)) if isinstance(value, int | float) else value
            scalars[param.name] = text
            args.append(ScalarArg(param.kind, text))
        grid = tuple(substitute(g, scalars) for g in info.grid)
        return KernelLaunch(
            self.binary,
            info.name,
            (grid[0], grid[1], grid[2]),
            info.block,
            str(info.smem_bytes),
            tuple(args),
            programmatic=self.kernels.device.programmatic_launch,
        )


def aligned_bytes(bytes_: str) -> Poly:
    """``bytes_`` rounded up to the arena's alignment."""
    return Poly.parse(bytes_).cdiv(ALIGNMENT) * ALIGNMENT


def product(dims: tuple[str, ...]) -> str:
    """The product of dims as a simplified expression (``"1"`` for none)."""
    poly = Poly.parse("1")
    for dim in dims:
        poly = poly * Poly.parse(dim)
    return str(poly)


def assign_buffers(func: ir.Operation, launch_plan: LaunchPlan) -> None:
    """Names every value by the memory plan: function arguments as inputs/weights/state, results as
    outputs, arena slices (``t<n>``) and constants (``c<n>``), views as their source."""
    body = func.regions[0].blocks[0]
    for argument in body.arguments:
        index = argument.arg_number
        attrs = ir.ArrayAttr(func.attributes["arg_attrs"])[index]
        entries = ir.DictAttr(attrs)
        if "tessera.input" in entries:
            name = ir.StringAttr(entries["tessera.input"]).value
            launch_plan.refs[argument] = ArgRef("input", name)
        elif "tessera.weight" in entries:
            name = ir.StringAttr(entries["tessera.weight"]).value
            launch_plan.refs[argument] = ArgRef("weight", name)
        elif "tessera.state" in entries:
            # Memory that lives across calls (a KV cache): the program's ``state`` buffer.
            name = ir.StringAttr(entries["tessera.state"]).value
            launch_plan.refs[argument] = ArgRef("buffer", name)
    ops = [v.operation for v in body.operations]
    planned: dict[tuple[int, int], PlannedValue] = {
        (v.index, v.result): v for v in launch_plan.plan.values
    }
    for index, op in enumerate(ops):
        for result_index, result in enumerate(op.results):
            value = planned.get((index, result_index))
            if value is None:
                continue
            if value.kind in ("view", "inplace"):
                assert value.of is not None
                source = op.operands[value.of]
                if source in launch_plan.refs:
                    launch_plan.refs[result] = launch_plan.refs[source]
                if value.kind == "view" or source in launch_plan.refs:
                    continue
            if value.kind == "output":
                launch_plan.refs[result] = ArgRef("output", str(value.name))
            elif value.kind in ("arena", "inplace"):
                name = f"t{index}" + (f"_{result_index}" if len(op.results) > 1 else "")
                launch_plan.buffers.append(
                    BufferSpec(
                        name, "arena", value.dtype, value.shape, str(value.offset), value.bytes
                    )
                )
                launch_plan.refs[result] = ArgRef("buffer", name)
            elif value.kind == "constant":
                name = f"c{index}"
                launch_plan.buffers.append(_constant(name, op, value))
                launch_plan.refs[result] = ArgRef("buffer", name)


def _constant(name: str, op: ir.Operation, value: PlannedValue) -> BufferSpec:
    import numpy as np

    attr = ir.DenseElementsAttr(op.attributes["value"])
    data = np.array(attr)
    if value.dtype == "bf16":
        raise LoweringError("bf16 tensor constants are not supported by the GPU targets yet")
    return BufferSpec(name, "constant", value.dtype, tuple(data.shape), data=data.tobytes().hex())


def located(message: str, op: ir.Operation) -> LoweringError:
    return LoweringError(message, source_location(op.location))


# Rules that take a sequence of consecutive computing ops at once (each reads what the one
# before computed and nothing in between computes): (the ops' names) -> (a predicate on the
# ops that says whether the fused kernel applies, the rule lowering them all). Longer
# sequences are tried first.
SequenceMatch = Callable[[list[ir.Operation]], bool]
SequenceRule = Callable[[list[ir.Operation], "LaunchPlan"], None]
SEQUENCE_RULES: dict[tuple[str, ...], tuple[SequenceMatch, SequenceRule]] = {}


def sequence_rule(
    names: tuple[str, ...], matches: SequenceMatch
) -> Callable[[SequenceRule], SequenceRule]:
    if len(names) < 2:
        raise ValueError("a sequence rule takes two ops or more")

    def register(fn: SequenceRule) -> SequenceRule:
        SEQUENCE_RULES[names] = (matches, fn)
        return fn

    return register


# Rules that take a run of consecutive computing ops of one name at once: name -> (a
# predicate on (the run's first op, a later op) that says whether the later one joins the run,
# the rule lowering the run, two ops or more).
RunMatch = Callable[[ir.Operation, ir.Operation], bool]
RunRule = Callable[[list[ir.Operation], "LaunchPlan"], None]
RUN_RULES: dict[str, tuple[RunMatch, RunRule]] = {}


def run_rule(name: str, joins: RunMatch) -> Callable[[RunRule], RunRule]:
    def register(fn: RunRule) -> RunRule:
        RUN_RULES[name] = (joins, fn)
        return fn

    return register


def _computes(op: ir.Operation) -> bool:
    # arith ops are index arithmetic here; one on tensors (normally made a generic by the plan
    # stage) computes data and needs a rule like any other op.
    return op.name not in NO_CODE or (
        op.name.startswith("arith.")
        and any(isinstance(r.type, ir.RankedTensorType) for r in op.results)
    )


def _matching_sequence(ops: list[ir.Operation]) -> tuple[int, SequenceRule] | None:
    """The longest registered sequence that ``ops`` starts with and whose predicate holds:
    its length and rule."""
    for length in sorted({len(names) for names in SEQUENCE_RULES}, reverse=True):
        if length > len(ops):
            continue
        found = SEQUENCE_RULES.get(tuple(op.name for op in ops[:length]))
        if found is not None and found[0](ops[:length]):
            return length, found[1]
    return None


def build_launches(func: ir.Operation, launch_plan: LaunchPlan) -> None:
    """Runs the rule of every op in ``func``'s body, in order; a registered sequence of
    consecutive ops is lowered by its sequence rule, else a registered run of them by its run
    rule, as one kernel (a sequence may begin with ops that would make a run on their own)."""
    assign_buffers(func, launch_plan)
    ops = [view.operation for view in func.regions[0].blocks[0].operations]
    computing = [op for op in ops if _computes(op)]
    skip: set[int] = set()
    for index, op in enumerate(computing):
        if index in skip:
            continue
        sequence = _matching_sequence(computing[index:])
        if sequence is not None:
            length, lower_sequence = sequence
            lower_sequence(computing[index : index + length], launch_plan)
            skip.update(range(index + 1, index + length))
            continue
        run_rule_of = RUN_RULES.get(op.name)
        if run_rule_of is not None:
            joins, lower_run = run_rule_of
            run = [op]
            while index + len(run) < len(computing) and joins(op, computing[index + len(run)]):
                run.append(computing[index + len(run)])
            if len(run) > 1:
                lower_run(run, launch_plan)
                skip.update(range(index + 1, index + len(run)))
                continue
        lower = RULES.get(op.name)
        if lower is None:
            raise located(f"no GPU lowering for '{op.name}' (cuda and rocm targets)", op)
        lower(op, launch_plan)
