"""bench/decode.py's own code path, run on the CPU (``--smoke``): the generation loop timed
step by step, transformers' generate timed the same way, the bandwidth bound, and a results
file in the format every benchmark writes (device, date, commit, rows with same-run peers)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "decode.py"


def _bench_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_decode", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_writes_the_results_format(tmp_path: Path) -> None:
    out = tmp_path / "decode.json"
    assert _bench_module().main(["--smoke", "--out", str(out), "--new-tokens", "3"]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"device", "date", "commit", "rows"}
    (row,) = result["rows"]
    assert row["bench"] == "decode" and row["case"].startswith("tiny gemma2-gqa B2 P12 N3")
    for key in (
        "tessera_ms",
        "tessera_first_step_ms",
        "tessera_tokens_per_s",
        "bound_tokens_per_s",
        "fraction_of_bound",
    ):
        assert math.isfinite(row[key]) and row[key] > 0, key
    (peer,) = row["peers"]
    assert peer["name"].startswith("transformers generate") and peer["tokens_per_s"] > 0


def test_fewer_than_three_new_tokens_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        _bench_module().main(["--smoke", "--out", str(tmp_path / "x.json"), "--new-tokens", "2"])
    assert raised.value.code == 2


def test_another_build_of_the_model_is_timed_as_a_peer_of_its_rows() -> None:
    """A variant build (bench/gpu_build.py --prefetch-kib) is a peer of the model's row, with
    its own fraction of the bound, timed in the same case."""
    import tessera
    from tessera.models.tiny import tiny_gemma

    bench = _bench_module()
    model = tiny_gemma("gemma2-gqa")
    programs = bench.loaded_programs(tessera.compile(model).directory, model, graphs=False)
    rate = bench.copy_rate("cpu")
    row = bench.bench_case(
        "tiny", model, programs, 1, 8, 3, "cpu", rate, None, [("a variant", programs)]
    )
    variant = next(p for p in row["peers"] if p["name"] == "tessera, a variant")
    assert variant["tokens_per_s"] > 0 and 0 < variant["fraction_of_bound"]
    assert row["peers"][-1]["name"].startswith("transformers generate")
