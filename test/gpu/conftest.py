"""The GPU suite: runs on a machine with an NVIDIA GPU over artifacts compiled elsewhere
(``test/gpu/build_artifacts.py``); skipped where no GPU is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--artifacts", default="build/gpu", help="folder from build_artifacts.py")


@pytest.fixture(scope="session")
def artifacts(request: pytest.FixtureRequest) -> Path:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    folder = Path(request.config.getoption("--artifacts"))
    if not (folder / "models.json").is_file():
        pytest.skip(f"no artifacts in {folder} (run test/gpu/build_artifacts.py)")
    return folder
