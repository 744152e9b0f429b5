"""Checks and times the memory-bound CUDA kernels (RMSNorm, RoPE, the decode step's fused
attention prologue, lookup, elementwise).

    python test/gpu/check_small_kernels.py --build build/small   # here: MLIR → cubin + JSON
    python3 test/gpu/check_small_kernels.py build/small          # on the GPU machine
    python3 test/gpu/check_small_kernels.py build/small --quick  # small cases only (sanitizer)

The build step compiles every case's kernel into one sm_90a cubin and one sm_80 PTX module
(the driver compiles the PTX for the GPU at hand, which checks the sm_80 code path too) and
writes ``cases.json``: per case, the kernel's ``KernelInfo`` and what the check needs. The check
step needs no MLIR: it draws fresh seeded inputs, poisons outputs with NaN, launches through
``tessera.runtime.cuda_driver`` and compares with a float64 reference (relative error) and with
the same-dtype torch computation (how many elements are bit-identical). Timed cases run as CUDA
graphs over rotating buffer sets larger than L2, against a device-to-device copy of the same
bytes (torch clone) and the torch peer measured in the same run. ``--out`` receives
``small_kernels.json`` (the benchmark format: device, date, ``--commit``, a row per timed case)
and ``small_kernels_cases.json`` (every case's detail); ``--dry-run`` runs the flow on the CPU
with the torch peer standing in for each kernel. The shared machinery is in
``check_support.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import check_support as support
import torch
from check_support import DTYPES

# Cases: kind, static config, run-time sizes; "time" marks the Gemma-sized ones.
EPS = 1e-6
RMS_CASES: list[dict[str, Any]] = [
    *[
        {"dtype": dt, "width": d, "rows": 37, "residual": res}
        for dt in ("bf16", "f16", "f32")
        for d in (36, 48, 64)
        for res in (False, True)
    ],
    *[{"dtype": "bf16", "width": d, "rows": 67, "residual": False} for d in (2304, 3072)],
    {"dtype": "f32", "width": 2304, "rows": 67, "residual": True},
    {"dtype": "bf16", "width": 64, "rows": 37, "residual": False, "w_dtype": "f32"},
    {"dtype": "bf16", "width": 2304, "rows": 67, "residual": True, "alias": True},
    {"dtype": "bf16", "width": 2048, "rows": 2048, "residual": False, "time": True},
    {"dtype": "bf16", "width": 2048, "rows": 2048, "residual": True, "time": True},
    {"dtype": "f32", "width": 2048, "rows": 2048, "residual": False, "time": True},
]
ROPE_CASES: list[dict[str, Any]] = [
    {"dtype": "bf16", "heads": 8, "head_dim": 256, "B": 1, "S": 2048, "time": True},
    {"dtype": "bf16", "heads": 1, "head_dim": 256, "B": 1, "S": 2048, "time": True},
    {"dtype": "f32", "heads": 8, "head_dim": 256, "B": 2, "S": 67},
    {"dtype": "bf16", "heads": 4, "head_dim": 32, "B": 2, "S": 37, "alias": True},
    {"dtype": "f16", "heads": 2, "head_dim": 16, "B": 3, "S": 37, "pos_dtype": "i32"},
    {"dtype": "f32", "heads": 3, "head_dim": 24, "B": 2, "S": 37, "rotary_dim": 16},
    {"dtype": "bf16", "heads": 6, "head_dim": 24, "B": 1, "S": 37, "scaling": 8.0},
    {"dtype": "bf16", "heads": 4, "head_dim": 256, "B": 1, "S": 1, "theta": 1e6},
]
# The decode step's attention prologue (rope_append.py): q/k norm (Gemma 3), rope, append.
ROPE_APPEND_CASES: list[dict[str, Any]] = [
    {"dtype": "bf16", "Hq": 8, "Hkv": 1, "head_dim": 256, "B": 1, "S": 1, "norm": False},
    {"dtype": "bf16", "Hq": 4, "Hkv": 1, "head_dim": 256, "B": 2, "S": 1, "norm": True},
    {"dtype": "bf16", "Hq": 4, "Hkv": 2, "head_dim": 256, "B": 2, "S": 37, "norm": True},
    {"dtype": "f32", "Hq": 2, "Hkv": 2, "head_dim": 128, "B": 3, "S": 5, "norm": False},
    {"dtype": "f16", "Hq": 4, "Hkv": 2, "head_dim": 64, "B": 2, "S": 3, "norm": True},
]
APPEND_BLOCK = 16
LOOKUP_CASES: list[dict[str, Any]] = [
    {"dtype": "bf16", "vocab": 256000, "width": 2048, "n": 2048, "scale": 2048**0.5, "time": True},
    {"dtype": "f32", "vocab": 100, "width": 36, "n": 37, "ids_dtype": "i32"},
    {"dtype": "f16", "vocab": 1000, "width": 48, "n": 37, "scale": 48**0.5, "bad_ids": True},
    {"dtype": "bf16", "vocab": 512, "width": 64, "n": 37, "scale": 8.0},
    {"dtype": "bf16", "vocab": 4096, "width": 2304, "n": 67, "scale": 2304**0.5},
]

_SOFTCAP = """
func.func @f(%x: tensor<?x?x{V}xbf16>) -> tensor<?x?x{V}xbf16> {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %d0 = tensor.dim %x, %c0 : tensor<?x?x{V}xbf16>
  %d1 = tensor.dim %x, %c1 : tensor<?x?x{V}xbf16>
  %e = tensor.empty(%d0, %d1) : tensor<?x?x{V}xf32>
  %cst = arith.constant 3.0e1 : f32
  %s = linalg.fill ins(%cst : f32) outs(%e : tensor<?x?x{V}xf32>) -> tensor<?x?x{V}xf32>
  %x32 = arith.extf %x : tensor<?x?x{V}xbf16> to tensor<?x?x{V}xf32>
  %d = arith.divf %x32, %s : tensor<?x?x{V}xf32>
  %t = math.tanh %d : tensor<?x?x{V}xf32>
  %m = arith.mulf %t, %s : tensor<?x?x{V}xf32>
  %r = arith.truncf %m : tensor<?x?x{V}xf32> to tensor<?x?x{V}xbf16>
  return %r : tensor<?x?x{V}xbf16>
}}
"""
_ADD = """
func.func @f(%x: tensor<?x?x{D}x{T}>, %y: tensor<?x?x{D}x{T}>) -> tensor<?x?x{D}x{T}> {{
  %a = arith.addf %x, %y : tensor<?x?x{D}x{T}>
  return %a : tensor<?x?x{D}x{T}>
}}
"""
_CAST = """
func.func @f(%x: tensor<?x?x{D}x{S}>) -> tensor<?x?x{D}x{T}> {{
  %a = arith.{OP} %x : tensor<?x?x{D}x{S}> to tensor<?x?x{D}x{T}>
  return %a : tensor<?x?x{D}x{T}>
}}
"""
_TRANSPOSE = """
func.func @f(%x: tensor<?x?x{H}x{D}xbf16>) -> tensor<?x{H}x?x{D}xbf16> {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %d0 = tensor.dim %x, %c0 : tensor<?x?x{H}x{D}xbf16>
  %d1 = tensor.dim %x, %c1 : tensor<?x?x{H}x{D}xbf16>
  %e = tensor.empty(%d0, %d1) : tensor<?x{H}x?x{D}xbf16>
  %t = linalg.transpose ins(%x : tensor<?x?x{H}x{D}xbf16>) outs(%e : tensor<?x{H}x?x{D}xbf16>)
      permutation = [0, 2, 1, 3]
  return %t : tensor<?x{H}x?x{D}xbf16>
}}
"""
_SCALE_BROADCAST = """
#row = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
#col = affine_map<(d0, d1, d2) -> (d2)>
#one = affine_map<(d0, d1, d2) -> ()>
func.func @f(%x: tensor<?x?x48xf16>, %w: tensor<48xf16>, %s: f32) -> tensor<?x?x48xf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %d0 = tensor.dim %x, %c0 : tensor<?x?x48xf16>
  %d1 = tensor.dim %x, %c1 : tensor<?x?x48xf16>
  %e = tensor.empty(%d0, %d1) : tensor<?x?x48xf16>
  %r = linalg.generic {indexing_maps = [#row, #col, #one, #row],
      iterator_types = ["parallel", "parallel", "parallel"]}
      ins(%x, %w, %s : tensor<?x?x48xf16>, tensor<48xf16>, f32) outs(%e : tensor<?x?x48xf16>) {
  ^bb0(%a: f16, %b: f16, %c: f32, %o: f16):
    %p = arith.mulf %a, %b : f16
    %q = arith.extf %p : f16 to f32
    %t = arith.mulf %q, %c : f32
    %abs = math.absf %t : f32
    %u = math.sqrt %abs : f32
    %v = arith.truncf %u : f32 to f16
    linalg.yield %v : f16
  } -> tensor<?x?x48xf16>
  return %r : tensor<?x?x48xf16>
}
"""
_MASK = """
#out = affine_map<(d0, d1) -> (d0, d1)>
func.func @f(%e: tensor<?x?xf32>) -> tensor<?x?xf32> {
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0.0 : f32
  %r = linalg.generic {indexing_maps = [#out], iterator_types = ["parallel", "parallel"]}
      outs(%e : tensor<?x?xf32>) {
  ^bb0(%o: f32):
    %i = linalg.index 0 : index
    %j = linalg.index 1 : index
    %c = arith.cmpi ule, %j, %i : index
    %v = arith.select %c, %zero, %ninf : f32
    linalg.yield %v : f32
  } -> tensor<?x?xf32>
  return %r : tensor<?x?xf32>
}
"""
_COMPARE = """
func.func @f(%x: tensor<?x?x36xf32>, %y: tensor<?x?x36xf32>) -> tensor<?x?x36xi1> {
  %c = arith.cmpf olt, %x, %y : tensor<?x?x36xf32>
  return %c : tensor<?x?x36xi1>
}
"""

# Elementwise cases: IR, inputs (dtype, shape; "scalar" f32), output (dtype, shape), the
# dynamic loop-dim bindings and the torch reference's name.
ELEMENTWISE_CASES: list[dict[str, Any]] = [
    {
        "id": "softcap_small",
        "ir": _SOFTCAP.format(V=256),
        "inputs": [["bf16", [2, 37, 256]]],
        "output": ["bf16", [2, 37, 256]],
        "dims": {"d0": 2, "d1": 37},
        "ref": "softcap",
    },
    {
        "id": "softcap_vocab",
        "ir": _SOFTCAP.format(V=256000),
        "inputs": [["bf16", [1, 256, 256000]]],
        "output": ["bf16", [1, 256, 256000]],
        "dims": {"d0": 1, "d1": 256},
        "ref": "softcap",
        "time": True,
    },
    {
        "id": "add_bf16_48",
        "ir": _ADD.format(D=48, T="bf16"),
        "inputs": [["bf16", [2, 37, 48]], ["bf16", [2, 37, 48]]],
        "output": ["bf16", [2, 37, 48]],
        "dims": {"d0": 2, "d1": 37},
        "ref": "add",
    },
    {
        "id": "add_bf16_2048",
        "ir": _ADD.format(D=2048, T="bf16"),
        "inputs": [["bf16", [1, 2048, 2048]], ["bf16", [1, 2048, 2048]]],
        "output": ["bf16", [1, 2048, 2048]],
        "dims": {"d0": 1, "d1": 2048},
        "ref": "add",
        "time": True,
    },
    {
        "id": "extf_36",
        "ir": _CAST.format(D=36, S="bf16", T="f32", OP="extf"),
        "inputs": [["bf16", [3, 37, 36]]],
        "output": ["f32", [3, 37, 36]],
        "dims": {"d0": 3, "d1": 37},
        "ref": "cast",
    },
    {
        "id": "truncf_f16_36",
        "ir": _CAST.format(D=36, S="f32", T="f16", OP="truncf"),
        "inputs": [["f32", [3, 37, 36]]],
        "output": ["f16", [3, 37, 36]],
        "dims": {"d0": 3, "d1": 37},
        "ref": "cast",
    },
    {
        "id": "transpose_4x24",
        "ir": _TRANSPOSE.format(H=4, D=24),
        "inputs": [["bf16", [2, 37, 4, 24]]],
        "output": ["bf16", [2, 4, 37, 24]],
        "dims": {"d0": 2, "d2": 37},
        "ref": "transpose",
    },
    {
        "id": "transpose_8x256",
        "ir": _TRANSPOSE.format(H=8, D=256),
        "inputs": [["bf16", [1, 2048, 8, 256]]],
        "output": ["bf16", [1, 8, 2048, 256]],
        "dims": {"d0": 1, "d2": 2048},
        "ref": "transpose",
        "time": True,
    },
    {
        "id": "scale_broadcast_scalar",
        "ir": _SCALE_BROADCAST,
        "inputs": [["f16", [2, 37, 48]], ["f16", [48]], ["scalar", 2.5]],
        "output": ["f16", [2, 37, 48]],
        "dims": {"d0": 2, "d1": 37},
        "ref": "scale_broadcast",
    },
    {
        "id": "causal_mask",
        "ir": _MASK,
        "inputs": [],
        "output": ["f32", [37, 41]],
        "dims": {"d0": 37, "d1": 41},
        "ref": "mask",
    },
    {
        "id": "compare_i1",
        "ir": _COMPARE,
        "inputs": [["f32", [2, 37, 36]], ["f32", [2, 37, 36]]],
        "output": ["i1", [2, 37, 36]],
        "dims": {"d0": 2, "d1": 37},
        "ref": "less",
    },
]


def case_list() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for c in RMS_CASES:
        tag = f"{c['dtype']}_{c['width']}_r{c['rows']}" + ("_res" if c["residual"] else "")
        tag += "_w" + c["w_dtype"] if "w_dtype" in c else ""
        tag += "_alias" if c.get("alias") else ""
        cases.append({"id": f"rms_{tag}", "kind": "rms_norm", **c})
    for c in ROPE_CASES:
        tag = f"{c['dtype']}_h{c['heads']}_d{c['head_dim']}_b{c['B']}s{c['S']}"
        tag += "_alias" if c.get("alias") else ""
        cases.append({"id": f"rope_{tag}", "kind": "rope", **c})
    for c in ROPE_APPEND_CASES:
        tag = f"{c['dtype']}_h{c['Hq']}_{c['Hkv']}_d{c['head_dim']}_b{c['B']}s{c['S']}"
        tag += "_norm" if c["norm"] else ""
        cases.append({"id": f"rope_append_{tag}", "kind": "rope_append", **c})
    for c in LOOKUP_CASES:
        tag = f"{c['dtype']}_{c['vocab']}x{c['width']}_n{c['n']}"
        cases.append({"id": f"lookup_{tag}", "kind": "lookup", **c})
    for c in ELEMENTWISE_CASES:
        cases.append({**c, "id": f"ew_{c['id']}", "kind": "elementwise"})
    return cases


# ---------------------------------------------------------------------------------------------
# Build (here, with MLIR)


def build(folder: Path) -> None:
    from mlir import ir

    from tessera.context import make_context
    from tessera.lowering.cuda.kernel import KernelModule
    from tessera.lowering.cuda.kernels.elementwise import build_elementwise, generics_from_text
    from tessera.lowering.cuda.kernels.lookup import LookupConfig, build_lookup
    from tessera.lowering.cuda.kernels.rms_norm import PreNorm, RmsNormConfig, build_rms_norm
    from tessera.lowering.cuda.kernels.rope import RopeConfig, build_rope
    from tessera.lowering.cuda.kernels.rope_append import RopeAppendConfig, build_rope_append

    folder.mkdir(parents=True, exist_ok=True)
    context = make_context()
    cases = case_list()
    modules = []
    keep = []
    for arch in ("sm_90a", "sm_80"):
        with context, ir.Location.unknown():
            km = KernelModule(arch)
            for case in cases:
                kind = case["kind"]
                if kind == "rms_norm":
                    cfg: Any = RmsNormConfig(
                        case["dtype"],
                        case["width"],
                        EPS,
                        1.0,
                        case.get("w_dtype", ""),
                        case["residual"],
                    )
                    info = build_rms_norm(km, cfg)
                elif kind == "rope":
                    cfg = RopeConfig(
                        case["dtype"],
                        case["heads"],
                        case["head_dim"],
                        case.get("theta", 10000.0),
                        case.get("scaling", 1.0),
                        case.get("rotary_dim"),
                        case.get("pos_dtype", "i64"),
                    )
                    info = build_rope(km, cfg)
                elif kind == "rope_append":
                    norm = PreNorm(EPS, 1.0, case["dtype"]) if case["norm"] else None
                    cfg = RopeAppendConfig(
                        RopeConfig(case["dtype"], case["Hq"], case["head_dim"], 10000.0),
                        case["Hkv"],
                        APPEND_BLOCK,
                        "i32",
                        q_norm=norm,
                        k_norm=norm,
                    )
                    info = build_rope_append(km, cfg)
                elif kind == "lookup":
                    cfg = LookupConfig(
                        case["dtype"],
                        case["vocab"],
                        case["width"],
                        case.get("ids_dtype", "i64"),
                        case.get("scale", 1.0),
                    )
                    info = build_lookup(km, cfg)
                else:
                    module, generics = generics_from_text(case["ir"], context)
                    keep.append(module)
                    if len(generics) != 1:
                        raise SystemExit(f"{case['id']}: {len(generics)} generics after fusion")
                    info = build_elementwise(km, generics[0])
                case["info"] = support.info_json(info)
            support.emit_binaries(
                km.module,
                arch,
                folder / f"small_{arch}.ptx",
                folder / f"ptxas_{arch}.txt",
                cubin_file=folder / "small_sm_90a.cubin" if arch == "sm_90a" else None,
            )
        modules.append(arch)
    (folder / "cases.json").write_text(json.dumps({"cases": cases}, indent=1))
    print(f"built {len(cases)} cases for {modules} into {folder}")


# ---------------------------------------------------------------------------------------------
# Check (on the GPU machine)

BOUND = {"bf16": 1e-2, "f16": 2e-3, "f32": 1e-5}
# The torch peer of each kind, as the benchmark rows name it.
PEER_NAMES = {
    "rms_norm": "torch eager (Gemma RMSNorm, f32 math)",
    "rope": "torch eager (rotate_half)",
    "rope_append": "torch eager (norm, rotate_half, index_put)",
    "lookup": "torch embedding",
    "elementwise": "torch eager",
}


def shape_label(case: dict[str, Any]) -> str:
    """The case as the benchmark rows name it: sizes, dtype and the options that are set."""
    kind = case["kind"]
    if kind == "rms_norm":
        label = f"R{case['rows']} W{case['width']} {case['dtype']}"
        label += " residual" if case["residual"] else ""
        label += f" weight {case['w_dtype']}" if "w_dtype" in case else ""
    elif kind == "rope":
        label = f"B{case['B']} S{case['S']} H{case['heads']} D{case['head_dim']} {case['dtype']}"
        label += f" rotary{case['rotary_dim']}" if case.get("rotary_dim") else ""
    elif kind == "rope_append":
        label = f"B{case['B']} S{case['S']} Hq{case['Hq']} Hkv{case['Hkv']} D{case['head_dim']}"
        label += f" {case['dtype']}" + (" q/k norm" if case["norm"] else "")
    elif kind == "lookup":
        label = f"V{case['vocab']} W{case['width']} N{case['n']} {case['dtype']}"
    else:
        out_dtype, out_shape = case["output"]
        label = f"{case['id'][3:]} {'x'.join(str(n) for n in out_shape)} {out_dtype}"
    return label + (" in-place" if case.get("alias") else "")


def inverse_frequencies(theta: float, rotary_dim: int, scaling: float) -> torch.Tensor:
    """transformers' inv_freq (as lowering/cpu/rope.py computes it), f32 on the CPU."""
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64).to(torch.float32) / rotary_dim
    inv_freq = 1.0 / (torch.tensor(theta, dtype=torch.float32) ** exponents)
    if scaling != 1.0:
        inv_freq = inv_freq / torch.tensor(scaling, dtype=torch.float32)
    return inv_freq


class Checker:
    def __init__(self, folder: Path, quick: bool) -> None:
        self.cases = json.loads((folder / "cases.json").read_text())["cases"]
        # The sm_80 PTX is compiled by the driver for the GPU at hand: the sm_80 code path.
        self.modules: dict[str, Any] = {
            "sm_90a": support.load_module(folder / "small_sm_90a.cubin", "sm_90a"),
            "sm_80ptx": support.load_module(folder / "small_sm_80.ptx", "sm_80"),
        }
        self.quick = quick
        self.rows: list[dict[str, Any]] = []  # every case's detail
        self.bench: list[dict[str, Any]] = []  # the timed cases, in the benchmark format
        self.setups: dict[str, dict[str, Any]] = {}
        self.generator = support.generator(1234)

    def randn(self, shape: tuple[int, ...], dtype: str, scale: float = 1.0) -> torch.Tensor:
        return support.randn(self.generator, shape, dtype, scale)

    def launch(
        self, module: str, case: dict[str, Any], bindings: dict[str, Any]
    ) -> support.KernelLaunch:
        """The kernel bound to ``bindings``; in a dry run the torch peer stands in for it."""
        peer = self.setups[case["id"]]["peer"]
        info = case["info"]
        return support.KernelLaunch(self.modules[module], info, bindings, lambda: peer(bindings))

    # Each `setup_*` returns a dict: "bindings" (makes a fresh input set), the "outputs" to
    # check and those to "poison" (not the in-place ones), "reference" (an output's float64
    # value and the same-dtype torch value), "peer" (torch writing the outputs), the "bytes"
    # one call moves, and optionally the error "bound".

    def run(self, case: dict[str, Any]) -> None:
        kind = case["kind"]
        handler = getattr(self, f"setup_{kind}")
        for module in self.modules:
            torch.manual_seed(0)
            setup = self.setups[case["id"]] = handler(case)
            bindings = setup["bindings"]()
            for name in setup["poison"]:
                support.poison(bindings[name])
            self.launch(module, case, bindings)()
            support.synchronize()
            views = setup.get("views", {})
            outputs = {
                name: views[name](bindings) if name in views else bindings[name]
                for name in setup["outputs"]
            }
            row: dict[str, Any] = {"case": case["id"], "module": module}
            bound = setup.get("bound", BOUND.get(case.get("dtype", "f32"), 1e-2))
            worst_error = 0.0
            ok = True
            for name, out in outputs.items():
                ref64, same = setup["reference"](bindings, name)
                # Outputs written in place (alias) are not poisoned, but must hold no NaN either.
                verdict = support.compare(out, ref64, bound)
                exact = (
                    float((out.reshape(-1) == same.reshape(-1)).float().mean().item())
                    if same is not None
                    else float("nan")
                )
                ok = ok and verdict["ok"]
                worst_error = max(worst_error, verdict["rel_error"])
                row[f"{name}_exact"] = exact
                row[f"{name}_unwritten"] = verdict["unwritten"]
            if "untouched" in setup:
                # Memory the kernel must leave alone (a cache's other slots) still holds poison.
                row["untouched_ok"] = setup["untouched"](bindings)
                ok = ok and row["untouched_ok"]
            row["rel_error"] = worst_error
            row["bound"] = bound
            row["ok"] = ok
            if case.get("time") and module == "sm_90a" and not self.quick:
                self.time(case, setup, row)
            self.rows.append(row)
            print(json.dumps(row), flush=True)

    # -- timing --------------------------------------------------------------------------------

    def time(self, case: dict[str, Any], setup: dict[str, Any], row: dict[str, Any]) -> None:
        """Times the kernel, the torch peer and a copy of the same bytes over rotating sets
        (together four times L2); adds the figures to ``row`` and a benchmark row to
        ``self.bench``."""
        moved = setup["bytes"]
        l2 = 50 * 2**20
        sets = max(2, math.ceil(4 * l2 / moved))
        bound = [setup["bindings"]() for _ in range(sets)]
        launches = [self.launch("sm_90a", case, b) for b in bound]
        copies = [
            torch.empty(moved // 2, dtype=torch.uint8, device=support.device()) for _ in range(sets)
        ]

        def ours() -> None:
            for launch in launches:
                launch()

        def peer() -> None:
            for b in bound:
                setup["peer"](b)

        def copy() -> None:
            for c in copies:
                c.clone()

        ms = {}
        for label, fn in (("ours", ours), ("torch", peer), ("copy", copy)):
            ms[label] = support.median_ms(fn, sets)
            row[f"{label}_us"] = ms[label] * 1e3
            row[f"{label}_GBps"] = moved / ms[label] / 1e6
        row["bytes"] = moved
        peers = [
            {"name": PEER_NAMES[case["kind"]], "ms": ms["torch"]},
            {"name": "torch clone (copy)", "ms": ms["copy"]},
        ]
        label = shape_label(case)
        self.bench.append(
            support.bench_row(case["kind"], label, ms["ours"], row["rel_error"], peers, moved=moved)
        )

    # -- rms_norm ------------------------------------------------------------------------------

    def setup_rms_norm(self, case: dict[str, Any]) -> dict[str, Any]:
        dtype, width, rows = case["dtype"], case["width"], case["rows"]
        w_dtype = case.get("w_dtype", dtype)
        residual, alias = case["residual"], case.get("alias", False)
        shape = (rows, width)
        weight = self.randn((width,), w_dtype, 0.5)

        def bindings() -> dict[str, Any]:
            b: dict[str, Any] = {"x": self.randn(shape, dtype, 2.0), "w": weight, "rows": rows}
            # In place: y overwrites x (and s overwrites r), as the residual stream does.
            b["y"] = b["x"] if alias else support.poisoned(shape, dtype)
            if residual:
                b["r"] = self.randn(shape, dtype)
                b["s"] = b["r"] if alias else support.poisoned(shape, dtype)
                b["x0"], b["r0"] = b["x"].clone(), b["r"].clone()
            else:
                b["x0"] = b["x"].clone()
            return b

        def total(b: dict[str, Any]) -> torch.Tensor:
            return b["x0"] + b["r0"] if residual else b["x0"]

        def reference(b: dict[str, Any], name: str) -> tuple[torch.Tensor, torch.Tensor]:
            s = total(b)
            if name == "s":
                return s.double(), s
            s64 = s.double()
            inv = 1.0 / torch.sqrt(s64.pow(2).mean(-1, keepdim=True) + EPS)
            ref = s64 * inv * (1.0 + weight.double())
            s32 = s.float()
            gemma = s32 * torch.rsqrt(s32.pow(2).mean(-1, keepdim=True) + EPS)
            return ref, (gemma * (1.0 + weight.float())).to(DTYPES[dtype])

        def peer(b: dict[str, Any]) -> None:
            s = b["x"] + b["r"] if residual else b["x"]
            s32 = s.float()
            out = s32 * torch.rsqrt(s32.pow(2).mean(-1, keepdim=True) + EPS)
            if residual:
                b["s"].copy_(s)
            b["y"].copy_(out * (1.0 + weight.float()))

        size = torch.finfo(DTYPES[dtype]).bits // 8
        moved = rows * width * size * (5 if residual else 2)
        outputs = ["y", "s"] if residual else ["y"]
        poison = [o for o in outputs if not alias]
        return {
            "bindings": bindings,
            "outputs": outputs,
            "poison": poison,
            "reference": reference,
            "peer": peer,
            "bytes": moved,
        }

    # -- rope ----------------------------------------------------------------------------------

    def setup_rope(self, case: dict[str, Any]) -> dict[str, Any]:
        dtype, heads, head_dim = case["dtype"], case["heads"], case["head_dim"]
        batch, length = case["B"], case["S"]
        rotary = case.get("rotary_dim") or head_dim
        theta, scaling = case.get("theta", 10000.0), case.get("scaling", 1.0)
        alias = case.get("alias", False)
        inv_freq = inverse_frequencies(theta, rotary, scaling).to(support.device())
        shape = (batch, length, heads, head_dim)
        pos_dtype = DTYPES[case.get("pos_dtype", "i64")]

        def bindings() -> dict[str, Any]:
            x = self.randn(shape, dtype)
            pos = torch.randint(
                0, 8192, (batch, length), device=support.device(), generator=self.generator
            ).to(pos_dtype)
            y = x if alias else support.poisoned(shape, dtype)
            return {"x": x, "x0": x.clone(), "pos": pos, "y": y, "B": batch, "S": length}

        def same_dtype(b: dict[str, Any]) -> torch.Tensor:
            x, pos = b["x0"], b["pos"]
            freqs = pos.float()[..., None] * inv_freq  # [B, S, rotary/2]
            emb = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]
            cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
            rot, tail = x[..., :rotary], x[..., rotary:]
            half = rotary // 2
            rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
            return torch.cat((rot * cos + rotated * sin, tail), dim=-1)

        def reference(b: dict[str, Any], name: str) -> tuple[torch.Tensor, torch.Tensor]:
            x, pos = b["x0"].double(), b["pos"]
            angle = (pos.float()[..., None] * inv_freq).double()
            cos, sin = angle.cos()[:, :, None, :], angle.sin()[:, :, None, :]
            half = rotary // 2
            x1, x2 = x[..., :half], x[..., half:rotary]
            out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[..., rotary:]), dim=-1)
            return out, same_dtype(b)

        def peer(b: dict[str, Any]) -> None:
            b["y"].copy_(same_dtype({"x0": b["x"], "pos": b["pos"]}))

        size = torch.finfo(DTYPES[dtype]).bits // 8
        return {
            "bindings": bindings,
            "outputs": ["y"],
            "poison": [] if alias else ["y"],
            "reference": reference,
            "peer": peer,
            "bytes": 2 * math.prod(shape) * size + batch * length * 8,
        }

    # -- rope_append ---------------------------------------------------------------------------

    def setup_rope_append(self, case: dict[str, Any]) -> dict[str, Any]:
        dtype, dim, normed = case["dtype"], case["head_dim"], case["norm"]
        hq, hkv, batch, length = case["Hq"], case["Hkv"], case["B"], case["S"]
        width = -(-(length + 7) // APPEND_BLOCK)  # table entries a sequence needs
        blocks = batch * width + 1
        inv_freq = inverse_frequencies(10000.0, dim, 1.0).to(support.device())
        dev = support.device()

        def bindings() -> dict[str, Any]:
            q = self.randn((batch, length, hq, dim), dtype)
            order = torch.randperm(blocks, device=dev, generator=self.generator)
            cache_index = torch.randint(0, 8, (batch,), device=dev, generator=self.generator)
            b: dict[str, Any] = {
                "q": q,
                "q0": q.clone(),
                "q_out": q,  # rotated in place, as the planned program does
                "k": self.randn((batch, length, hkv, dim), dtype),
                "v": self.randn((batch, length, hkv, dim), dtype),
                "q_norm_w": self.randn((dim,), dtype, 0.5),
                "k_norm_w": self.randn((dim,), dtype, 0.5),
                "pos": torch.randint(
                    0, 8192, (batch, length), device=dev, generator=self.generator
                ),
                "k_cache": support.poisoned((blocks, hkv, APPEND_BLOCK, dim), dtype),
                "v_cache": support.poisoned((blocks, hkv, APPEND_BLOCK, dim), dtype),
                "block_table": order[: batch * width].reshape(batch, width).to(torch.int32),
                "cache_index": cache_index,
                "v_sb": length * hkv * dim,
                "v_sh": dim,
                "v_ss": hkv * dim,
                "B": batch,
                "S": length,
                "M": width,
            }
            if not normed:
                del b["q_norm_w"], b["k_norm_w"]
            return b

        def slots(b: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
            """(block, slot) of every (sequence, token), [B, S] each."""
            index = b["cache_index"][:, None] + torch.arange(length, device=dev)[None, :]
            entry = (index // APPEND_BLOCK) % width
            block = torch.gather(b["block_table"].long(), 1, entry)
            return block, index % APPEND_BLOCK

        def rows(cache: str) -> Any:
            def view(b: dict[str, Any]) -> torch.Tensor:
                block, slot = slots(b)
                # [B, S, Hkv, D] from cache[block, head, slot]
                return b[cache][block[..., None], torch.arange(hkv, device=dev), slot[..., None]]

            return view

        def untouched(b: dict[str, Any]) -> bool:
            block, slot = slots(b)
            for cache in ("k_cache", "v_cache"):
                mask = torch.ones(b[cache].shape[:3], dtype=torch.bool, device=dev)
                mask[block[..., None], torch.arange(hkv, device=dev), slot[..., None]] = False
                if not bool(torch.isnan(b[cache][mask]).all()):
                    return False
            return True

        def prologue(x: torch.Tensor, w: torch.Tensor, pos: torch.Tensor, exact: bool) -> Any:
            """Norm (where the case has one) then rope: float64, or as torch computes it in
            the dtype (norm in f32, rounded; cos/sin and products rounded)."""
            if exact:
                x = x.double()
                if normed:
                    inv = 1.0 / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + EPS)
                    x = x * inv * (1.0 + w.double())
                angle = (pos.float()[..., None] * inv_freq).double()[:, :, None, :]
                cos, sin = angle.cos(), angle.sin()
                x1, x2 = x[..., : dim // 2], x[..., dim // 2 :]
                return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
            if normed:
                x32 = x.float()
                x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + EPS)
                x = (x32 * (1.0 + w.float())).to(x.dtype)
            freqs = pos.float()[..., None] * inv_freq
            emb = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]
            cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
            rotated = torch.cat((-x[..., dim // 2 :], x[..., : dim // 2]), dim=-1)
            return x * cos + rotated * sin

        def reference(b: dict[str, Any], name: str) -> tuple[torch.Tensor, torch.Tensor]:
            if name == "v_rows":
                return b["v"].double(), b["v"]
            source, weight = ("q0", "q_norm_w") if name == "q_out" else ("k", "k_norm_w")
            x, w = b[source], b.get(weight)
            return prologue(x, w, b["pos"], True), prologue(x, w, b["pos"], False)

        def peer(b: dict[str, Any]) -> None:
            block, slot = slots(b)
            heads = torch.arange(hkv, device=dev)
            k = prologue(b["k"], b.get("k_norm_w"), b["pos"], False)
            b["k_cache"][block[..., None], heads, slot[..., None]] = k
            b["v_cache"][block[..., None], heads, slot[..., None]] = b["v"]
            b["q_out"].copy_(prologue(b["q"], b.get("q_norm_w"), b["pos"], False))

        size = torch.finfo(DTYPES[dtype]).bits // 8
        return {
            "bindings": bindings,
            "outputs": ["q_out", "k_rows", "v_rows"],
            "views": {"k_rows": rows("k_cache"), "v_rows": rows("v_cache")},
            "poison": [],  # q is rotated in place; the caches are made poisoned
            "untouched": untouched,
            "reference": reference,
            "peer": peer,
            "bytes": batch * length * (2 * hq + 4 * hkv) * dim * size,
        }

    # -- lookup --------------------------------------------------------------------------------

    def setup_lookup(self, case: dict[str, Any]) -> dict[str, Any]:
        dtype, vocab, width, n = case["dtype"], case["vocab"], case["width"], case["n"]
        ids_dtype = DTYPES[case.get("ids_dtype", "i64")]
        scale = float(torch.tensor(case.get("scale", 1.0)).to(DTYPES[dtype]).float())
        table = self.randn((vocab, width), dtype)

        def bindings() -> dict[str, Any]:
            ids = torch.randint(0, vocab, (n,), device=support.device(), generator=self.generator)
            if case.get("bad_ids"):
                ids[0], ids[5], ids[-1] = -1, vocab, vocab + 7
            return {
                "table": table,
                "ids": ids.to(ids_dtype),
                "y": support.poisoned((n, width), dtype),
                "n": n,
            }

        def gathered(b: dict[str, Any]) -> torch.Tensor:
            ids = b["ids"].long()
            valid = (ids >= 0) & (ids < vocab)
            rows = table[ids.clamp(0, vocab - 1)]
            return torch.where(valid[:, None], rows, torch.zeros_like(rows))

        def reference(b: dict[str, Any], name: str) -> tuple[torch.Tensor, torch.Tensor]:
            rows = gathered(b)
            same = rows if scale == 1.0 else (rows.float() * scale).to(DTYPES[dtype])
            return rows.double() * scale, same

        # Made once here: a tensor built from a Python number inside the peer would be a
        # host-to-device copy, which a CUDA graph capture refuses.
        scale_tensor = torch.tensor(scale, dtype=DTYPES[dtype], device=support.device())

        def peer(b: dict[str, Any]) -> None:
            emb = (
                gathered(b)
                if case.get("bad_ids")
                else torch.nn.functional.embedding(b["ids"], table)
            )
            b["y"].copy_(emb * scale_tensor)

        size = torch.finfo(DTYPES[dtype]).bits // 8
        return {
            "bindings": bindings,
            "outputs": ["y"],
            "poison": ["y"],
            "reference": reference,
            "peer": peer,
            "bytes": 2 * n * width * size + n * 8,
        }

    # -- elementwise ---------------------------------------------------------------------------

    def setup_elementwise(self, case: dict[str, Any]) -> dict[str, Any]:
        params = [p["name"] for p in case["info"]["params"]]
        out_dtype, out_shape = case["output"]
        ref_name = case["ref"]

        def bindings() -> dict[str, Any]:
            b: dict[str, Any] = {}
            for k, (dtype, shape) in enumerate(case["inputs"]):
                if dtype == "scalar":
                    b[f"in{k}"] = float(shape)
                else:
                    b[f"in{k}"] = self.randn(
                        tuple(shape), dtype, 20.0 if ref_name == "softcap" else 1.0
                    )
            b["out"] = support.poisoned(out_shape, out_dtype)
            b.update(case["dims"])
            return {k: v for k, v in b.items() if k in params or k.startswith("in")}

        def compute(b: dict[str, Any], exact: bool) -> torch.Tensor:
            ins = [b.get(f"in{k}") for k in range(len(case["inputs"]))]
            conv = (lambda t: t.double()) if exact else (lambda t: t)
            if ref_name == "softcap":
                x = conv(ins[0].float())
                out = torch.tanh(x / 30.0) * 30.0
            elif ref_name == "add":
                out = conv(ins[0]) + conv(ins[1])
            elif ref_name == "cast":
                out = conv(ins[0])
            elif ref_name == "transpose":
                out = ins[0].permute(0, 2, 1, 3)
            elif ref_name == "scale_broadcast":
                product = conv(ins[0] * ins[1]) if not exact else ins[0].double() * ins[1].double()
                out = torch.sqrt(torch.abs(conv(product.float()) * ins[2]))
            elif ref_name == "mask":
                rows, cols = out_shape
                i = torch.arange(rows, device=support.device())[:, None]
                j = torch.arange(cols, device=support.device())[None, :]
                out = torch.where(j <= i, 0.0, float("-inf")).float()
                out = out.double() if exact else out
            elif ref_name == "less":
                out = ins[0] < ins[1]
            else:
                raise SystemExit(f"no reference {ref_name}")
            return out if exact else out.to(DTYPES[out_dtype])

        def reference(b: dict[str, Any], name: str) -> tuple[torch.Tensor, torch.Tensor]:
            same = compute(b, False)
            return compute(b, True).double(), same

        def peer(b: dict[str, Any]) -> None:
            b["out"].copy_(compute(b, False))

        moved = sum(
            b.numel() * b.element_size() for b in bindings().values() if isinstance(b, torch.Tensor)
        )
        bound = 1e-2 if out_dtype in ("bf16", "f16") else 1e-5
        return {
            "bindings": bindings,
            "outputs": ["out"],
            "poison": ["out"],
            "reference": reference,
            "peer": peer,
            "bytes": moved,
            "bound": bound,
        }


def check(args: argparse.Namespace) -> int:
    """Checks (and times) every case the options select; returns the exit status."""
    folder, quick = args.folder, args.quick
    checker = Checker(folder, quick)
    for case in checker.cases:
        if quick and case.get("time"):
            continue
        support.guarded(checker.rows, case["id"], lambda case=case: checker.run(case))
    support.write_results(args.out, "small_kernels", checker.bench, checker.rows, args.commit)
    return support.summarize(checker.rows, checker.bench)


def main() -> int:
    return support.main(__doc__, build, check)


if __name__ == "__main__":
    sys.exit(main())
