"""The README's first Python snippet runs as written (in a fresh process and folder)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_first_snippet_runs(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert snippet is not None, "README.md has no python snippet"
    environment = {**os.environ, "TESSERA_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", snippet.group(1)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tessera.attention.flash" in done.stdout
    assert (tmp_path / "out" / "gemma" / "manifest.json").is_file()
