"""Tunes the sm_90a GEMMs per shape: the prefill's wgmma GEMM (tile and pipeline depth) and the
batch-1 decode GEMV (columns and warps a block, unroll, K split across warps); times each
candidate on the GPU and writes the tuning table the compiler reads (``lowering/cuda/tuning.py``).

    python bench/tune.py --build build/tune             # here: MLIR -> one cubin + cases.json
    python3 bench/tune.py build/tune --out $OUT          # on the GPU: check, time, choose
    python3 bench/tune.py build/tune --out DIR --install # and use it for this user's compiles

The shapes are the GEMMs of the Gemma models in ``MODELS`` (bf16, w [N, K]: the q/k/v/o
projections, the MLP's gated gate/up pair and down projection, the LM head). Every
candidate is first checked against a float64 reference on fresh seeded inputs with its
output poisoned (a candidate that fails is never chosen), then timed at M = 2048 (the
wgmma GEMM) or M = 1 (the GEMV) as a CUDA graph over rotating input sets larger than L2 (a
decode step reads its weights from memory); the fastest becomes the shape's entry. A
progress bar shows where the run is. ``--out`` receives ``sm_90a.json`` (the table: copy it
to ``lowering/cuda/tuning/`` to ship it) and ``tune.json`` (the benchmark format: per shape
the chosen candidate with the others and cuBLAS, all from the same run, as peers).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

_GPU_TESTS = Path(__file__).resolve().parents[1] / "test" / "gpu"
if str(_GPU_TESTS) not in sys.path:
    sys.path.insert(0, str(_GPU_TESTS))

import check_support as support  # noqa: E402
import torch  # noqa: E402

ARCH = "sm_90a"
M = 2048
L2_BYTES = 50 * 2**20
REFERENCE_ROWS = 64
# (hidden, MLP width, q heads x head dim, kv heads x head dim, vocabulary) of each model.
MODELS = {
    "gemma-2b": (2048, 16384, 2048, 256, 256000),
    "gemma3-1b": (1152, 6912, 1024, 256, 262144),
    "gemma2-2b": (2304, 9216, 2048, 1024, 256000),
    "gemma-7b": (3072, 24576, 4096, 4096, 256000),
}
# (block_m, block_n, stages, consumer warpgroups): 1 is the single-warpgroup kernel, 2 the
# warp-specialized one (a producer warpgroup and two consumers). The 144-wide and 64x64 tiles
# fill the card's 132 SMs where the usual ones leave a last wave mostly idle: N = 1152 makes
# 16 x 8 = 128 tiles of 128 x 144 at M = 2048 (128 x 128 tiles: 144, a wave and 12 blocks),
# N = 2304 256 of them or 128 of 256 x 144, N = 256 128 tiles of 64 x 64.
PLAIN = (
    (128, 128, 2, 1),
    (128, 128, 3, 1),
    (128, 128, 4, 1),
    (64, 256, 3, 1),
    (128, 64, 3, 1),
    (128, 256, 3, 2),
    (128, 256, 4, 2),
    (256, 128, 4, 2),
    (128, 144, 4, 1),
    (128, 144, 4, 2),
    (256, 144, 3, 2),
    (64, 64, 4, 1),
)
GATED = (
    (128, 64, 3, 1),
    (128, 64, 4, 1),
    (64, 128, 3, 1),
    (64, 128, 4, 1),
    (128, 128, 4, 2),
    (256, 64, 4, 2),
)


# GEMV tiles at one row of x: (cols, warps, unroll, splits), splits warps sharing a
# column's K. The plain GEMV's default is one column a warp, two warps unrolled 8 deep; the
# gated pair's four warps unrolled 4 deep.
GEMV_PLAIN = (
    (1, 2, 8, 1),
    (1, 4, 4, 1),
    (2, 4, 4, 1),
    (1, 8, 8, 1),
    (1, 4, 4, 2),
    (1, 4, 8, 2),
    (1, 8, 4, 4),
    (1, 8, 8, 4),
    (1, 8, 8, 8),
)
GEMV_GATED = (
    (1, 4, 4, 1),
    (2, 4, 4, 1),
    (1, 8, 4, 1),
    (1, 4, 4, 2),
    (1, 8, 4, 2),
    (1, 8, 4, 4),
)
GEMV_ROWS = 1
# Rotating input sets of the timing: enough to leave L2 behind, at least 2, at most this.
MAX_SETS = 256


def shapes() -> list[tuple[int, int, bool]]:
    """(N, K, gated) of every distinct prefill GEMM of ``MODELS``."""
    found: set[tuple[int, int, bool]] = set()
    for hidden, width, q, kv, vocab in MODELS.values():
        found |= {(q, hidden, False), (kv, hidden, False), (hidden, q, False)}
        found |= {(width, hidden, True), (hidden, width, False), (vocab, hidden, False)}
    return sorted(found)


def build(folder: Path) -> None:
    from mlir import ir

    from tessera.context import make_context
    from tessera.lowering.cuda.kernel import KernelModule
    from tessera.lowering.cuda.kernels.gemm import GemmConfig, GemvTile, build_gemm
    from tessera.lowering.cuda.kernels.gemm_wgmma import WgmmaConfig, build_wgmma_gemm
    from tessera.lowering.cuda.tuning import gemv_key, wgmma_key

    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    with make_context(), ir.Location.unknown():
        km = KernelModule(ARCH)
        for n, k, gated in shapes():
            for block_m, block_n, stages, consumers in GATED if gated else PLAIN:
                cfg = WgmmaConfig(
                    "bf16", n, k, block_m, block_n, stages, gated=gated, consumers=consumers
                )
                info = build_wgmma_gemm(km, cfg)
                cases.append(
                    {
                        "key": wgmma_key("bf16", n, k, gated),
                        "family": "wgmma",
                        "N": n,
                        "K": k,
                        "rows": M,
                        "gated": gated,
                        "tile": {
                            "block_m": block_m,
                            "block_n": block_n,
                            "stages": stages,
                            "consumers": consumers,
                        },
                        "info": support.info_json(info),
                    }
                )
        for n, k, gated in shapes():
            for cols, warps, unroll, splits in GEMV_GATED if gated else GEMV_PLAIN:
                tile = GemvTile(GEMV_ROWS, cols, warps, unroll, splits)
                gemv = GemmConfig("bf16", n, k, gated=gated, kernel="gemv", gemv=tile)
                cases.append(
                    {
                        "key": gemv_key("bf16", n, k, gated, GEMV_ROWS),
                        "family": "gemv",
                        "N": n,
                        "K": k,
                        "rows": GEMV_ROWS,
                        "gated": gated,
                        "tile": {"cols": cols, "warps": warps, "unroll": unroll, "splits": splits},
                        "info": support.info_json(build_gemm(km, gemv)),
                    }
                )
        report = support.emit_binaries(
            km.module,
            ARCH,
            folder / f"tune_{ARCH}.ptx",
            folder / f"ptxas_{ARCH}.txt",
            cubin_file=folder / f"tune_{ARCH}.cubin",
        )
    support.write_cases(folder, cases, report)


def progress(done: int, total: int, what: str) -> None:
    width = 30
    filled = width * done // total
    print(f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what}", flush=True)


class Tuner:
    def __init__(self, folder: Path) -> None:
        self.cases = json.loads((folder / "cases.json").read_text())["cases"]
        self.module = support.load_module(folder / f"tune_{ARCH}.cubin", "tune")
        self.generator = support.generator(20261207)

    def inputs(self, case: dict[str, Any]) -> dict[str, Any]:
        n, k = case["N"], case["K"]
        rows = case["rows"] if support.on_gpu() else min(case["rows"], 16)
        if not support.on_gpu():  # the dry run's stand-ins need no full LM head
            n = min(n, 4096)
        b: dict[str, Any] = {"x": support.randn(self.generator, (rows, k), "bf16"), "M": rows}
        scale = 1.0 / math.sqrt(k)
        b["w"] = support.randn(self.generator, (n, k), "bf16", scale)
        if case["gated"]:
            b["w2"] = support.randn(self.generator, (n, k), "bf16", scale)
        b["y"] = support.poisoned((rows, n), "bf16")
        tile = case["tile"]
        if case["family"] == "wgmma":
            maps = support.gemm_tensor_maps(b, tile["block_m"], tile["block_n"], case["gated"])
            b.update(maps)
        return b

    def reference(self, case: dict[str, Any], b: dict[str, Any]) -> torch.Tensor:
        x = b["x"][:REFERENCE_ROWS].double()
        y = x @ b["w"].double().t()
        if case["gated"]:
            up = x @ b["w2"].double().t()
            y = torch.nn.functional.gelu(y, approximate="tanh") * up
        return y

    def launch(self, case: dict[str, Any], b: dict[str, Any]) -> support.KernelLaunch:
        def stand_in() -> None:
            x = b["x"].float()
            y = x @ b["w"].float().t()
            if case["gated"]:
                y = torch.nn.functional.gelu(y, approximate="tanh") * (x @ b["w2"].float().t())
            b["y"].copy_(y.to(b["y"].dtype))

        return support.KernelLaunch(self.module, case["info"], b, stand_in)

    def measure(self, case: dict[str, Any]) -> dict[str, Any]:
        """The candidate's check, then its time (None when the check fails)."""
        b = self.inputs(case)
        self.launch(case, b)()
        support.synchronize()
        k = case["K"]
        bound = 2 * 2.0**-8 + 4 * math.sqrt(k) * 2.0**-24
        verdict = support.compare(b["y"][:REFERENCE_ROWS], self.reference(case, b), bound, b["y"])
        row = {"key": case["key"], **case["tile"], **verdict}
        if not verdict["ok"]:
            row["ms"] = None
            return row
        per_set = (case["N"] * k * (2 if case["gated"] else 1) + case["rows"] * k) * 2
        most = 8 if case["family"] == "wgmma" else MAX_SETS
        sets = max(2, min(most, math.ceil(4 * L2_BYTES / per_set)))
        bindings = [b] + [self.inputs(case) for _ in range(sets - 1)]
        launches = [self.launch(case, s) for s in bindings]

        def run() -> None:
            for launch in launches:
                launch()

        row["ms"] = support.median_ms(run, len(launches), replays=10)
        return row

    def peer_ms(self, case: dict[str, Any]) -> float:
        """cuBLAS (and torch's epilogue, gated) on the shape, in the same run."""
        b = self.inputs(case)
        F = torch.nn.functional

        def run() -> None:
            y = F.linear(b["x"], b["w"])
            if case["gated"]:
                y = F.gelu(y, approximate="tanh") * F.linear(b["x"], b["w2"])

        return support.median_ms(run, 1, replays=10)


