"""Seeds for every random input the tests draw.

A run is reproducible: each test's inputs come from a seed derived from the session seed and
the test's id, so tests do not share a random stream and a test run alone draws what it draws
in the whole suite. The session seed is 0 unless ``TESSERA_TEST_SEED`` sets another; sweeping
it (``TESSERA_TEST_SEED=7 pytest test/python``) tries fresh inputs everywhere at once, which is
how a tolerance that only holds for some inputs is found. A failing test's captured output
names the seed that reproduces it.
"""

from __future__ import annotations

import hashlib
import os
import random

import numpy
import torch

SEED_VARIABLE = "TESSERA_TEST_SEED"

_state = {"scope": "", "drawn": 0}


def session_seed() -> int:
    """The session seed: ``TESSERA_TEST_SEED`` (an integer), else 0."""
    text = os.environ.get(SEED_VARIABLE, "0")
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{SEED_VARIABLE}={text!r} is not an integer") from None


def derive(*parts: object) -> int:
    """A 63-bit seed determined by ``parts`` (and nothing else: not Python's hash seed)."""
    text = "\0".join(str(p) for p in parts)
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def begin(scope: str) -> int:
    """Seeds the global generators (torch, random, numpy) for ``scope`` (a test or module id);
    later ``generator()`` calls draw fresh seeds from it. Returns the scope's seed."""
    seed = derive(session_seed(), scope)
    _state.update(scope=scope, drawn=0)
    torch.manual_seed(seed)
    random.seed(seed)
    numpy.random.seed(seed % 2**32)
    return seed


def generator() -> torch.Generator:
    """A torch generator for the current test, its seed distinct from any other drawn in the
    session and the same in every run with the same session seed."""
    _state["drawn"] = int(_state["drawn"]) + 1
    return torch.Generator().manual_seed(derive(session_seed(), _state["scope"], _state["drawn"]))
