"""The main job: compile a Gemma model, run it, check it against PyTorch, measure it.

The target is the GPU where a CUDA device and ptxas are found, else the CPU (``--target``
chooses; the choice is printed).

    python examples/run_gemma.py                          # built-in tiny Gemma 2
    python examples/run_gemma.py --model gemma3-gqa --dtype bfloat16
    python examples/run_gemma.py --checkpoint path/to/hf-gemma-folder

Exits with status 1 when the compiled logits, or the greedily generated tokens, do not match
PyTorch's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import tessera
from tessera.models.tiny import CONFIGS, DEFAULT, tiny_gemma

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-2}


def median_seconds(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_generation(
    model: torch.nn.Module, compiled: tessera.CompiledModel, ids: torch.Tensor, new_tokens: int
) -> bool:
    """Greedy generation from a left-padded batch (the first prompt shortened by a third),
    against transformers' generate; prints the decode speed. In bf16 a rounding may turn a
    near tie the other way, so only f32 requires identical tokens."""
    mask = torch.ones_like(ids)
    mask[0, : ids.shape[1] // 3] = 0
    prompts = ids.masked_fill(mask == 0, 0)
    with torch.no_grad():
        reference = model.generate(
            prompts.to(model.device),
            attention_mask=mask.to(model.device),
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        ).cpu()
    start = time.perf_counter()
    ours = compiled.generate(prompts, new_tokens, attention_mask=mask, eos_token_id=None)
    seconds = time.perf_counter() - start
    same = bool(torch.equal(ours, reference))
    rows = int((ours == reference).all(dim=1).sum())
    print(
        f"greedy generation (batch {ids.shape[0]}, left padded, {new_tokens} new tokens) vs "
        f"transformers' generate: {rows}/{ids.shape[0]} sequences identical; "
        f"{ids.shape[0] * new_tokens / seconds:,.0f} tok/s including the prefill"
    )
    return same or next(model.parameters()).dtype != torch.float32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a Hugging Face Gemma checkpoint folder")
    parser.add_argument(
        "--model",
        default=DEFAULT,
        choices=sorted(CONFIGS),
        help="built-in tiny model (when no checkpoint is given)",
    )
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=32, help="prompt length for the checks")
    parser.add_argument("--bench-seq", type=int, default=128, help="prompt length for timing")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens to generate")
    parser.add_argument("--target", default="auto", help="auto, cpu, cuda, cuda:sm_80, ...")
    args = parser.parse_args()
    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]

    if args.checkpoint:
        from tessera.checkpoints import load_hf_checkpoint

        model = load_hf_checkpoint(args.checkpoint, dtype=dtype)
        source = args.checkpoint
    else:
        model = tiny_gemma(args.model, dtype=dtype)
        source = f"built-in tiny '{args.model}' (seeded random weights)"
    config = model.config
    print(
        f"model: {source}, {type(model).__name__}, {args.dtype}, "
        f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"vocab {config.vocab_size}"
    )

    compiled = tessera.compile(model, target=args.target)
    state = "cache hit" if compiled.cache_hit else "compiled"
    print(
        f"{state} for {compiled.target} in {compiled.compile_seconds:.1f} s -> {compiled.directory}"
    )
    on_gpu = compiled.target.startswith("cuda")
    if on_gpu:
        model = model.cuda()
    print(
        "fused ops: "
        + ", ".join(f"{name} x{count}" for name, count in compiled.fused_ops().items())
    )

    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq))
    with torch.no_grad():
        reference = model(ids.to(model.device), use_cache=False).logits.cpu()
    logits = compiled(ids).logits.cpu()
    error = ((logits.double() - reference.double()).norm() / reference.double().norm()).item()
    same = (logits.argmax(-1) == reference.argmax(-1)).sum().item()
    ok = error <= TOLERANCE[dtype] and bool(torch.isfinite(logits).all())
    print(
        f"parity vs PyTorch (batch {args.batch}, seq {args.seq}): relative error {error:.2e} "
        f"({'ok' if ok else 'FAILED'}, tolerance {TOLERANCE[dtype]:.0e}), greedy tokens "
        f"{same}/{ids.numel()} identical"
    )

    if "decode" in {p.name for p in compiled.manifest.programs}:
        ok = check_generation(model, compiled, ids, args.new_tokens) and ok
    else:
        print(f"generation: target {compiled.target} has no decode program yet")

    bench_ids = torch.randint(0, config.vocab_size, (1, args.bench_seq)).to(model.device)

    def synchronized(run):  # type: ignore[no-untyped-def]
        def timed() -> None:
            run()
            if on_gpu:
                torch.cuda.synchronize()

        return timed

    with torch.no_grad():
        eager = median_seconds(
            synchronized(lambda: model(bench_ids, use_cache=False)), args.repeats
        )
    ours = median_seconds(synchronized(lambda: compiled(bench_ids)), args.repeats)
    tokens = bench_ids.numel()
    print(
        f"prefill (batch 1, seq {args.bench_seq}, median of {args.repeats}): tessera "
        f"{tokens / ours:,.0f} tok/s, PyTorch eager {tokens / eager:,.0f} tok/s "
        f"({eager / ours:.2f}x)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
