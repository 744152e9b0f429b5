"""The L2 weight prefetch of the decode programs: the kernel (``kernels/l2_prefetch.py``) run
by the interpreter, which checks every request's bounds, alignment and place before the grid
wait; where the plan (``weight_prefetch.py``) puts the requests and how many bytes; and a
generation with them, emulated, equal to transformers'."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import seeds
import torch
from gpu_interpreter import Buffer, KernelFault, run_kernel
from mlir import ir
from test_generate_emulated import _greedy, transformers_greedy

import tessera
from tessera.context import make_context
from tessera.errors import LoweringError
from tessera.lowering.cuda import tuning, weight_prefetch
from tessera.lowering.cuda.kernel import KernelModule
from tessera.lowering.cuda.kernels.l2_prefetch import (
    L2PrefetchConfig,
    PrefetchRange,
    build_l2_prefetch,
)
from tessera.lowering.cuda.weight_prefetch import Weight, prefetch_plan
from tessera.models.tiny import tiny_gemma
from tessera.runtime import kv_layout
from tessera.runtime.generate import cached_programs, decode_steps
from tessera.runtime.manifest import ArgRef, KernelLaunch

# -- the kernel --------------------------------------------------------------------------------


def _run_prefetch(
    cfg: L2PrefetchConfig, buffers: list[Buffer]
) -> list[tuple[Buffer, np.ndarray, np.ndarray]]:
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a")
        info = build_l2_prefetch(km, cfg)
    prefetched: list[tuple[Buffer, np.ndarray, np.ndarray]] = []
    bindings = {f"w{i}": b for i, b in enumerate(buffers)}
    run_kernel(km.module, info, bindings, prefetched=prefetched)
    return prefetched


def _covered(prefetched: list, buffer: Buffer) -> np.ndarray:
    """Per byte of ``buffer`` (with the 16-byte granules around it): how often a request
    covered it."""
    count = np.zeros(buffer.size * buffer.kind.size + 32, dtype=np.int64)
    for owner, starts, lengths in prefetched:
        if owner is buffer:
            for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
                count[start : start + length] += 1
    return count


@pytest.mark.parametrize("chunk", [16, 48, 32 * 1024])
def test_the_requests_cover_each_range_and_stay_in_its_granules(chunk: int) -> None:
    """Ranges with ragged starts and lengths: every byte of each range is asked for once, no
    request leaves the 16-byte granules that hold the range, and each is aligned (the
    interpreter refuses a misaligned one)."""
    sizes = (5000, 70001, 301)  # elements of bf16, bf16, f32
    buffers = [
        Buffer.of(np.zeros(sizes[0]), "bf16", "w0"),
        Buffer.of(np.zeros(sizes[1]), "bf16", "w1"),
        Buffer.of(np.zeros(sizes[2]), "f32", "w2"),
    ]
    ranges = (
        PrefetchRange("bf16", 0, 10000),  # the whole of w0
        PrefetchRange("bf16", 6, 100003),  # ragged at both ends
        PrefetchRange("f32", 1200, 4),  # the last element of w2
    )
    cfg = L2PrefetchConfig(ranges, chunk=chunk)
    prefetched = _run_prefetch(cfg, buffers)
    for buffer, r in zip(buffers, ranges, strict=True):
        count = _covered(prefetched, buffer)
        first, end = r.start // 16 * 16, -(-(r.start + r.length) // 16) * 16
        assert (count[first:end] == 1).all(), buffer.name
        assert not count[:first].any() and not count[end:].any(), buffer.name
    assert len(prefetched) == len(ranges)


def test_a_range_past_its_weight_is_a_fault() -> None:
    cfg = L2PrefetchConfig((PrefetchRange("bf16", 0, 2 * 1000 + 32),))
    with pytest.raises(KernelFault, match=r"prefetches bytes .* of w0, which spans bytes 0..2000"):
        _run_prefetch(cfg, [Buffer.of(np.zeros(1000), "bf16", "w0")])


def test_the_prefetch_takes_weights_only() -> None:
    """Its requests go out before its grid wait: a buffer that launches write (an arena slice,
    an output) may not be bound there."""
    cfg = L2PrefetchConfig((PrefetchRange("bf16", 0, 64),))
    with pytest.raises(KernelFault, match=r"reads slice before its griddepcontrol\.wait"):
        _run_prefetch(cfg, [Buffer.poisoned(32, "bf16", "slice")])


def test_a_request_before_the_wait_of_an_unmarked_buffer_is_a_fault() -> None:
    """Without the kernel's mark, the interpreter takes its parameters for buffers the kernels
    before it may write: the prefetch before the wait is then a fault (the mark is what makes
    it legal)."""
    cfg = L2PrefetchConfig((PrefetchRange("bf16", 0, 64),))
    with make_context(), ir.Location.unknown():
        km = KernelModule("sm_90a")
        info = build_l2_prefetch(km, cfg)
        function = next(
            op
            for op in km.body.operations
            if op.operation.name == "gpu.func" and "tessera.reads_before_wait" in op.attributes
        )
        del function.attributes["tessera.reads_before_wait"]
    early = r"prefetches w0 before the kernel's griddepcontrol\.wait"
    with pytest.raises(KernelFault, match=early):
        run_kernel(km.module, info, {"w0": Buffer.of(np.zeros(32), "bf16", "w0")})


def test_a_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one range"):
        L2PrefetchConfig(())
    with pytest.raises(ValueError, match="positive multiple of 16"):
        L2PrefetchConfig((PrefetchRange("bf16", 0, 64),), chunk=24)
    with pytest.raises(ValueError, match="start >= 0 and length > 0"):
        PrefetchRange("bf16", 0, 0)


# -- the plan ----------------------------------------------------------------------------------

MIB = 1 << 20


def _step(kernel: str, *weights: str) -> KernelLaunch:
    args = (*(ArgRef("weight", w) for w in weights), ArgRef("buffer", "x"))
    return KernelLaunch("kernels", kernel, ("1", "1", "1"), (32, 1, 1), "0", args)


def _layer(i: int) -> list[KernelLaunch]:
    """A decode layer's launches as the plan makes them: the norm's small weight, the q/k/v
    GEMV, the latency-bound attention, o, the norm, the gated and the down GEMV."""
    return [
        _step("norm", f"n{i}"),
        _step("qkv", f"q{i}", f"k{i}", f"v{i}"),
        _step("rope_append"),
        _step("attention"),
        _step("o", f"o{i}"),
        _step("norm", f"m{i}"),
        _step("gated", f"gate{i}", f"up{i}"),
        _step("down", f"down{i}"),
    ]


WEIGHTS = {
    **{f"n{i}": Weight("bf16", 4096) for i in range(2)},
    **{f"m{i}": Weight("bf16", 4096) for i in range(2)},
    **{f"q{i}": Weight("bf16", 8 * MIB) for i in range(2)},
    **{f"k{i}": Weight("bf16", 1 * MIB) for i in range(2)},
    **{f"v{i}": Weight("bf16", 1 * MIB) for i in range(2)},
    **{f"o{i}": Weight("bf16", 8 * MIB) for i in range(2)},
    **{f"gate{i}": Weight("bf16", 64 * MIB) for i in range(2)},
    **{f"up{i}": Weight("bf16", 64 * MIB) for i in range(2)},
    **{f"down{i}": Weight("bf16", 64 * MIB) for i in range(2)},
    "embed": Weight("bf16", 500 * MIB),
}


def test_prefetch_points_open_the_latency_bound_stretches() -> None:
    """A point is a launch with no large weight after one with, opening a stretch of at least
    two such launches: the attention's prologue (a lone norm between GEMVs is none). At each,
    the weights the next launches read, in order, within the budget less what is unread."""
    steps = [
        _step("lookup", "embed"),
        *_layer(0),
        *_layer(1),
        _step("norm", "f"),
        _step("head", "embed"),
    ]
    weights = {**WEIGHTS, "f": Weight("bf16", 4096)}
    points = prefetch_plan(steps, weights, 24 * MIB)
    assert sorted(points) == [3, 11]
    assert {steps[p].kernel for p in points} == {"rope_append"}
    # o whole (8 MiB), then the same share of gate and up: 8 MiB each.
    for point, layer in ((3, 0), (11, 1)):
        assert points[point] == [
            (f"o{layer}", 0, 8 * MIB),
            (f"gate{layer}", 0, 8 * MIB),
            (f"up{layer}", 0, 8 * MIB),
        ]


def test_prefixes_continue_where_the_last_point_stopped() -> None:
    """Two stretches before a weight is read: the second asks for the bytes after the first's,
    within the room the first's unread bytes leave."""
    steps = [
        _step("qkv", "q0"),
        _step("rope_append"),
        _step("attention"),
        _step("o", "o0"),
        _step("rope_append"),
        _step("attention"),
        _step("gated", "gate0", "up0"),
    ]
    points = prefetch_plan(steps, WEIGHTS, 24 * MIB)
    assert points[1] == [("o0", 0, 8 * MIB), ("gate0", 0, 8 * MIB), ("up0", 0, 8 * MIB)]
    # o0 read: 16 MiB unread, 8 free.
    assert points[4] == [("gate0", 8 * MIB, 4 * MIB), ("up0", 8 * MIB, 4 * MIB)]


