"""What the GPU check scripts (check_gemm.py, check_attention.py, check_small_kernels.py,
check_greedy_head.py) share.

Each script compiles its kernels here (``--build``, with MLIR) and checks and times them on a GPU
machine that has torch and the runtime but no MLIR. The parts that are the same for every
kernel family live here, once:

- the device: CUDA, or the CPU for ``--dry-run`` (the script's own logic, with a torch stand-in
  for each kernel), and the card's name;
- ``KernelLaunch``: a kernel from a ``KernelInfo`` JSON bound once to its arguments by
  parameter name, launched through ``tessera.runtime.cuda_driver``;
- ``poison`` / ``compare``: outputs filled with a value no kernel writes before each launch, then
  checked for unwritten elements and compared with a float64 reference (‖out−ref‖/‖ref‖);
- ``median_ms``: CUDA-event timing, median of many replays (of a CUDA graph by default), per
  kernel call when one timed call makes several (rotating input sets);
- ``bench_row`` / ``write_results`` / ``summarize``: the project's benchmark format (device,
  date, commit, rows with the peers measured in the same run), the per-case detail next to it,
  and the summary table printed last;
- the command line every script takes (folder, --build, --quick, --out, --dry-run, --commit).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # the GPU machine has no MLIR: the kernel types are for the type checker only
    from tessera.lowering.cuda.kernel import KernelInfo

DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "f16": torch.float16,
    "f32": torch.float32,
    "i32": torch.int32,
    "i64": torch.int64,
    "i1": torch.bool,
}

# A byte pattern no kernel writes for a non-float output (floats are poisoned with NaN).
POISON_BYTE = 0xAA

_device = "cuda"


# ---------------------------------------------------------------------------------------------
# The device


def use_cpu() -> None:
    """Switches to the dry run: tensors on the CPU, each kernel replaced by its stand-in."""
    global _device
    _device = "cpu"


def device() -> str:
    """``"cuda"``, or ``"cpu"`` in a dry run (a function, so that it is read after ``use_cpu``)."""
    return _device


def on_gpu() -> bool:
    return _device == "cuda"


def card() -> str:
    """The name every figure is recorded with."""
    return torch.cuda.get_device_name() if on_gpu() else "cpu (dry run)"


def synchronize() -> None:
    if on_gpu():
        torch.cuda.synchronize()


def generator(seed: int) -> torch.Generator:
    gen = torch.Generator(device=_device)
    gen.manual_seed(seed)
    return gen


def randn(
    gen: torch.Generator, shape: Sequence[int], dtype: str, scale: float = 1.0
) -> torch.Tensor:
    """Seeded normal values times ``scale``, drawn in f32 and rounded once to ``dtype`` (so a
    float64 reference computed from the result sees exactly the kernel's inputs)."""
    values = torch.randn(tuple(shape), generator=gen, device=_device, dtype=torch.float32)
    return (values * scale).to(DTYPES[dtype])


# ---------------------------------------------------------------------------------------------
# Building (here, with MLIR) and launching (there, without)


def info_json(info: KernelInfo) -> dict[str, Any]:
    """A ``KernelInfo`` as the JSON the check step reads (the manifest's launch fields)."""
    return {
        "name": info.name,
        "params": [{"name": p.name, "kind": p.kind, "dtype": p.dtype} for p in info.params],
        "grid": list(info.grid),
        "block": list(info.block),
        "smem_bytes": info.smem_bytes,
    }


def emit_binaries(
    module: Any, arch: str, ptx_file: Path, report_file: Path, cubin_file: Path | None = None
) -> str:
    """Lowers a ``KernelModule``'s module to PTX and writes it, the ptxas resource report and,
    if asked, the cubin; returns the report. Call inside the module's MLIR context."""
    from tessera.lowering.cuda import toolchain

    toolchain.to_nvvm(module)
    ptx = toolchain.to_ptx(module)
    ptx_file.write_text(ptx)
    if cubin_file is not None:
        cubin_file.write_bytes(toolchain.assemble(ptx, arch))
    report = toolchain.resource_usage(ptx, arch)
    report_file.write_text(report)
    return report


def write_cases(folder: Path, cases: list[dict[str, Any]], report: str) -> None:
    """Writes ``cases.json`` and says how many lines of the ptxas ``report`` name spills."""
    (folder / "cases.json").write_text(json.dumps({"cases": cases}, indent=1))
    spills = [
        line for line in report.splitlines() if "spill" in line and " 0 bytes spill" not in line
    ]
    print(f"built {len(cases)} cases into {folder}; lines reporting spills: {len(spills)}")


def load_module(image: Path, name: str) -> Any:
    """The cubin (or PTX) loaded through the runtime's driver; None in a dry run."""
    if not on_gpu():
        return None
    from tessera.runtime.cuda_driver import CudaModule

    return CudaModule(image.read_bytes(), name)


class KernelLaunch:
    """One kernel launch bound once to its arguments: ``info`` is a ``KernelInfo`` as JSON
    (name, params, grid, block, smem_bytes), ``bindings`` gives every parameter by name (a
    contiguous tensor per buffer, an int or float per scalar); the grid expressions are
    evaluated over the integer bindings. Calling it launches on torch's current stream (so it
    can be captured in a CUDA graph). The arguments are packed once, so a timed call costs one
    driver call; the tensors must outlive the launch.

    In a dry run the bindings and grid are still checked, and ``stand_in`` (torch code writing
    the same outputs) runs instead of the kernel."""

    def __init__(
        self,
        module: Any,
        info: Mapping[str, Any],
        bindings: Mapping[str, Any],
        stand_in: Callable[[], None] | None = None,
    ) -> None:
        from tessera.runtime import expr

        params = info["params"]
        missing = [p["name"] for p in params if p["name"] not in bindings]
        if missing:
            raise KeyError(f"kernel {info['name']}: no value for {', '.join(missing)}")
        scalars = {k: int(v) for k, v in bindings.items() if isinstance(v, int)}
        self.name = str(info["name"])
        self.grid = [expr.evaluate(g, scalars) for g in info["grid"]]
        self.block = [int(b) for b in info["block"]]
        self.smem = int(info.get("smem_bytes", 0))
        self.stand_in = stand_in
        self.kernel: Any = None
        self.packer: Any = None
        if on_gpu():
            from tessera.runtime.cuda_driver import ParamPacker

            self.packer = ParamPacker(params)
            self.packer.fill([bindings[p["name"]] for p in params], [p["name"] for p in params])
            self.kernel = module.function(self.name)
        elif stand_in is None:
            raise ValueError(f"kernel {self.name}: a dry run needs a stand-in")

    def __call__(self) -> None:
        if self.kernel is None:
            assert self.stand_in is not None
            self.stand_in()
            return
        self.kernel.launch_packed(self.grid, self.block, self.smem, self.packer)


# ---------------------------------------------------------------------------------------------
# Correctness


def gemm_tensor_maps(
    b: Mapping[str, Any], block_m: int, block_n: int, gated: bool
) -> dict[str, torch.Tensor]:
    """The wgmma GEMM's TMA maps of ``b``'s x, w (and w2, gated) in boxes of [block_m, 64]
    and [block_n, 64] (placeholders in a dry run, where the kernel does not run)."""
    sources = {"x_map": ("x", block_m), "w_map": ("w", block_n)}
    if gated:
        sources["w2_map"] = ("w2", block_n)
    if not on_gpu():
        return {name: torch.zeros(16, dtype=torch.int64) for name in sources}
    from tessera.runtime.tensor_map import tiled

    return {name: tiled(b[key], rows, 64) for name, (key, rows) in sources.items()}


def poison(tensor: torch.Tensor) -> torch.Tensor:
    """Fills ``tensor`` with NaN (floats) or POISON_BYTE (anything else), so an element the
    kernel does not write shows; returns it."""
    if tensor.is_floating_point():
        tensor.fill_(math.nan)
    else:
        tensor.view(torch.uint8).fill_(POISON_BYTE)
    return tensor


def poisoned(shape: Sequence[int], dtype: str) -> torch.Tensor:
    """A new poisoned tensor."""
    return poison(torch.empty(tuple(shape), dtype=DTYPES[dtype], device=_device))


def unwritten(tensor: torch.Tensor) -> int:
    """How many elements still hold the poison."""
    if tensor.is_floating_point():
        return int(torch.isnan(tensor).sum())
    as_bytes = tensor.contiguous().view(torch.uint8).reshape(tensor.numel(), -1)
    return int((as_bytes == POISON_BYTE).all(dim=1).sum())


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖/‖ref‖ in float64 over the elements where ``ref`` is finite (‖ref‖ taken as 1
    when it is 0); infinite reference elements must match exactly, and a NaN in ``out`` where
    the reference is finite makes the error infinite."""
    out64, ref64 = out.double().reshape(-1), ref.double().reshape(-1)
    finite = torch.isfinite(ref64)
    if not bool((out64[~finite] == ref64[~finite]).all()):
        return math.inf
    out64, ref64 = out64[finite], ref64[finite]
    if bool(torch.isnan(out64).any()):
        return math.inf
    norm = float(ref64.norm())
    return float((out64 - ref64).norm()) / (norm if norm else 1.0)


def compare(
    out: torch.Tensor, ref: torch.Tensor, bound: float, whole: torch.Tensor | None = None
) -> dict[str, Any]:
    """The verdict on one output: ``unwritten`` elements (of ``whole``, the full output, when
    ``out`` is a part of it such as a subset of rows), ``rel_error`` against the float64
    ``ref``, the ``bound`` it is held to, and ``ok`` (every element written, error in bound)."""
    missing = unwritten(out if whole is None else whole)
    error = relative_error(out, ref)
    return {
        "unwritten": missing,
        "rel_error": error,
        "bound": bound,
        "ok": missing == 0 and error <= bound,
    }


def guarded(rows: list[dict[str, Any]], case: str, check: Callable[[], None]) -> None:
    """Runs one case's check; an exception becomes a failed row, so every case is reported."""
    try:
        check()
    except Exception as error:
        row = {"case": case, "ok": False, "error": f"{type(error).__name__}: {error}"}
        rows.append(row)
        print(json.dumps(row), flush=True)


# ---------------------------------------------------------------------------------------------
# Timing


def median_ms(
    fn: Callable[[], Any], calls: int = 1, replays: int = 20, graph: bool = True
) -> float:
    """Median milliseconds per kernel call of ``fn()``, which makes ``calls`` of them (one per
    input set when the sets rotate so that L2 holds none of them), timed with CUDA events
    after a warm-up. With ``graph`` the call is captured once in a CUDA graph and the graph
    replayed, so launch overhead is not counted; peers that cannot be captured (compiled or
    autotuned callables) are timed call by call with ``graph=False``. A dry run calls ``fn``
    once and returns a placeholder."""
    if not on_gpu():
        fn()
        return 1000.0 / calls
    fn()
    torch.cuda.synchronize()
    run = fn
    if graph:
        captured = torch.cuda.CUDAGraph()
        with torch.cuda.graph(captured):
            fn()
        run = captured.replay
    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times) / calls


