"""The per-kernel profile (``runtime/profile.py``) built from per-launch times: launches of one
kernel summed, each launch's median over the calls, shares of the call's total."""

from __future__ import annotations

import pytest

from tessera.errors import RuntimeInputError
from tessera.runtime.profile import KernelTime, format_profile, kernel_profile, timeline_profile

KERNELS = ["norm", "gemv", "attention", "norm", "gemv", "head"]


def test_launches_of_a_kernel_are_summed_from_their_medians() -> None:
    calls = [
        [1.0, 4.0, 2.0, 1.0, 4.0, 8.0],
        [1.0, 6.0, 2.0, 3.0, 4.0, 8.0],  # one slow gemv and one slow norm
        [1.0, 4.0, 2.0, 1.0, 4.0, 8.0],
    ]
    rows = kernel_profile(KERNELS, calls)
    assert [(r.kernel, r.launches, r.ms) for r in rows] == [
        ("gemv", 2, 8.0),
        ("head", 1, 8.0),
        ("attention", 1, 2.0),
        ("norm", 2, 2.0),
    ]
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    assert rows[0].share == pytest.approx(8.0 / 20.0)


def test_a_call_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(RuntimeInputError, match="call 1 timed 5 launches; the program has 6"):
        kernel_profile(KERNELS, [[1.0] * 6, [1.0] * 5])
    with pytest.raises(RuntimeInputError, match="at least one call"):
        kernel_profile(KERNELS, [])


def test_the_table_lists_each_kernel_and_the_total() -> None:
    text = format_profile([KernelTime("gemv", 2, 3.0, 0.75), KernelTime("norm", 1, 1.0, 0.25)])
    lines = text.splitlines()
    assert lines[1].split() == ["75.0%", "3.0000", "2", "gemv"]
    assert lines[-1].split() == ["4.0000", "3", "total"]
    assert KernelTime("gemv", 2, 3.0, 0.75).to_json() == {
        "kernel": "gemv",
        "launches": 2,
        "ms": 3.0,
        "share": 0.75,
    }


def test_a_timeline_splits_each_call_into_kernel_time_and_idle_time() -> None:
    # two calls of three launches, microseconds; the second call's gemv starts 2 us early
    # (programmatic launch) and waits for the norm, so only its time after the norm is its own
    spans = [
        ("norm", 0.0, 10.0),
        ("gemv", 14.0, 54.0),  # 4 us idle before it
        ("head", 54.0, 74.0),
        ("norm", 100.0, 110.0),
        ("gemv", 108.0, 148.0),
        ("head", 150.0, 170.0),  # 2 us idle before it
    ]
    timeline = timeline_profile(list(reversed(spans)), 3)
    assert [(r.kernel, r.ms) for r in timeline.rows] == [
        ("gemv", pytest.approx(0.039)),  # median of 40 and 38 us
        ("head", pytest.approx(0.020)),
        ("norm", pytest.approx(0.010)),
    ]
    assert timeline.wall_ms == pytest.approx(0.072)  # median of 74 and 70 us
    assert timeline.idle_ms == pytest.approx(0.003)  # median of 4 and 2 us
    assert timeline.to_json()["kernels"][0]["kernel"] == "gemv"


def test_a_timeline_needs_whole_calls_of_the_same_kernels() -> None:
    with pytest.raises(RuntimeInputError, match="whole calls of 3 launches; got 4"):
        timeline_profile([("norm", 0.0, 1.0)] * 4, 3)
    with pytest.raises(RuntimeInputError, match="call 1 launched other kernels"):
        timeline_profile([("a", 0.0, 1.0), ("b", 1.0, 2.0), ("b", 3.0, 4.0), ("a", 4.0, 5.0)], 2)
