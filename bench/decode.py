"""Decode throughput: Tessera's generation against transformers' ``generate`` on the same card,
in the same process, same weights (seeded random, bf16), and as a fraction of the bandwidth
bound. Reads the artifacts of bench/gpu_build.py (their ``prefill_kv``, ``decode`` and
``decode_greedy`` programs; the same programs choosing from ``decode``'s logits are a peer, so
the fused head's gain shows); writes rows in the results format (bench/results/*.json:
device, date, commit, rows with the peers measured in the same run).

    python bench/decode.py build/bench --out results.json [--new-tokens 64]

Each case is a batch of B prompts of P random tokens, greedy, N new tokens, no end token.
Tessera's loop is timed step by step: its first decode step (token 2) captures the step's
CUDA graph, so it is reported apart (``tessera_first_step_ms``), and the rate counts the tokens
of steps 3..N (B·(N−2)) over the time from the second new token to the last. transformers'
``generate`` is timed whole, less one forward pass of the prompt, over the tokens of steps
2..N (B·(N−1)); its first steps' warm-up stays in its figure. The bound: the bytes one decode
step must read (every weight but the embedding rows it does not look up, and each layer's
cached keys and values) over the device-to-device copy rate measured in the same run (bytes
read plus written per second of a 1 GiB copy). A peer runs the same programs with every kernel
launched only once the one before it has ended (no programmatic launch), where the artifact
allows the early start (sm_90).

``--compiled-peer`` adds transformers with a static cache and its forward under torch.compile
(minutes of compiling). ``--smoke`` runs the same code on the CPU over a tiny model (compiled
here), to check it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from tessera import runtime
from tessera.models.tiny import tiny_gemma
from tessera.runtime import kv_layout
from tessera.runtime.generate import CachedPrograms, Request, cached_programs, decode_steps
from tessera.runtime.sampling import Sampling

CASES = ((1, 128), (1, 2048), (8, 128), (8, 2048))
REPEATS = 3


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def copy_rate(device: str) -> float:
    """Bytes moved (read + written) per second by a 1 GiB device copy (64 MiB on the CPU),
    best of five."""
    source = torch.empty(1 << (30 if device == "cuda" else 26), dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        started = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * source.numel() / best


def tessera_decode_seconds(
    programs: CachedPrograms, ids: torch.Tensor, new_tokens: int, device: str
) -> tuple[float, float]:
    """Seconds of one greedy generation's first decode step (token 2, which captures the
    step's CUDA graph) and of the steps after it (tokens 3..N)."""
    request = Request(new_tokens, Sampling(), None, frozenset(), pad_token_id=0)
    marks = []
    for index, _step in enumerate(decode_steps(programs, ids, None, request)):
        if index < 2:
            synchronize(device)
            marks.append(time.perf_counter())
    synchronize(device)
    marks.append(time.perf_counter())
    return marks[1] - marks[0], marks[2] - marks[1]


def transformers_decode_seconds(
    model: torch.nn.Module, ids: torch.Tensor, new_tokens: int, device: str, **options: object
) -> float:
    """Seconds of ``generate`` less one forward pass of the prompt (its prefill)."""
    ids = ids.to(device)
    with torch.no_grad():
        synchronize(device)
        started = time.perf_counter()
        model(ids)
        synchronize(device)
        prefill = time.perf_counter() - started
        started = time.perf_counter()
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            eos_token_id=None,
            pad_token_id=0,
            **options,
        )
        synchronize(device)
        return max(time.perf_counter() - started - prefill, 1e-9)


def median_seconds(run: Callable[[], float]) -> float:
    run()  # warm-up: kernels loaded, torch.compile's graphs built
    return statistics.median(run() for _ in range(REPEATS))


