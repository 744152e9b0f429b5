"""The docs say only what resolves: every file they name exists, every ``tessera-*`` pass they
name is registered, and every Python snippet they show at least parses. The same holds for
the ``docs/*.md`` that source files cite."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import tessera.lowering
import tessera.passes  # noqa: F401  (registers the passes and pipelines)
from tessera.pass_registry import PASSES, PIPELINES

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
SOURCE_FOLDERS = ("tessera_ir", "dialects", "passes", "lowering", "runtime", "bench", "examples")
# `tessera-*` words that name no pass: the CLI itself.
TOOLS = {"tessera-opt"}

# A file or folder named in backquotes: `lowering/cpu/registry.py`, `registry.py`, `test/lit/`.
_FILE = re.compile(r"`([\w./*-]+\.(?:py|md|mlir|toml|txt|cfg)|[\w.-]+(?:/[\w.*-]+)*/)`")
# A pass or pipeline name, in backquotes or in a flag: `tessera-fuse-rope`, --tessera-dce.
_PASS = re.compile(r"(?<![\w/.-])-{0,2}(tessera-[a-z0-9]+(?:-[a-z0-9]+)*)(?![\w-]|\.\w)")
_PYTHON = re.compile(r"```python\n(.*?)```", re.S)


def _names(pattern: re.Pattern[str], text: str) -> list[str]:
    return sorted(set(pattern.findall(text)))


def _resolves(name: str) -> bool:
    """A path from the repository root (globs allowed), or a bare file or folder name (the
    docs name files relative to the section's folder) found anywhere in the repository."""
    path = name.rstrip("/")
    if "/" in path:
        return any(ROOT.glob(path))
    found = (p for p in ROOT.rglob(path) if ".venv" not in p.parts and "Output" not in p.parts)
    return any(p.is_dir() if name.endswith("/") else p.is_file() for p in found)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_files_named_in_the_docs_exist(doc: Path) -> None:
    missing = [n for n in _names(_FILE, doc.read_text()) if not _resolves(n)]
    assert missing == [], f"{doc.name} names files that do not exist"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_passes_named_in_the_docs_are_registered(doc: Path) -> None:
    known = set(PASSES) | set(PIPELINES) | TOOLS
    unknown = [n for n in _names(_PASS, doc.read_text()) if n not in known]
    assert unknown == [], f"{doc.name} names passes that are not registered"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_python_snippets_in_the_docs_parse(doc: Path) -> None:
    for snippet in _PYTHON.findall(doc.read_text()):
        ast.parse(snippet, filename=str(doc))


def test_docs_cited_by_the_sources_exist() -> None:
    """A docstring or comment that sends the reader to docs/<name>.md names a real one."""
    cited = {
        (str(path.relative_to(ROOT)), name)
        for folder in SOURCE_FOLDERS
        for path in (ROOT / folder).rglob("*.py")
        for name in re.findall(r"docs/[\w.-]+\.md", path.read_text())
    }
    assert cited, "no source cites the docs: the pattern is wrong"
    assert sorted(c for c in cited if not (ROOT / c[1]).is_file()) == []


def test_the_checks_can_fail() -> None:
    """Each pattern finds what it is for, and a wrong name is reported."""
    text = "See `docs/nowhere.md` and `registry.py`; run `--tessera-fuse-everything`.\n"
    assert _names(_FILE, text) == ["docs/nowhere.md", "registry.py"]
    assert not _resolves("docs/nowhere.md") and _resolves("registry.py")
    assert _names(_PASS, text) == ["tessera-fuse-everything"]
    assert "tessera-fuse-everything" not in PASSES
    with pytest.raises(SyntaxError):
        ast.parse(_PYTHON.findall("```python\nx = (\n```")[0])
