"""The seeded mutation fuzzer over the lit inputs (test/fuzz): its cases are reproducible, its
mutations all bite, and tessera-opt keeps its contract on a few hundred of them (``make fuzz``
runs thousands)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
sys.path.insert(0, str(FUZZ))

from fuzz_corpus import recipe, seeds  # noqa: E402
from fuzz_mutations import MUTATIONS, WEIGHTS, mutate  # noqa: E402
from fuzz_opt import make_case  # noqa: E402
from fuzz_runner import Outcome, verdict  # noqa: E402

CI_SEED, CI_CASES = 1, 300


def test_corpus_reads_every_lit_folder_and_its_run_lines() -> None:
    corpus = seeds()
    folders = {s.file.split("/")[0] for s in corpus}
    assert {"dialect", "lowering", "opt", "passes"} <= folders
    attention = [s for s in corpus if s.file == "passes/tessera-fuse-attention.mlir"]
    assert len(attention) > 5  # one seed per `// -----` chunk
    assert attention[0].recipes == (("-p", "builtin.module(tessera-fuse-attention)"),)
    assert all("// CHECK" not in s.text for s in corpus)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            "tessera-opt %s --split-input-file -p 'builtin.module(cse)' | filecheck %s",
            ("-p", "builtin.module(cse)"),
        ),
        ("not tessera-opt %s --canonicalize -o %t 2>&1", ("--canonicalize",)),
        ("cat %s | tessera-opt - | filecheck %s", None),
        ("tessera-opt --list-passes | filecheck %s", None),
    ],
)
def test_recipe_keeps_the_passes_and_drops_files_and_shell(
    command: str, expected: tuple[str, ...] | None
) -> None:
    assert recipe(command) == expected


def test_a_case_is_a_function_of_seed_and_index() -> None:
    corpus = seeds()
    first = make_case(CI_SEED, 17, corpus, [])
    again = make_case(CI_SEED, 17, corpus, [])
    assert (first.data, first.args, first.mutations) == (again.data, again.args, again.mutations)
    others = {make_case(CI_SEED, i, corpus, []).data for i in range(20)}
    assert len(others) > 15


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_every_mutation_changes_some_seed(name: str) -> None:
    corpus = seeds()
    donors = [line for s in corpus[:5] for line in s.text.splitlines()]
    rng = random.Random(f"test:{name}")
    changed = sum(MUTATIONS[name](s.text.encode(), rng, donors) != s.text.encode() for s in corpus)
    # Some mutations need a token few seeds have (true/false, an integer list).
    assert changed >= 3, f"{name} changed {changed} of {len(corpus)} seeds"


def test_mutate_draws_one_to_three_known_mutations() -> None:
    assert set(WEIGHTS) == set(MUTATIONS)
    rng = random.Random(0)
    for _ in range(50):
        _, applied = mutate(b"func.func @f() {\n  return\n}\n", rng)
        assert 1 <= len(applied) <= 3
        assert set(applied) <= set(MUTATIONS)


def outcome(status: int | None, stderr: str, signal: int | None = None) -> Outcome:
    return Outcome(status, signal, False, 0.1, 10.0, "", stderr)


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (outcome(1, "in.mlir:3:7: error: bad\n"), None),
        (outcome(0, ""), None),
        (outcome(0, "in.mlir:3:7: error: bad\n"), "exit 0 with an error"),
        (outcome(1, "loc(unknown): error: bad\n"), "error without a location"),
        (outcome(1, "in.mlir:0:0: error: bad\n"), "error without a location"),
        (outcome(1, "other.mlir:3:7: error: bad\n"), "error without a location"),
        (outcome(1, "tessera-opt: internal error: KeyError: 'x'\n"), "internal error"),
        (outcome(1, "Traceback (most recent call last):\n"), "python traceback"),
        (outcome(None, "", signal=11), "killed by SIGSEGV"),
        (outcome(2, "in.mlir:3:7: error: bad\n"), "exit status 2"),
    ],
)
def test_verdict_holds_tessera_opt_to_its_contract(result: Outcome, expected: str | None) -> None:
    assert verdict(result, "in.mlir") == expected


def test_tessera_opt_keeps_its_contract_on_fuzzed_lit_inputs(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            str(FUZZ / "fuzz_opt.py"),
            f"--seed={CI_SEED}",
            f"--cases={CI_CASES}",
            f"--keep={tmp_path / 'failing'}",
            f"--json={report_file}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert report_file.exists(), done.stdout + done.stderr
    report = json.loads(report_file.read_text())
    assert not report["failures"], done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["verdicts"] == {"ok": CI_CASES}
    # Cases must reach past the parser: some still run their passes to the end.
    assert report["exit_statuses"].get("exit 0", 0) > CI_CASES // 20, report["exit_statuses"]
    assert report["exit_statuses"].get("exit 1", 0) > CI_CASES // 2, report["exit_statuses"]
