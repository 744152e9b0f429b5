"""``tessera bench MODEL``: compile a model and time it on its target.

MODEL is what ``tessera compile`` and ``tessera generate`` take, loaded by the same function
(``cli_compile.load_model``) and compiled the same way (cached). The command then measures, on
the target it compiled for:

- the compile: ``CompiledModel.compile_seconds``, and whether the compile cache served it;
- prefill: one call of the compiled model on a B x P batch of token ids drawn from a fixed
  seed (the same ids every run, so that runs compare);
- generate: ``CompiledModel.generate`` from that batch, greedy and with no end token, so that
  every row gets exactly N new tokens: the prompt's prefill, then a decode step per token;
- decode throughput, derived from the two: B * N / (generate - prefill) tokens per second.
  Generate's own prefill runs the cache programs rather than the plain call, so this is an
  estimate, and it is printed with its derivation;
- the KV cache that generation allocates, ``CompiledModel.cache_memory(B, P + N)``.

Times are medians of ``--repeat`` runs after one warm-up run. On a GPU target the device is
synchronized before each reading of the clock: kernels run asynchronously, and without it the
clock would time the launches. Generation's limits (the longest sequence the model was
compiled for) are the library's: its error is the command's.

``--json PATH`` writes the figures in the format of the repository's benchmarks
(``bench/cpu.py``, ``bench/results/``): device, date, commit and a row per measurement with an
empty list of peers, since nothing else runs in the same process to compare with.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_compile import DTYPES, TINY_PREFIX, _positive, load_model
from .errors import TesseraError

if TYPE_CHECKING:
    import torch

    import tessera

# The token ids of the prompt come from this seed: every run times the same batch.
SEED = 0
MIB = 1 << 20
# How the decode throughput is worked out, printed under the table and kept in the JSON.
DERIVATION = "decode tokens/s = batch x new tokens / (generate time - prefill time)"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .models.tiny import CONFIGS

    parser = subparsers.add_parser(
        "bench",
        help="time a model's compile, prefill and generation on a target",
        description=(
            "Compile a model (cached, as `tessera compile` does) and time it on the target: "
            "the compile, the prefill of a batch of seeded random token ids, greedy generation "
            "(CompiledModel.generate) and the decode throughput derived from the two, and the "
            "KV cache that generation allocates. Times are medians of --repeat runs after a "
            "warm-up."
        ),
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help=(
            "a Hugging Face checkpoint folder, a Hub id in the local cache, or tiny:<name> for "
            "a built-in tiny model with seeded random weights "
            f"({', '.join(TINY_PREFIX + name for name in sorted(CONFIGS))})"
        ),
    )
    parser.add_argument(
        "--target",
        "-t",
        default="cpu",
        metavar="T",
        help="the target to compile for and time on (as for tessera compile; default: cpu; "
        "the cuda and rocm targets build the generation programs too)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="the weights' dtype (auto: a checkpoint's own; float32 for tiny models)",
    )
    parser.add_argument(
        "--batch", type=_positive, default=1, metavar="B", help="sequences (default: 1)"
    )
    parser.add_argument(
        "--prompt-length",
        type=_positive,
        default=128,
        metavar="P",
        help="tokens of each prompt (default: 128)",
    )
    parser.add_argument(
        "--new-tokens",
        "-n",
        type=_positive,
        default=32,
        metavar="N",
        help="tokens generated after each prompt (default: 32)",
    )
    parser.add_argument(
        "--repeat",
        type=_positive,
        default=5,
        metavar="R",
        help="timed runs of each measurement, after one warm-up; the median is reported "
        "(default: 5)",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        help="also write the figures to PATH in the format of bench/results/*.json",
    )
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Figures:
    """What one run of the command measured, and what is derived from it."""

    model: str
    target: str
    dtype: str
    batch: int
    prompt_length: int
    new_tokens: int
    repeat: int
    compile_seconds: float
    cache_hit: bool
    prefill_seconds: float
    generate_seconds: float
    cache_memory_bytes: int

    @property
    def decode_seconds(self) -> float:
        """Generate's time beyond the prompt's prefill: its N decode steps, estimated."""
        return self.generate_seconds - self.prefill_seconds

    @property
    def decode_tokens_per_second(self) -> float | None:
        """B * N / (generate - prefill); None when generate took no longer than the prefill
        (a decode too short for the clock), where no rate can be derived."""
        if self.decode_seconds <= 0:
            return None
        return self.batch * self.new_tokens / self.decode_seconds

    @property
    def case(self) -> str:
        """The case, as the benchmark rows name theirs: model, target, dtype and sizes."""
        return (
            f"{self.model} {self.target} {self.dtype} B{self.batch} P{self.prompt_length} "
            f"N{self.new_tokens}"
        )

    def rows(self) -> list[dict[str, Any]]:
        """The measurements as rows of the benchmark format. The decode row's ``tessera_ms`` is
        one decode step (a token for every row), as in ``bench/cpu.py``; it is absent when no
        rate can be derived."""
        rows: list[dict[str, Any]] = [
            {
                "bench": "compile",
                "case": self.case,
                "tessera_ms": self.compile_seconds * 1e3,
                "cache_hit": self.cache_hit,
                "peers": [],
            },
            {
                "bench": "prefill",
                "case": self.case,
                "tessera_ms": self.prefill_seconds * 1e3,
                "peers": [],
            },
            {
                "bench": "generate",
                "case": self.case,
                "tessera_ms": self.generate_seconds * 1e3,
                "peers": [],
            },
        ]
        rate = self.decode_tokens_per_second
        if rate is not None:
            rows.append(
                {
                    "bench": "decode",
                    "case": self.case,
                    "tessera_ms": self.decode_seconds / self.new_tokens * 1e3,
                    "tokens_per_s": rate,
                    "peers": [],
                }
            )
        return rows

    def detail(self) -> dict[str, Any]:
        """Every figure, the derived ones included, for the JSON's ``detail``."""
        return {
            **asdict(self),
            "decode_seconds": self.decode_seconds,
            "decode_tokens_per_s": self.decode_tokens_per_second,
            "cache_memory_mib": self.cache_memory_bytes / MIB,
            "derivation": DERIVATION,
        }

    def table(self, device: str) -> str:
        """The figures for a reader: a line of context, one per measurement, and how the decode
        rate was worked out."""
        prefill_ms = self.prefill_seconds * 1e3
        generate_ms = self.generate_seconds * 1e3
        how = "cache hit" if self.cache_hit else "built: not in the compile cache"
        rate = self.decode_tokens_per_second
        if rate is None:
            decode = "n/a (generate took no longer than the prefill)"
        else:
            decode = (
                f"{rate:.1f} tokens/s  = {self.batch} x {self.new_tokens} tokens / "
                f"({generate_ms:.3f} - {prefill_ms:.3f}) ms"
            )
        total = self.prompt_length + self.new_tokens
        lines = [
            f"{self.model} on {self.target} ({device}), weights {self.dtype}",
            f"batch {self.batch}, prompt {self.prompt_length} tokens, {self.new_tokens} new "
            f"tokens; times are medians of {self.repeat} runs after a warm-up",
            f"  {'compile':<10}{self.compile_seconds:.3f} s ({how})",
            f"  {'prefill':<10}{prefill_ms:.3f} ms  (one call on {self.batch} x "
            f"{self.prompt_length} token ids)",
            f"  {'generate':<10}{generate_ms:.3f} ms  (CompiledModel.generate, greedy: prefill "
            f"and {self.new_tokens} new tokens)",
            f"  {'decode':<10}{decode}",
            f"  {'KV cache':<10}{self.cache_memory_bytes / MIB:.3f} MiB  (cache_memory("
            f"{self.batch}, {total}))",
            f"{DERIVATION} (an estimate: generate prefills through the cache programs)",
        ]
        return "\n".join(lines)


