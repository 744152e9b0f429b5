"""Running a kernel core on all cores by splitting its output columns, with plain pthreads.

MLIR's wheel has no OpenMP or async runtime, so the split is built here from two pieces:

- at kernel level, ``launch`` calls the core directly when the work is small, and otherwise
  calls ``tessera_parallel<T>_<core>`` (T threads), a declaration only, with the core's
  operands, the column count N and the alignment each split point must keep (a microtile's
  width);
- once the module is in the LLVM dialect, ``define_launchers`` gives each such declaration a
  body: it packs the (expanded) operands into a stack array, starts one thread per extra core
  with ``pthread_create`` on a worker that unpacks them and calls the core on its column range,
  runs the first range itself and joins the others. A thread that cannot be started has its
  range run inline, so the result never depends on thread creation succeeding.

The cores write disjoint column ranges of their outputs and read shared inputs only; each
allocates its own scratch, so the ranges need no other coordination.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlir import ir

from ..kernel_call import ensure_function
from .builder import Kernel
from .host import Host

LAUNCHER_PREFIX = "tessera_parallel"


def launcher_name(core: str, threads: int) -> str:
    """The launcher of ``core`` over ``threads`` threads (the count travels in the name, so
    the LLVM-level definition needs nothing but the declaration)."""
    return f"{LAUNCHER_PREFIX}{threads}_{core}"


def _parse_launcher(name: str) -> tuple[str, int] | None:
    """(core, threads) of a launcher name, or None for any other symbol."""
    if not name.startswith(LAUNCHER_PREFIX):
        return None
    count, sep, core = name[len(LAUNCHER_PREFIX) :].partition("_")
    if not sep or not count.isdigit():
        return None
    return core, int(count)


WORKER_PREFIX = "tessera_worker_"

# Work (multiply-adds) below which a kernel runs on one thread. Starting and joining a thread
# costs about 20 µs (measured with bench/cpu_kernels.py), so splitting pays from about 2^24
# (~70 µs of single-core bf16 work, ~140 µs of f32).
MIN_PARALLEL_WORK = 1 << 24


def range_core(core: str, params: Sequence[tuple[str, str]]) -> Kernel:
    """A kernel core over the range [%begin, %end) of its output's columns (or other split
    axis) that ``launch`` hands it: ``params`` followed by the two bounds."""
    return Kernel(core, [*params, ("%begin", "index"), ("%end", "index")])


def finish_range_core(k: Kernel, host: Host) -> str:
    """The text of a core made by ``range_core``, with the func-level declaration of its
    launcher (operands, N, alignment) unless the host has one core."""
    k.line("return")
    if host.threads < 2:
        return k.text()
    params = ", ".join([*(t for _, t in k.params[:-2]), "index", "index"])
    return k.text() + f"func.func private @{launcher_name(k.symbol, host.threads)}({params})\n"


def launch(
    k: Kernel,
    core: str,
    operands: Sequence[str],
    types: Sequence[str],
    columns: int | str,
    align: int,
    work: str,
    host: Host,
) -> None:
    """Calls ``core(operands..., begin, end)`` over columns [0, columns) (a count or an index
    value): split across the host's cores when ``work`` (an index value) is large enough,
    else directly."""
    count = k.as_index(columns)
    args, signature = [*operands, k.index(0), count], [*types, "index", "index"]
    if host.threads < 2 or (isinstance(columns, int) and columns < 2 * align):
        k.call_out_of_line(core, args, signature)
        return
    big = k.cmp("uge", work, MIN_PARALLEL_WORK)
    with k.if_(big):
        k.line(
            f"func.call @{launcher_name(core, host.threads)}({', '.join(operands)}, {count}, "
            f"{k.index(align)}) : ({', '.join(signature)}) -> ()"
        )
    with k.otherwise():
        k.call_out_of_line(core, args, signature)


def _param_types(function: ir.Operation) -> list[str]:
    """Parameter types of an ``llvm.func`` (the launcher's are the core's operands, all
    scalars or pointers after memref descriptors are expanded)."""
    text = str(function.attributes["function_type"])
    inner = text[text.index("(") + 1 : text.rindex(")")]
    types = [t.strip() for t in inner.split(",")] if inner.strip() else []
    # Inside !llvm.func<...> the pointer type prints without its dialect prefix.
    return ["!llvm.ptr" if t == "ptr" else t for t in types]


def _launcher_text(core: str, types: list[str], threads: int) -> str:
    """LLVM-dialect worker and launcher for ``core`` (its operands are ``types``)."""
    launcher = launcher_name(core, threads)
    operand_count = len(types)
    slot_types = [*types, "i64", "i64"]  # operands, begin, end
    slots = len(slot_types)
    params = ", ".join(f"%a{i}: {t}" for i, t in enumerate(types))
    core_types = ", ".join(slot_types)
    args = ", ".join(f"%a{i}" for i in range(operand_count))
    lines = [
        f"llvm.func @{WORKER_PREFIX}{core}(%ctx: !llvm.ptr) -> !llvm.ptr {{",
    ]
    for i, slot_type in enumerate(slot_types):
        lines.append(f"  %p{i} = llvm.getelementptr %ctx[{i}] : (!llvm.ptr) -> !llvm.ptr, i64")
        lines.append(f"  %v{i} = llvm.load %p{i} : !llvm.ptr -> {slot_type}")
    values = ", ".join(f"%v{i}" for i in range(slots))
    lines += [
        f"  llvm.call @{core}({values}) : ({core_types}) -> ()",
        "  %null = llvm.mlir.zero : !llvm.ptr",
        "  llvm.return %null : !llvm.ptr",
        "}",
        f"llvm.func @{launcher}({params}, %n: i64, %align: i64) {{",
        "  %null = llvm.mlir.zero : !llvm.ptr",
        "  %zero = llvm.mlir.constant(0 : i64) : i64",
        "  %one = llvm.mlir.constant(1 : i64) : i64",
        f"  %parts = llvm.mlir.constant({threads} : i64) : i64",
        f"  %slots = llvm.mlir.constant({slots} : i64) : i64",
        f"  %worker = llvm.mlir.addressof @{WORKER_PREFIX}{core} : !llvm.ptr",
        # Split point t: floor(n·t / parts) rounded down to a multiple of align; the last
        # range ends at n.
        "  %blocks = llvm.udiv %n, %align : i64",
    ]
    bounds = ["%zero"]
    for t in range(1, threads):
        lines += [
            f"  %c{t} = llvm.mlir.constant({t} : i64) : i64",
            f"  %m{t} = llvm.mul %blocks, %c{t} : i64",
            f"  %q{t} = llvm.udiv %m{t}, %parts : i64",
            f"  %b{t} = llvm.mul %q{t}, %align : i64",
        ]
        bounds.append(f"%b{t}")
    bounds.append("%n")
    for t in range(1, threads):
        lines += [
            f"  %ctx{t} = llvm.alloca %slots x i64 : (i64) -> !llvm.ptr",
            f"  %tid{t} = llvm.alloca %one x i64 : (i64) -> !llvm.ptr",
        ]
        stored = [*(f"%a{i}" for i in range(operand_count)), bounds[t], bounds[t + 1]]
        for i, (value, ty) in enumerate(zip(stored, slot_types, strict=True)):
            lines += [
                f"  %s{t}_{i} = llvm.getelementptr %ctx{t}[{i}] : (!llvm.ptr) -> !llvm.ptr, i64",
                f"  llvm.store {value}, %s{t}_{i} : {ty}, !llvm.ptr",
            ]
        lines.append(
            f"  %rc{t} = llvm.call @pthread_create(%tid{t}, %null, %worker, %ctx{t}) : "
            f"(!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr) -> i32"
        )
    lines.append(f"  llvm.call @{core}({args}, %zero, {bounds[1]}) : ({core_types}) -> ()")
    for t in range(1, threads):
        lines += [
            f'  %ok{t} = llvm.icmp "eq" %rc{t}, %izero{t} : i32',
            f"  llvm.cond_br %ok{t}, ^join{t}, ^inline{t}",
            f"^join{t}:",
            f"  %h{t} = llvm.load %tid{t} : !llvm.ptr -> i64",
            f"  %j{t} = llvm.call @pthread_join(%h{t}, %null) : (i64, !llvm.ptr) -> i32",
            f"  llvm.br ^next{t}",
            f"^inline{t}:",
            f"  llvm.call @{core}({args}, {bounds[t]}, {bounds[t + 1]}) : ({core_types}) -> ()",
            f"  llvm.br ^next{t}",
            f"^next{t}:",
        ]
    lines += ["  llvm.return", "}"]
    # Constants used in later blocks are defined in the entry block (they dominate all).
    izeros = [f"  %izero{t} = llvm.mlir.constant(0 : i32) : i32" for t in range(1, threads)]
    entry = lines.index(f"llvm.func @{launcher}({params}, %n: i64, %align: i64) {{")
    lines[entry + 1 : entry + 1] = izeros
    declarations = [
        f"llvm.func @{core}({core_types})",
        "llvm.func @pthread_create(!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr) -> i32",
        "llvm.func @pthread_join(i64, !llvm.ptr) -> i32",
    ]
    return "\n".join([*declarations, *lines]) + "\n"


def define_launchers(module: ir.Module) -> None:
    """Gives every launcher declaration (see the module docstring) its body."""
    body = module.body
    for view in list(body.operations):
        op = view.operation
        if op.name != "llvm.func" or len(op.regions[0].blocks) != 0:
            continue
        name = ir.StringAttr(op.attributes["sym_name"]).value
        parsed = _parse_launcher(name)
        if parsed is None:
            continue
        core, threads = parsed
        types = _param_types(op)[:-2]
        op.erase()
        ensure_function(module.operation, name, _launcher_text(core, types, threads))