def test_a_launch_read_twice_is_asked_for_once() -> None:
    """The decode plan launches each GEMV once per row class (one of them with an empty
    grid): the second launch of a weight adds no request."""
    steps = [
        _step("qkv", "q0"),
        _step("rope_append"),
        _step("attention"),
        _step("o", "o0"),
        _step("o8", "o0"),
    ]
    points = prefetch_plan(steps, WEIGHTS, 64 * MIB)
    assert points == {1: [("o0", 0, 8 * MIB)]}


def test_a_budget_smaller_than_a_granule_asks_for_nothing() -> None:
    assert prefetch_plan(_layer(0), WEIGHTS, 8) == {}


# -- the compiled program ----------------------------------------------------------------------


def _with_prefetch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, entry: dict[str, int] | None
) -> None:
    """A user tuning table holding ``entry`` as the prefetch's (None: no entry), and every
    weight of the tiny models taken for a large one."""
    table = tmp_path / "tuning" / "sm_90.json"
    table.parent.mkdir(exist_ok=True)
    entries = {weight_prefetch.L2_PREFETCH_KEY: entry} if entry else {}
    for arch in ("sm_90", "sm_90a", "sm_80"):
        (table.parent / f"{arch}.json").write_text(
            tuning.table_json(arch, "a card", "2026-12-08", "abc", entries)
        )
    monkeypatch.setenv(tuning.USER_ENV, str(table.parent))
    monkeypatch.setattr(weight_prefetch, "LARGE_WEIGHT_BYTES", 1)