_copy_rate: float | None = None


def copy_rate() -> float:
    """Bytes moved (read plus written) per second by a device-to-device copy of 1 GiB (64
    MiB on the CPU), as a CUDA graph: measured once per run, before the first timing that
    states a bandwidth bound."""
    global _copy_rate
    if _copy_rate is None:
        size = 1 << (30 if on_gpu() else 26)
        source = torch.empty(size, dtype=torch.uint8, device=_device)
        target = torch.empty_like(source)
        ms = median_ms(lambda: target.copy_(source), replays=20)
        _copy_rate = 2 * size / (ms * 1e-3)
        del source, target
    return _copy_rate


# ---------------------------------------------------------------------------------------------
# Results


def bench_row(
    bench: str,
    case: str,
    tessera_ms: float,
    rel_error: float,
    peers: Sequence[Mapping[str, Any]],
    flops: float | None = None,
    moved: float | None = None,
) -> dict[str, Any]:
    """A row of the benchmark format. ``peers``: ``{"name", "ms", ...}`` each, measured in the
    same run; ``flops`` and ``moved`` (bytes) give every entry its TFLOP/s and GB/s."""

    def rates(ms: float, prefix: str) -> dict[str, float]:
        figures = {}
        if flops is not None:
            figures[f"{prefix}tflops"] = _figure(flops / ms / 1e9)
        if moved is not None:
            figures[f"{prefix}gbps"] = _figure(moved / ms / 1e6)
        return figures

    row: dict[str, Any] = {"bench": bench, "case": case, "tessera_ms": _figure(tessera_ms)}
    row.update(rates(tessera_ms, "tessera_"))
    row["rel_error"] = rel_error
    row["peers"] = [{**peer, "ms": _figure(peer["ms"]), **rates(peer["ms"], "")} for peer in peers]
    return row