def tile_name(tile: dict[str, Any]) -> str:
    """e.g. ``256x144 s3 c2`` (wgmma: block, stages, consumer warpgroups) or ``c1w8u8k4``
    (gemv: columns a warp, warps, unroll, K splits)."""
    if "cols" in tile:
        return f"c{tile['cols']}w{tile['warps']}u{tile['unroll']}k{tile['splits']}"
    return f"{tile['block_m']}x{tile['block_n']} s{tile['stages']} c{tile.get('consumers', 1)}"


def _tuning_module() -> Any:
    """``lowering/cuda/tuning.py`` loaded by path: the GPU machine has no MLIR, which the
    ``tessera.lowering`` package imports, and the table's format lives in that one file."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "lowering" / "cuda" / "tuning.py"
    spec = importlib.util.spec_from_file_location("tessera_tuning_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def tune(args: argparse.Namespace) -> int:
    tuning = _tuning_module()
    tuner = Tuner(args.folder)
    rows: list[dict[str, Any]] = []
    for done, case in enumerate(tuner.cases, start=1):
        tile = case["tile"]
        progress(done - 1, len(tuner.cases), f"{case['key']} {tile_name(tile)}")
        try:
            rows.append(tuner.measure(case))
        except Exception as error:  # a candidate that cannot run is never chosen
            rows.append({"key": case["key"], **tile, "ok": False, "error": str(error)})
    progress(len(tuner.cases), len(tuner.cases), "done")
    entries: dict[str, dict[str, int]] = {}
    bench = []
    for key in dict.fromkeys(case["key"] for case in tuner.cases):
        timed = [r for r in rows if r["key"] == key and r.get("ms") is not None]
        if not timed:
            print(f"{key}: no candidate passed its check; the compiler keeps its default")
            continue
        best = min(timed, key=lambda r: r["ms"])
        case = next(c for c in tuner.cases if c["key"] == key)
        # The wgmma entry's consumer count too: an entry without it is a single-warpgroup tile.
        entries[key] = {p: best[p] for p in case["tile"]}
        flops = 2 * case["rows"] * case["N"] * case["K"] * (2 if case["gated"] else 1)
        peers = [
            {"name": f"candidate {tile_name(r)}", "ms": r["ms"]} for r in timed if r is not best
        ]
        peers.append({"name": "torch F.linear (cuBLAS)", "ms": tuner.peer_ms(case)})
        label = f"{key} M{case['rows']} chosen {tile_name(best)}"
        # bytes a GEMV must move: its weights (x and y are a row each)
        moved = case["N"] * case["K"] * 2 * (2 if case["gated"] else 1)
        bench.append(
            support.bench_row(
                "tune",
                label,
                best["ms"],
                best["rel_error"],
                peers,
                flops=flops,
                moved=moved if case["family"] == "gemv" else None,
            )
        )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        date = datetime.date.today().isoformat()
        table = tuning.table_json(ARCH, support.card(), date, args.commit, entries)
        (args.out / f"{ARCH}.json").write_text(table)
        support.write_results(args.out, "tune", bench, rows, args.commit)
        if args.install:
            target = tuning.user_table(ARCH)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.out / f"{ARCH}.json", target)
            print(f"installed {target}")
    return support.summarize([r for r in rows if r.get("ms") is not None or "error" in r], bench)


def main() -> int:
    install = {"action": "store_true", "help": "use the table for this user's compiles"}
    return support.main(__doc__, build, tune, {"--install": install})


if __name__ == "__main__":
    sys.exit(main())