def _prefetches(compiled: tessera.CompiledModel, program: str) -> list[KernelLaunch]:
    steps = compiled.manifest.program(program).steps
    return [s for s in steps if s.kernel.startswith("tessera_l2_prefetch")]


def test_only_decode_programs_on_sm90_take_prefetches(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = tiny_gemma("gemma2-gqa", dtype=torch.bfloat16)
    _with_prefetch(monkeypatch, tmp_path, {"budget_kib": 1024, "chunk_kib": 1})
    compiled = tessera.compile(model, target="cuda:sm_90a")
    for program in (kv_layout.DECODE_PROGRAM, kv_layout.GREEDY_DECODE_PROGRAM):
        launches = _prefetches(compiled, program)
        assert launches, program
        assert all(a.kind == "weight" for s in launches for a in s.args)
    assert not _prefetches(compiled, kv_layout.PREFILL_PROGRAM)
    ptx = compiled.ir("ptx")
    assert "cp.async.bulk.prefetch.L2.global" in ptx
    data = json.loads((compiled.directory / "manifest.json").read_text())
    assert any("l2_prefetch" in s["kernel"] for s in data["programs"]["decode"]["steps"])

    older = tessera.compile(model, target="cuda:sm_80")
    assert "cp.async.bulk.prefetch" not in older.ir("ptx")
    _with_prefetch(monkeypatch, tmp_path, None)
    plain = tessera.compile(model, target="cuda:sm_90a")
    assert not _prefetches(plain, kv_layout.DECODE_PROGRAM)
    assert "cp.async.bulk.prefetch" not in plain.ir("ptx")


@functools.cache
def _emulated_with_prefetch(name: str) -> tuple[torch.nn.Module, object, int]:
    from emulated_program import Emulated
    from test_generate_support import DTYPES, varied

    model = tiny_gemma(name, dtype=DTYPES["f32"])
    varied(model)
    directory = tessera.compile(model, target="cuda:sm_90").directory
    manifest = tessera.runtime.read_manifest(directory)
    prefill = Emulated.load(directory, kv_layout.PREFILL_PROGRAM)
    prefill.bind(dict(model.state_dict()))
    programs = {kv_layout.PREFILL_PROGRAM: prefill}
    programs[kv_layout.DECODE_PROGRAM] = prefill.share(kv_layout.DECODE_PROGRAM)
    count = sum(
        s.kernel.startswith("tessera_l2_prefetch")
        for s in manifest.program(kv_layout.DECODE_PROGRAM).steps
    )
    return model, dataclasses.replace(cached_programs(manifest, programs), device="cpu"), count


def test_generation_with_prefetches_equals_transformers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The decode step with its prefetches, every launch interpreted (each request checked in
    bounds, aligned and of a weight): greedy tokens equal transformers'."""
    _with_prefetch(monkeypatch, tmp_path, {"budget_kib": 8, "chunk_kib": 1})
    from test_generate_support import left_padded

    model, programs, count = _emulated_with_prefetch("gemma2-gqa")
    assert count >= 2
    ids, mask = left_padded([9], model.config.vocab_size, seeds.generator())
    steps = list(decode_steps(programs, ids, mask.bool(), _greedy(4)))  # type: ignore[arg-type]
    ours = torch.cat([ids, torch.stack([s.tokens for s in steps], dim=1)], dim=1)
    assert torch.equal(ours, transformers_greedy(model, ids, mask, 4))


def test_an_entry_without_a_budget_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _with_prefetch(monkeypatch, tmp_path, {"chunk_kib": 4})
    with pytest.raises(LoweringError, match=r"decode/l2_prefetch .*sm_90a\.json.*no budget_kib"):
        tessera.compile(tiny_gemma("gemma2-gqa", dtype=torch.bfloat16), target="cuda:sm_90a")