def synchronizer(target_kind: str) -> Callable[[], None]:
    """What waits for the device's queued work before the clock is read: ``torch.cuda``'s
    synchronize on a GPU target (ROCm builds of torch name the AMD GPU "cuda" too), nothing on
    the CPU or where no GPU is visible (the calls then fail with their own error)."""
    import torch

    if target_kind != "cpu" and torch.cuda.is_available():
        return torch.cuda.synchronize
    return lambda: None


def median_seconds(work: Callable[[], object], repeat: int, sync: Callable[[], None]) -> float:
    """The median wall time of ``repeat`` runs of ``work`` after one warm-up run (which also
    raises whatever ``work`` raises before anything is timed), ``sync`` called before each
    reading of the clock."""
    work()
    sync()
    samples = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        work()
        sync()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def prompt_ids(compiled: tessera.CompiledModel, batch: int, length: int) -> torch.Tensor:
    """A ``batch`` x ``length`` batch of token ids drawn from ``SEED`` within the vocabulary
    (the range the compiled prefill program accepts), on the host as a caller's ids are."""
    import torch

    spec = next(s for s in compiled.manifest.program("prefill").inputs if s.name == "input_ids")
    # Every compiled model bounds its token ids (they index the embedding table); 0 alone is
    # a valid id should one not.
    low, high = spec.range or (0, 1)
    generator = torch.Generator().manual_seed(SEED)
    return torch.randint(low, high, (batch, length), generator=generator, dtype=torch.int64)