def _figure(value: float) -> float:
    """Four significant digits: more than CUDA-event timing resolves, at any kernel size."""
    return float(f"{value:.4g}")


def _strict(value: Any) -> Any:
    """JSON has no NaN or infinity: a non-finite figure (a failed check) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


def write_results(
    out: Path | None,
    name: str,
    rows: list[dict[str, Any]],
    detail: list[dict[str, Any]],
    commit: str,
) -> None:
    """Writes ``<name>.json`` in the benchmark format (device, date, commit, rows) and
    ``<name>_cases.json`` (every case's detail, correctness-only ones too) under ``out``."""
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    head = {"device": card(), "date": datetime.date.today().isoformat(), "commit": commit}
    for file, body in ((f"{name}.json", rows), (f"{name}_cases.json", detail)):
        text = json.dumps(_strict({**head, "rows": body}), indent=1)
        (out / file).write_text(text + "\n")


_UNITS = (("tflops", "TF/s"), ("gbps", "GB/s"))


def summarize(detail: list[dict[str, Any]], rows: list[dict[str, Any]]) -> int:
    """Prints the verdict, each failure and the benchmark table; returns the exit status."""
    name = card()
    failed = [r for r in detail if not r.get("ok")]
    print(f"\n{name}: {len(detail) - len(failed)}/{len(detail)} ok")
    for r in failed:
        print("FAILED", json.dumps(r))
    if rows:
        print(
            f"{'bench':11} {'case':52} {'ms':>9} {'TF/s':>6} {'GB/s':>6} {'rel_err':>8}"
            "  peers: ms, TF/s or GB/s, peer time / tessera time"
        )
    for r in rows:
        peers = []
        for p in r["peers"]:
            rates = "".join(f" {p[k]:.0f} {unit}" for k, unit in _UNITS if k in p)
            peers.append(f"{p['name']} {p['ms']:.4f} ms{rates} x{p['ms'] / r['tessera_ms']:.2f}")
        tf = f"{r['tessera_tflops']:6.0f}" if "tessera_tflops" in r else " " * 6
        gb = f"{r['tessera_gbps']:6.0f}" if "tessera_gbps" in r else " " * 6
        print(
            f"{r['bench']:11} {r['case']:52} {r['tessera_ms']:9.4f} {tf} {gb} "
            f"{r['rel_error']:8.1e}  {'; '.join(peers)}"
        )
    print(f"card: {name}")
    return 1 if failed else 0


def run_cases(
    checker: Any, args: argparse.Namespace, name: str, skip: Callable[[Any], bool]
) -> int:
    """Runs ``checker.run(case, quick)`` for every case of ``checker.cases`` that ``--only``
    selects and ``skip`` keeps, each guarded; writes ``<name>.json`` and its detail under
    ``--out`` and returns the exit status (``summarize``)."""
    for case in checker.cases:
        if args.only and args.only not in case["id"]:
            continue
        if skip(case):
            continue
        guarded(checker.rows, case["id"], lambda case=case: checker.run(case, args.quick))
    write_results(args.out, name, checker.bench, checker.rows, args.commit)
    return summarize(checker.rows, checker.bench)


# ``--only``: the option of the scripts whose cases have ids.
ONLY = {"--only": {"default": None, "help": "run the cases whose id contains this"}}


# ---------------------------------------------------------------------------------------------
# Command line


def main(
    doc: str,
    build: Callable[[Path], None],
    check: Callable[[argparse.Namespace], int],
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> int:
    """The command line every check script takes: folder, --build, --quick, --out, --dry-run,
    --commit, and the script's own ``options`` (flag → ``add_argument`` keywords). ``--build``
    compiles into the folder (here, with MLIR); otherwise ``check`` runs over it, on the CPU
    for ``--dry-run``. Returns the exit status."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--build", action="store_true", help="compile the cases (needs MLIR)")
    parser.add_argument("--quick", action="store_true", help="small cases only, no timing")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON results")
    parser.add_argument("--dry-run", action="store_true", help="this script's logic, on the CPU")
    parser.add_argument("--commit", default="unknown", help="the commit the build came from")
    for flag, keywords in (options or {}).items():
        parser.add_argument(flag, **keywords)
    args = parser.parse_args()
    if args.build:
        build(args.folder)
        return 0
    if args.dry_run:
        use_cpu()
    print(f"card: {card()}; torch {torch.__version__}", flush=True)
    return check(args)
