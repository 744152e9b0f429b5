"""Session-wide test settings: compiled artifacts go to a fresh temporary cache, never to the
user's ``~/.cache/tessera``; every random input is seeded (``seeds.py``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
import seeds


def pytest_report_header() -> str:
    return f"{seeds.SEED_VARIABLE}={seeds.session_seed()} (seeds every random test input)"


@pytest.fixture(autouse=True, scope="session")
def private_compile_cache() -> Iterator[str]:
    previous = os.environ.get("TESSERA_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="tessera-test-cache-") as directory:
        os.environ["TESSERA_CACHE_DIR"] = directory
        yield directory
    if previous is None:
        os.environ.pop("TESSERA_CACHE_DIR", None)
    else:
        os.environ["TESSERA_CACHE_DIR"] = previous


@pytest.fixture(autouse=True, scope="module")
def seeded_module(request: pytest.FixtureRequest) -> None:
    """Module-scoped fixtures (built before any test's own seeding) draw from the module's
    seed, not from whatever state the previous module left."""
    seeds.begin(request.node.nodeid)


@pytest.fixture(autouse=True)
def seeded_test(request: pytest.FixtureRequest) -> None:
    seed = seeds.begin(request.node.nodeid)
    # Shown with a failure's captured output: what reproduces this test's inputs.
    print(f"{seeds.SEED_VARIABLE}={seeds.session_seed()} (this test's seed {seed})")