def weights_dtype(compiled: tessera.CompiledModel) -> str:
    """The dtype most of the weights have, as the artifact records it (what --dtype auto
    resolved to)."""
    counts = Counter(w.dtype for w in compiled.manifest.program("prefill").weights)
    return counts.most_common(1)[0][0] if counts else "none"


def measure(compiled: tessera.CompiledModel, args: argparse.Namespace) -> Figures:
    """Times the compiled model as the module's docstring describes."""
    import torch

    batch, length, new = args.batch, args.prompt_length, args.new_tokens
    ids = prompt_ids(compiled, batch, length)
    sync = synchronizer(compiled.manifest.target.kind)

    def generate() -> None:
        sequences = compiled.generate(ids, new, eos_token_id=None)
        assert isinstance(sequences, torch.Tensor)
        # The rate counts N tokens a row: with no end token, generation cannot stop early.
        assert sequences.shape == (batch, length + new), sequences.shape

    # Generation first: its warm-up raises the library's errors (a sequence longer than the
    # model was compiled for, no cache programs on this target) before anything is timed.
    generate_seconds = median_seconds(generate, args.repeat, sync)
    prefill_seconds = median_seconds(lambda: compiled(ids), args.repeat, sync)
    return Figures(
        model=args.model,
        target=compiled.target,
        dtype=weights_dtype(compiled),
        batch=batch,
        prompt_length=length,
        new_tokens=new,
        repeat=args.repeat,
        compile_seconds=compiled.compile_seconds,
        cache_hit=compiled.cache_hit,
        prefill_seconds=prefill_seconds,
        generate_seconds=generate_seconds,
        cache_memory_bytes=compiled.cache_memory(batch, length + new),
    )


def device_description(target_kind: str) -> str:
    """The device the figures come from: the GPU's name on a GPU target, else the CPU's model
    name and core count (from /proc/cpuinfo where there is one)."""
    import torch

    if target_kind != "cpu":
        if torch.cuda.is_available():
            return torch.cuda.get_device_name()
        return f"{target_kind} (no GPU visible)"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as stream:
            for line in stream:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def source_commit() -> str:
    """The commit of the Tessera sources that ran, when they are a git checkout's (an editable
    install: the package folder sits at the checkout's top); "unknown" otherwise, rather than
    the commit of whatever checkout an installed copy happens to lie in."""
    package = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "--short", "HEAD"],
            cwd=package,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != package.parent:
        return "unknown"
    return lines[1]


def results(figures: Figures, device: str) -> dict[str, Any]:
    """The JSON record: the format of bench/results/*.json, non-finite figures as null."""
    import torch

    record = {
        "device": device,
        "date": datetime.date.today().isoformat(),
        "commit": source_commit(),
        "torch_threads": torch.get_num_threads(),
        "rows": figures.rows(),
        "detail": [figures.detail()],
    }
    return _finite(record)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a figure is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _results_path(text: str) -> Path:
    """--json's file, checked before the compile and the timing, which take a while, rather
    than when the figures are written."""
    path = Path(text)
    if path.is_dir():
        raise TesseraError(f"--json {text}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise TesseraError(f"--json {text}: no folder {path.parent} to write it in")
    return path


def run(args: argparse.Namespace) -> int:
    import torch

    import tessera

    path = None if args.json is None else _results_path(args.json)
    model = load_model(args.model, args.dtype)
    # A tiny model is built in its dtype already; a checkpoint is read in it.
    dtype = None if isinstance(model, torch.nn.Module) else args.dtype
    compiled = tessera.compile(model, args.target, dtype=dtype)
    figures = measure(compiled, args)
    device = device_description(compiled.manifest.target.kind)
    print(figures.table(device), file=sys.stdout)
    if path is not None:
        text = json.dumps(results(figures, device), indent=2) + "\n"
        try:
            path.write_text(text)
        except OSError as problem:
            raise TesseraError(f"--json {args.json}: cannot write it: {problem.strerror}") from None
    return 0