def median_steps(run: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    """The medians of ``run``'s (first step, later steps) seconds, after a warm-up run."""
    run()
    firsts, rests = zip(*(run() for _ in range(REPEATS)), strict=True)
    return statistics.median(firsts), statistics.median(rests)


def step_bytes(model: torch.nn.Module, batch: int, length: int) -> int:
    """Bytes one decode step must read: the weights (the embedding as the LM head reads it,
    once) and every layer's cached keys and values of ``batch`` sequences of ``length``."""
    config = model.config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    head_dim = getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    windows = _windows(config)
    cache = 0
    for window in windows:
        seen = length if window is None else min(length, window)
        cache += 2 * batch * seen * config.num_key_value_heads * head_dim * 2
    return weights + cache


def _windows(config: object) -> list[int | None]:
    """Each layer's sliding window (None: global)."""
    layers = int(config.num_hidden_layers)  # type: ignore[attr-defined]
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if types is None:
        return [None] * layers
    return [window if kind == "sliding_attention" else None for kind in types]


def bench_case(
    name: str,
    model: torch.nn.Module,
    programs: CachedPrograms,
    batch: int,
    length: int,
    new_tokens: int,
    device: str,
    rate: float,
    compiled_peer: torch.nn.Module | None = None,
    variants: Sequence[tuple[str, CachedPrograms]] = (),
) -> dict[str, object]:
    generator = torch.Generator().manual_seed(batch * 100003 + length)
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=generator)
    tokens = batch * (new_tokens - 1)  # transformers: steps 2..N
    steady = batch * (new_tokens - 2)  # Tessera: steps 3..N
    first, ours = median_steps(lambda: tessera_decode_seconds(programs, ids, new_tokens, device))
    peers = []
    if programs.greedy is not None:
        # The same programs choosing from the decode step's logits (the tail unfused).
        logits_path = dataclasses.replace(programs, greedy=None)
        _, unfused = median_steps(
            lambda: tessera_decode_seconds(logits_path, ids, new_tokens, device)
        )
        peers.append(
            {
                "name": "tessera, logits written and argmax by torch (no fused head)",
                "tokens_per_s": round(steady / unfused, 1),
            }
        )
    if _programmatic(programs):
        # The same programs with every kernel launched only once the one before it has ended.
        _set_programmatic(programs, False)
        try:
            _, serialized = median_steps(
                lambda: tessera_decode_seconds(programs, ids, new_tokens, device)
            )
        finally:
            _set_programmatic(programs, True)
        peers.append(
            {
                "name": "tessera, no programmatic launch (each kernel after the last ends)",
                "tokens_per_s": round(steady / serialized, 1),
            }
        )
    bound = rate / step_bytes(model, batch, length + new_tokens)
    for label, other in variants:
        # Another build of the same model (bench/gpu_build.py --prefetch-kib).
        _, theirs = median_steps(
            lambda other=other: tessera_decode_seconds(other, ids, new_tokens, device)
        )
        peers.append(
            {
                "name": f"tessera, {label}",
                "tokens_per_s": round(steady / theirs, 1),
                "fraction_of_bound": round(steady / theirs / (batch * bound), 4),
            }
        )
    eager = median_seconds(lambda: transformers_decode_seconds(model, ids, new_tokens, device))
    peers.append(
        {"name": "transformers generate (eager)", "tokens_per_s": round(tokens / eager, 1)}
    )
    if compiled_peer:
        # Static cache with the forward under torch.compile (compiled on its warm-up run).
        static = median_seconds(
            lambda: transformers_decode_seconds(
                compiled_peer, ids, new_tokens, device, cache_implementation="static"
            )
        )
        peers.append(
            {
                "name": "transformers generate (static cache, torch.compile)",
                "tokens_per_s": round(tokens / static, 1),
            }
        )
    dtype = str(model.dtype).removeprefix("torch.")
    row = {
        "bench": "decode",
        "case": f"{name} B{batch} P{length} N{new_tokens} {dtype}",
        "tessera_ms": round(1000 * ours / (new_tokens - 2), 4),
        "tessera_first_step_ms": round(1000 * first, 4),
        "tessera_tokens_per_s": round(steady / ours, 1),
        "bound_tokens_per_s": round(batch * bound, 1),
        "fraction_of_bound": round(steady / ours / (batch * bound), 4),
        "peers": peers,
    }
    print(json.dumps(row), flush=True)
    return row


def _launch_programs(programs: CachedPrograms) -> list[object]:
    """The kernel-launch programs behind the cache programs (a graphed one's inner program)."""
    found = []
    for program in (programs.prefill, programs.decode, programs.greedy):
        inner = getattr(program, "program", program)
        if hasattr(inner, "programmatic_launch"):
            found.append(inner)
    return found


