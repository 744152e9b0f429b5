"""Helpers shared by the command-line tests: running ``tessera`` in this process and reading
its one-line errors."""

from __future__ import annotations

import pytest

from tessera import cli


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``tessera argv`` in this process: (status, stdout, stderr)."""
    try:
        status = cli.main(argv)
    except SystemExit as done:  # --help, --version and usage errors leave through argparse
        status = done.code if isinstance(done.code, int) else 1
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_error_line(err: str) -> str:
    """The error the command printed: exactly one line, never a traceback."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]
