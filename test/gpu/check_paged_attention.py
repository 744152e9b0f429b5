"""Checks and times the CUDA paged attention of a decode step (split-KV partial + combine).

    python test/gpu/check_paged_attention.py --build build/paged      # here: MLIR → cubin + JSON
    python3 test/gpu/check_paged_attention.py build/paged --out $OUT  # on the GPU machine
    python3 test/gpu/check_paged_attention.py build/paged --quick     # small cases (sanitizer)
    python test/gpu/check_paged_attention.py build/paged --dry-run    # the logic, on the CPU

The build step compiles every case's kernel pair (``kernels/paged_attention.py``) into one
sm_90a cubin and writes ``cases.json`` (launch contracts, scratch sizes as expressions). The
check step needs no MLIR: per case it draws fresh seeded keys, values and queries, writes each
sequence's keys into a cache poisoned with NaN through a shuffled block table (so a slot read
that no key was written to turns the output NaN), poisons the scratch and the output, runs the
pair through ``tessera.runtime.cuda_driver``, and requires every output element written and
‖out − ref‖/‖ref‖ within ``error_bound`` of a float64 reference over the logical sequences
(visible keys from the first valid one, or the window, to the query's own position).

Timed cases (Gemma decode shapes) run as CUDA graphs over rotating cache sets together four
times L2, so the cache is read from memory as in a decode step, against torch's
``scaled_dot_product_attention`` over the same keys already gathered into contiguous tensors
(without the softcap, which it does not take) and the cache-read bound (the visible keys' and
values' bytes at the device-to-device copy rate measured in the same run). A timed case may
list kernel layouts (keys per split, warps, keys per warp step, and whether a warp looks its
next step's cache blocks up ahead) to compare; every layout is
checked before it is timed. ``--out`` receives ``paged_attention.json`` (the benchmark format)
and ``paged_attention_cases.json`` (every case's detail). The shared machinery is in
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
from check_gemm import UNIT_ROUNDOFF
from check_support import DTYPES

ARCH = "sm_90a"
L2_BYTES = 50 * 2**20  # H100's L2: the timed cache sets together are four times larger
MAX_SETS = 256
QUICK_KEYS = 4096  # --quick: cases whose sequences hold at most this many keys in all

# ---------------------------------------------------------------------------------------------
# Cases. lengths: keys cached per sequence before the call; start: the first valid key of each
# sequence (left padding); S: the call's query tokens; M: the block table's width; layouts:
# (keys_per_split, warps, keys_per_step or None for the kernel's own choice[, pages_ahead]);
# the first is the compiler's default (a decode plan's batch-of-one build takes
# ``rules_kv.single_sequence_layout``'s instead, which the timed cases' ``tuned`` list holds).

DEFAULT_LAYOUT = (64, 4, None)


def case_list() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []

    def add(case_id: str, **fields: Any) -> None:
        case: dict[str, Any] = {"id": case_id, "dtype": "bf16", "D": 256, "BS": 16}
        case.update(softcap=None, window=None, S=1, table="i64", time=False, label=None)
        case.update(layouts=[DEFAULT_LAYOUT], bshd=False)
        case.update(fields)
        case.setdefault("start", [0] * len(case["lengths"]))
        # A table shorter than a sequence is a ring: only a window's keys may be asked of it.
        reach = case["M"] * case["BS"]
        longest = max(case["lengths"]) + case["S"]
        window = case["window"]
        assert longest <= reach or (window is not None and window + case["S"] - 1 <= reach), case_id
        cases.append(case)

    # small and ragged: lengths off the split and block edges, left padding, several tokens
    add("bf16_g8_ragged", Hq=8, Hkv=1, lengths=[37, 200, 1], start=[0, 5, 0], M=16)
    add("f16_g2_window", dtype="f16", Hq=4, Hkv=2, lengths=[300, 77], window=50, M=32)
    add("f32_g4_cap", dtype="f32", D=128, Hq=4, Hkv=1, lengths=[129], softcap=50.0, M=16)
    add("bf16_g1_s3_bshd", Hq=4, Hkv=4, lengths=[90, 15], S=3, M=8, bshd=True)
    add("bf16_g16_i32", Hq=16, Hkv=1, lengths=[70], D=64, table="i32", M=8)
    add("bf16_odd_dim", D=72, Hq=2, Hkv=1, lengths=[50, 9], BS=8, M=16)
    # a ring: the table holds 4 blocks of 16, the window 40 keys of a 150-key sequence
    add("bf16_ring_window", Hq=2, Hkv=1, lengths=[150], window=40, M=4)
    for layout in ((32, 2, 1), (16, 8, 3), (256, 1, None)):
        tag = "_".join("a" if v is None else str(v) for v in layout)
        add(f"bf16_layout_{tag}", Hq=8, Hkv=1, lengths=[333, 20], layouts=[layout], M=32)
    # Gemma decode shapes, timed: Gemma-2B (MQA, 8 heads), Gemma-3-1B (4 heads, a local layer
    # with window 512), Gemma-2-2B (GQA 8/4, softcap 50, window 4096). The global tables hold
    # the keys and some room beyond (empty splits, as a cache sized for a longer generation).
    # The batch-1 layouts of one kv head also with each step's cache blocks looked up a step
    # ahead (a fourth field: ``pages_ahead``), as ``single_sequence_layout`` builds them.
    tuned = [
        DEFAULT_LAYOUT,
        (32, 4, None),
        (32, 4, None, True),
        (128, 4, None),
        (32, 8, None),
        (32, 8, None, True),
        (64, 8, None),
    ]
    gemma_2b = {"Hq": 8, "Hkv": 1, "time": True, "label": "Gemma-2B"}
    add("gemma2b_b1_t128", lengths=[128], M=12, **gemma_2b, layouts=tuned)
    add("gemma2b_b1_t2048", lengths=[2048], M=136, **gemma_2b, layouts=tuned)
    add("gemma2b_b8_t2048", lengths=[2048] * 8, M=136, **gemma_2b, layouts=tuned)
    add("gemma2b_b1_t8192", lengths=[8192], M=520, **gemma_2b, layouts=tuned[:3])
    add(
        "gemma3_1b_b1_t2048_w512",
        Hq=4,
        Hkv=1,
        lengths=[2048],
        M=33,
        window=512,
        time=True,
        label="Gemma-3-1B local",
        layouts=tuned,
    )
    add(
        "gemma2_2b_b1_t4096_cap",
        Hq=8,
        Hkv=4,
        lengths=[4096],
        M=257,
        softcap=50.0,
        window=4096,
        time=True,
        label="Gemma-2-2B",
        layouts=tuned,
    )
    return cases


# ---------------------------------------------------------------------------------------------
# Build (here, with MLIR)


def build(folder: Path) -> None:
    from mlir import ir

    from tessera.context import make_context
    from tessera.lowering.cuda.kernel import KernelModule
    from tessera.lowering.cuda.kernels.paged_attention import (
        PagedAttentionConfig,
        build_paged_attention,
        scratch_elements,
    )

    folder.mkdir(parents=True, exist_ok=True)
    cases = case_list()
    with make_context(), ir.Location.unknown():
        km = KernelModule(ARCH)
        for case in cases:
            case["built"] = []
            for split, warps, step, *ahead in case["layouts"]:
                cfg = PagedAttentionConfig(
                    case["dtype"],
                    case["D"],
                    case["D"],
                    case["Hq"],
                    case["Hkv"],
                    case["BS"],
                    scale=case["D"] ** -0.5,
                    softcap=case["softcap"],
                    window=case["window"],
                    table_dtype=case["table"],
                    keys_per_split=split,
                    warps=warps,
                    keys_per_step=step,
                    pages_ahead=bool(ahead and ahead[0]),
                )
                partial, combine = build_paged_attention(km, cfg)
                case["built"].append(
                    {
                        "layout": [split, cfg.block_warps, cfg.step, cfg.pages_ahead],
                        "partial": support.info_json(partial),
                        "combine": support.info_json(combine),
                        "scratch": list(scratch_elements(cfg)),
                    }
                )
        report = support.emit_binaries(
            km.module,
            ARCH,
            folder / f"paged_attention_{ARCH}.ptx",
            folder / f"ptxas_{ARCH}.txt",
            cubin_file=folder / f"paged_attention_{ARCH}.cubin",
        )
    support.write_cases(folder, cases, report)


# ---------------------------------------------------------------------------------------------
# Inputs and the reference


def error_bound(dtype: str, head_dim: int, keys: int) -> float:
    """Allowed ‖out−ref‖/‖ref‖: the output's rounding (2u) plus f32 accumulation of the
    scores over the head dim and of the weighted values over the keys (sqrt growth)."""
    return 2 * UNIT_ROUNDOFF[dtype] + 8 * math.sqrt(head_dim + keys) * 2.0**-24


def visible(case: dict[str, Any], b: int, s: int) -> tuple[int, int]:
    """The keys [first, last] query token s of sequence b sees."""
    position = case["lengths"][b] + s
    first = case["start"][b]
    if case["window"] is not None:
        first = max(first, position - case["window"] + 1)
    return first, position


class Checker:
    def __init__(self, folder: Path) -> None:
        self.cases = json.loads((folder / "cases.json").read_text())["cases"]
        self.module = support.load_module(folder / f"paged_attention_{ARCH}.cubin", "paged")
        self.generator = support.generator(20261207)
        self.rows: list[dict[str, Any]] = []
        self.bench: list[dict[str, Any]] = []

    def inputs(self, case: dict[str, Any]) -> dict[str, Any]:
        """One input set: logical keys and values per sequence, the paged caches (NaN where
        no key was written), a shuffled block table, queries, and the scalar bindings."""
        dt, D, BS, M = case["dtype"], case["D"], case["BS"], case["M"]
        Hq, Hkv, S = case["Hq"], case["Hkv"], case["S"]
        B = len(case["lengths"])
        total = max(case["lengths"]) + S
        dev = support.device()
        k = support.randn(self.generator, (B, Hkv, total, D), dt)
        v = support.randn(self.generator, (B, Hkv, total, D), dt)
        blocks = B * M + 3
        perm = torch.randperm(blocks, generator=self.generator, device=dev)[: B * M]
        table = perm.reshape(B, M).to(DTYPES[case["table"]])
        k_cache = support.poisoned((blocks, Hkv, BS, D), dt)
        v_cache = support.poisoned((blocks, Hkv, BS, D), dt)
        for b, length in enumerate(case["lengths"]):
            end = length + S
            keys = torch.arange(max(0, end - M * BS), end, device=dev)  # the ring keeps these
            physical = table[b, (keys // BS) % M].long()
            k_cache[physical, :, keys % BS] = k[b, :, keys].transpose(0, 1)
            v_cache[physical, :, keys % BS] = v[b, :, keys].transpose(0, 1)
        if case["bshd"]:
            q = support.randn(self.generator, (B, S, Hq, D), dt)
            q_strides = {"q_sb": S * Hq * D, "q_sh": D, "q_ss": Hq * D}
        else:
            q = support.randn(self.generator, (B, Hq, S, D), dt)
            q_strides = {"q_sb": Hq * S * D, "q_sh": S * D, "q_ss": D}
        out = support.poisoned(tuple(q.shape), dt)
        return {
            "keys": k,
            "values": v,
            "q": q,
            "k_cache": k_cache,
            "v_cache": v_cache,
            "block_table": table,
            "cache_index": torch.tensor(case["lengths"], dtype=torch.int64, device=dev),
            "kv_start": torch.tensor(case["start"], dtype=torch.int64, device=dev),
            "o": out,
            **q_strides,
            **{name.replace("q_", "o_"): value for name, value in q_strides.items()},
            "B": B,
            "S": S,
            "M": M,
        }

    def reference(self, case: dict[str, Any], x: dict[str, Any]) -> torch.Tensor:
        """float64 attention over the logical sequences, as [B, Hq, S, D]."""
        B, S, Hq, Hkv = x["B"], case["S"], case["Hq"], case["Hkv"]
        q = x["q"].transpose(1, 2) if case["bshd"] else x["q"]
        out = torch.zeros((B, Hq, S, case["D"]), dtype=torch.float64, device=q.device)
        for b in range(B):
            for s in range(S):
                first, last = visible(case, b, s)
                k = x["keys"][b, :, first : last + 1].double()
                v = x["values"][b, :, first : last + 1].double()
                k = k.repeat_interleave(Hq // Hkv, 0)
                v = v.repeat_interleave(Hq // Hkv, 0)
                scores = (k @ q[b, :, s].double()[:, :, None])[:, :, 0] * case["D"] ** -0.5
                if case["softcap"] is not None:
                    scores = case["softcap"] * torch.tanh(scores / case["softcap"])
                out[b, :, s] = (torch.softmax(scores, -1)[:, None, :] @ v)[:, 0]
        return out

    def pair(self, case: dict[str, Any], built: dict[str, Any], x: dict[str, Any]) -> Any:
        """The partial + combine launches bound to ``x`` (with fresh poisoned scratch)."""
        from tessera.runtime import expr

        scalars = {"B": x["B"], "S": x["S"], "M": x["M"]}
        o_size, ml_size = (expr.evaluate(e, scalars) for e in built["scratch"])
        bindings = {
            **x,
            "part_o": support.poisoned((o_size,), "f32"),
            "part_ml": support.poisoned((ml_size,), "f32"),
        }

        def stand_in() -> None:
            ref = self.reference(case, x)
            x["o"].copy_(ref.transpose(1, 2) if case["bshd"] else ref)

        partial = support.KernelLaunch(self.module, built["partial"], bindings, lambda: None)
        combine = support.KernelLaunch(self.module, built["combine"], bindings, stand_in)

        def run() -> None:
            partial()
            combine()

        run.bindings = bindings  # type: ignore[attr-defined]  # keeps the scratch alive
        return run

    def run(self, case: dict[str, Any], quick: bool) -> None:
        keys = max(case["lengths"]) + case["S"]
        bound = error_bound(case["dtype"], case["D"], keys)
        for built in case["built"]:
            layout = built["layout"]
            row: dict[str, Any] = {"case": case["id"], "layout": layout}
            row["kernel"] = built["partial"]["name"]
            x = self.inputs(case)
            self.pair(case, built, x)()
            support.synchronize()
            ref = self.reference(case, x)
            out = x["o"].transpose(1, 2) if case["bshd"] else x["o"]
            row.update(support.compare(out, ref, bound))
            if row["ok"] and case["time"] and not quick:
                self.time(case, built, row)
            self.rows.append(row)
            print(json.dumps(row), flush=True)

    def time(self, case: dict[str, Any], built: dict[str, Any], row: dict[str, Any]) -> None:
        """Times the pair and SDPA over the same keys, rotating cache sets four times L2."""
        size = DTYPES[case["dtype"]].itemsize
        Hkv, D = case["Hkv"], case["D"]
        seen = [
            last - first + 1
            for first, last in (visible(case, b, 0) for b in range(len(case["lengths"])))
        ]
        moved = sum(seen) * Hkv * 2 * D * size
        sets = min(MAX_SETS, max(2, math.ceil(4 * L2_BYTES / max(moved, 1))))
        inputs = [self.inputs(case) for _ in range(sets)]
        pairs = [self.pair(case, built, x) for x in inputs]
        # SDPA's operands: each sequence's visible keys, contiguous ([B, Hkv, T, D]; equal
        # lengths in the timed cases), the queries as [B, Hq, 1, D].
        first, last = visible(case, 0, 0)
        dense = [
            (x["q"], x["keys"][:, :, first : last + 1], x["values"][:, :, first : last + 1])
            for x in inputs
        ]
        F = torch.nn.functional

        def ours() -> None:
            for run in pairs:
                run()

        def sdpa() -> None:
            for q, k, v in dense:
                F.scaled_dot_product_attention(q, k, v, enable_gqa=case["Hq"] != Hkv)

        rate = support.copy_rate()
        ms = {
            "ours": support.median_ms(ours, sets, replays=30),
            "sdpa": support.median_ms(sdpa, sets, replays=30),
            "ours_again": support.median_ms(ours, sets, replays=30),
        }
        bound_ms = moved / rate * 1e3
        row.update({f"{name}_us": value * 1e3 for name, value in ms.items()})
        row.update(
            sets=sets,
            cache_bytes=moved,
            copy_GBps=rate / 1e9,
            fraction_of_bound=bound_ms / ms["ours"],
        )
        capped = " (no softcap)" if case["softcap"] is not None else ""
        peers = [
            {"name": f"torch SDPA over contiguous K/V{capped}", "ms": ms["sdpa"]},
            {"name": "Tessera again (noise)", "ms": ms["ours_again"]},
            {"name": "cache-read bound (K+V bytes at the d2d copy rate)", "ms": bound_ms},
        ]
        label = (
            f"{case['label']}: B{len(case['lengths'])} Hq{case['Hq']} Hkv{Hkv} T{seen[0]} "
            f"D{D} {case['dtype']}"
        )
        if case["softcap"] is not None:
            label += f" softcap{case['softcap']:g}"
        if case["window"] is not None:
            label += f" window{case['window']}"
        label += " split{} w{} step{}".format(*built["layout"][:3])
        if built["layout"][3:] == [True]:
            label += " pages-ahead"
        self.bench.append(
            support.bench_row(
                "paged_attention", label, ms["ours"], row["rel_error"], peers, moved=moved
            )
        )


def check(args: argparse.Namespace) -> int:
    """Checks (and times) every case the options select; returns the exit status."""
    return support.run_cases(
        Checker(args.folder),
        args,
        "paged_attention",
        lambda case: bool(args.quick and (case["time"] or sum(case["lengths"]) > QUICK_KEYS)),
    )


def main() -> int:
    return support.main(__doc__, build, check, support.ONLY)


if __name__ == "__main__":
    sys.exit(main())
