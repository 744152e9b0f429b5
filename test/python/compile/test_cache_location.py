"""Where the compile cache lives: TESSERA_CACHE_DIR, else platformdirs' user cache folder,
which follows the XDG rules (an empty or relative XDG_CACHE_HOME never puts the cache in the
current folder)."""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs
import pytest

from tessera import knobs


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home and working folder, no TESSERA_CACHE_DIR (the test session sets one)."""
    folder = tmp_path / "home"
    folder.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.delenv("TESSERA_CACHE_DIR", raising=False)
    monkeypatch.chdir(work)
    return folder


def test_the_default_is_platformdirs_user_cache_folder(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    expected = Path(platformdirs.user_cache_dir("tessera", appauthor=False))
    assert knobs.cache_dir() == expected
    assert expected.is_absolute() and home in expected.parents


@pytest.mark.parametrize("value", ["", "   ", "relative/cache"])
def test_an_empty_or_relative_xdg_cache_home_is_ignored(
    home: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    folder = knobs.cache_dir()
    assert folder.is_absolute()
    assert Path.cwd() not in (folder, *folder.parents)
    assert home in folder.parents


def test_an_absolute_xdg_cache_home_is_used_on_linux(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG_CACHE_HOME is Linux's")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert knobs.cache_dir() == tmp_path / "xdg" / "tessera"


def test_tessera_cache_dir_overrides_everything(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path / "mine"))
    assert knobs.cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("TESSERA_CACHE_DIR", "~/cache")
    assert knobs.cache_dir() == home / "cache"
    # Empty means unset, as for every other knob.
    monkeypatch.setenv("TESSERA_CACHE_DIR", "")
    assert knobs.cache_dir() == tmp_path / "xdg" / "tessera"
