"""Seeded mutation fuzzing of tessera-opt over the lit inputs.

    python test/fuzz/fuzz_opt.py --cases 300            # what CI runs (through pytest)
    python test/fuzz/fuzz_opt.py --cases 20000 --seed 7 --keep build/fuzz   # `make fuzz`
    python test/fuzz/fuzz_opt.py --seed 7 --case 1234 --keep build/fuzz-case  # one case again

Case ``i`` of seed ``s`` draws its chunk, its RUN-line arguments and its mutations from a
generator seeded with ``(s, i)`` alone, so any case is reproduced from those two numbers (and
the lit files of the same commit). A case fails when tessera-opt breaks the contract that
``fuzz_runner.verdict`` checks; failing inputs are written to ``--keep`` with the command that
replays them. Exit status: 0 when every case kept the contract, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_corpus import Seed, seeds
from fuzz_mutations import mutate
from fuzz_runner import Outcome, Running, prepare, verdict

# tessera-opt's diagnostic for a worker that MLIR killed (tessera_ir/opt_contain.py).
_CONTAINED = re.compile(r"error: .*(crashed: |crashed on this IR)")


@dataclass
class Case:
    index: int
    seed_file: str
    seed_chunk: int
    args: tuple[str, ...]
    mutations: list[str]
    data: bytes = field(repr=False)


@dataclass
class Failure:
    index: int
    verdict: str
    seed_file: str
    seed_chunk: int
    mutations: list[str]
    args: list[str]
    stderr_tail: str
    kept_as: str | None


@dataclass
class Report:
    seed: int
    cases: int
    seconds: float
    verdicts: dict[str, int]
    exit_statuses: dict[str, int]
    slowest_seconds: float
    max_rss_mib: float
    failures: list[Failure]
    # Cases that crashed MLIR and were contained (a located "... crashed" error): within the
    # contract, but each is an upstream crash class the pre-parse checks do not know yet.
    contained: list[Failure]


def make_case(seed: int, index: int, corpus: Sequence[Seed], donors: Sequence[str]) -> Case:
    """Case ``index`` of campaign ``seed``: a function of those two numbers and the corpus."""
    rng = random.Random(f"tessera-opt-fuzz:{seed}:{index}")
    origin = rng.choice(corpus)
    args = rng.choice(origin.recipes)
    data, applied = mutate(origin.text.encode(), rng, donors)
    return Case(index, origin.file, origin.chunk, args, applied, data)


def with_working_recipes(corpus: Sequence[Seed], scratch: Path, timeout: float) -> list[Seed]:
    """The corpus without the RUN-line arguments that fail whatever the input (the lit tests of
    tessera-opt's own usage errors: an unknown pass, a bad option): they would test nothing."""
    recipes = sorted({r for s in corpus for r in s.recipes})
    broken: set[tuple[str, ...]] = set()
    probe = scratch / "probe"
    probe.mkdir()
    (probe / "input.mlir").write_text("module {\n}\n")
    for args in recipes:
        outcome = Running([str(probe / "input.mlir"), *args], probe, timeout, None).wait()
        if "tessera-opt: error:" in outcome.stderr:
            broken.add(args)
    kept = [replace(s, recipes=tuple(r for r in s.recipes if r not in broken)) for s in corpus]
    return [s for s in kept if s.recipes]


def _donor_lines(corpus: Sequence[Seed]) -> list[str]:
    lines = {line for s in corpus for line in s.text.splitlines() if line.strip()}
    return sorted(lines)


def run_campaign(
    seed: int,
    indices: Sequence[int],
    jobs: int,
    timeout: float,
    memory_gib: float,
    keep: Path | None,
    progress: bool = False,
) -> Report:
    prepare()
    memory = int(memory_gib * 2**30) + _address_space_now()
    started = time.monotonic()
    verdicts: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    failures: list[Failure] = []
    contained: list[Failure] = []
    slowest, peak = 0.0, 0.0
    with tempfile.TemporaryDirectory(prefix="tessera-fuzz-") as scratch:
        corpus = with_working_recipes(seeds(), Path(scratch), timeout)
        donors = _donor_lines(corpus)
        pending = iter(indices)
        running: dict[int, tuple[Case, Path, Running]] = {}
        done = 0
        while True:
            while len(running) < jobs:
                index = next(pending, None)
                if index is None:
                    break
                case = make_case(seed, index, corpus, donors)
                workdir = Path(scratch) / str(index)
                workdir.mkdir()
                path = workdir / "input.mlir"
                path.write_bytes(case.data)
                argv = [str(path), *case.args]
                running[index] = (case, path, Running(argv, workdir, timeout, memory))
            if not running:
                break
            finished = [(i, r[2].poll()) for i, r in running.items()]
            ended = [(i, o) for i, o in finished if o is not None]
            if not ended:
                time.sleep(0.002)
                continue
            for index, outcome in ended:
                case, path, _ = running.pop(index)
                assert outcome is not None
                found = verdict(outcome, str(path))
                verdicts[found or "ok"] += 1
                statuses[_status(outcome)] += 1
                slowest = max(slowest, outcome.seconds)
                peak = max(peak, outcome.max_rss_mib)
                if found is not None:
                    failures.append(_failure(seed, case, found, outcome, keep))
                elif _CONTAINED.search(outcome.stderr):
                    contained.append(_failure(seed, case, "contained crash", outcome, keep))
                shutil.rmtree(path.parent, ignore_errors=True)
                done += 1
                if progress and done % 100 == 0:
                    print(f"  {done}/{len(indices)} cases, {len(failures)} failing", flush=True)
    return Report(
        seed=seed,
        cases=len(indices),
        seconds=round(time.monotonic() - started, 2),
        verdicts=dict(sorted(verdicts.items())),
        exit_statuses=dict(sorted(statuses.items())),
        slowest_seconds=round(slowest, 2),
        max_rss_mib=round(peak, 1),
        failures=sorted(failures, key=lambda f: f.index),
        contained=sorted(contained, key=lambda f: f.index),
    )


def _status(outcome: Outcome) -> str:
    if outcome.timed_out:
        return "timeout"
    if outcome.signal is not None:
        return f"signal {outcome.signal}"
    return f"exit {outcome.status}"


def _failure(seed: int, case: Case, found: str, outcome: Outcome, keep: Path | None) -> Failure:
    kept = None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        target = keep / f"seed{seed}-case{case.index}.mlir"
        target.write_bytes(case.data)
        kept = str(target)
    tail = "\n".join(outcome.stderr.strip().splitlines()[-6:])
    return Failure(
        case.index,
        found,
        case.seed_file,
        case.seed_chunk,
        case.mutations,
        list(case.args),
        tail,
        kept,
    )


def _address_space_now() -> int:
    """This process's virtual size: the memory cap is set on top of what is already mapped."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def describe(report: Report) -> Iterator[str]:
    yield (
        f"tessera-opt fuzz: seed {report.seed}, {report.cases} cases in {report.seconds} s "
        f"(slowest {report.slowest_seconds} s, peak {report.max_rss_mib} MiB)"
    )
    yield "  verdicts: " + ", ".join(f"{k} {v}" for k, v in report.verdicts.items())
    yield "  exits: " + ", ".join(f"{k} {v}" for k, v in report.exit_statuses.items())
    if report.contained:
        yield f"  contained crashes (no failure; see the replays): {len(report.contained)}"
    for failure in [*report.contained, *report.failures]:
        yield (
            f"{'NOTE' if failure.verdict == 'contained crash' else 'FAIL'} "
            f"case {failure.index}: {failure.verdict} "
            f"({failure.seed_file} chunk {failure.seed_chunk}, {'+'.join(failure.mutations)})"
        )
        replay = failure.kept_as or f"<--seed {report.seed} --case {failure.index} --keep DIR>"
        yield f"  replay: tessera-opt {shlex.join([replay, *failure.args])}"
        for line in failure.stderr_tail.splitlines():
            yield f"  | {line[:300]}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=300, help="cases 0 .. N-1")
    parser.add_argument("--case", type=int, action="append", help="run only this case (repeat)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--memory-gib", type=float, default=4.0, help="address space per case")
    parser.add_argument("--keep", type=Path, help="write failing inputs here")
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    indices = args.case or list(range(args.cases))
    report = run_campaign(
        args.seed, indices, args.jobs, args.timeout, args.memory_gib, args.keep, progress=True
    )
    for line in describe(report):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=1))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
