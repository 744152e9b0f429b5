"""Session-wide test settings: compiled artifacts go to a fresh temporary cache, never to the
user's ``~/.cache/tessera``."""

from __future__ import annotations

import os
import tempfile

import pytest


@pytest.fixture(autouse=True, scope="session")
def private_compile_cache() -> object:
    previous = os.environ.get("TESSERA_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="tessera-test-cache-") as directory:
        os.environ["TESSERA_CACHE_DIR"] = directory
        yield directory
    if previous is None:
        os.environ.pop("TESSERA_CACHE_DIR", None)
    else:
        os.environ["TESSERA_CACHE_DIR"] = previous