def _programmatic(programs: CachedPrograms) -> bool:
    """Whether any launch of the programs may start before the one before it ends."""
    return any(
        step.programmatic and inner.programmatic_launch  # type: ignore[attr-defined]
        for inner in _launch_programs(programs)
        for step in inner.spec.steps  # type: ignore[attr-defined]
    )


def _set_programmatic(programs: CachedPrograms, on: bool) -> None:
    """Turns programmatic launch on or off (read when a call launches or a graph is captured:
    each generation captures its own graphs)."""
    for inner in _launch_programs(programs):
        inner.programmatic_launch = on  # type: ignore[attr-defined]


def loaded_programs(directory: Path, model: torch.nn.Module, graphs: bool) -> CachedPrograms:
    """The artifact's cache programs with ``model``'s weights bound (the decode steps, with
    logits and greedy, as CUDA graphs where ``graphs``)."""
    artifact = runtime.load(directory)
    artifact.bind(dict(model.state_dict()))
    programs: dict[str, object] = dict(artifact.programs)
    if graphs:
        from tessera.runtime.cuda_graph import GraphedProgram

        for name in (kv_layout.DECODE_PROGRAM, kv_layout.GREEDY_DECODE_PROGRAM):
            if name in artifact.programs:
                programs[name] = GraphedProgram(artifact.programs[name])  # type: ignore[arg-type]
    return cached_programs(artifact.manifest, programs)


def compiled_copy(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its forward under torch.compile (transformers' recipe for fast
    generate with a static cache); the weights are shared."""
    model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    return model


def gpu_runs(
    folder: Path, new_tokens: int, with_compiled: bool
) -> tuple[str, list[dict[str, object]]]:
    entries = json.loads((folder / "models.json").read_text())
    rate = copy_rate("cuda")
    rows = []
    for entry in entries:
        name = entry["name"]
        model = tiny_gemma(name, dtype=torch.bfloat16, attn_implementation="sdpa", device="cuda")
        programs = loaded_programs(folder / entry["folder"], model, graphs=True)
        variants = [
            (v["label"], loaded_programs(folder / v["folder"], model, graphs=True))
            for v in entry.get("variants", [])
        ]
        peer = None
        if with_compiled:
            peer = compiled_copy(
                tiny_gemma(name, dtype=torch.bfloat16, attn_implementation="sdpa", device="cuda")
            )
            peer.load_state_dict(model.state_dict())
        for batch, length in CASES:
            rows.append(
                bench_case(
                    name, model, programs, batch, length, new_tokens, "cuda", rate, peer, variants
                )
            )
        del model, programs, peer, variants
        torch.cuda.empty_cache()
    return torch.cuda.get_device_name(), rows


def smoke_runs(new_tokens: int) -> tuple[str, list[dict[str, object]]]:
    import tessera

    model = tiny_gemma("gemma2-gqa")
    programs = loaded_programs(tessera.compile(model).directory, model, graphs=False)
    rate = copy_rate("cpu")
    rows = [bench_case("tiny gemma2-gqa", model, programs, 2, 12, new_tokens, "cpu", rate)]
    return "cpu (smoke run)", rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path, nargs="?")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--commit", default="unknown", help="the commit the artifacts came from")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the CPU")
    parser.add_argument(
        "--compiled-peer",
        action="store_true",
        help="also time transformers with a static cache under torch.compile (slow to compile)",
    )
    args = parser.parse_args(argv)
    if args.new_tokens < 3:
        parser.error(
            "--new-tokens must be at least 3 (the rate is of decode steps 3..N: step 2 "
            "captures the CUDA graph)"
        )
    if args.smoke:
        device, rows = smoke_runs(args.new_tokens)
    elif args.artifacts is None:
        parser.error("give the artifacts folder (bench/gpu_build.py), or --smoke")
    else:
        device, rows = gpu_runs(args.artifacts, args.new_tokens, args.compiled_peer)
    result = {
        "device": device,
        "date": datetime.date.today().isoformat(),
        "commit": args.commit,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
