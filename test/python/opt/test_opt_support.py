"""Shared helpers of the tessera-opt tests: running the tool in a fresh interpreter, with or
without its pre-parse checks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# tessera-opt's own entry point without the pre-parse checks (so the inputs they refuse reach
# MLIR's parser and crash it for real) and with one extra pass that aborts the process, as an
# assertion in an upstream pass would.
UNCHECKED_DRIVER = textwrap.dedent(
    """
    import os, sys
    import tessera.context
    from tessera.pass_registry import register_pass

    tessera.context.check_text = lambda *args, **kwargs: None

    @register_pass("test-abort")
    def abort(module, options):
        '''Kills the process.'''
        os.abort()

    from tessera.opt import main
    sys.argv = ["tessera-opt", *sys.argv[1:]]
    main()
    """
)


def tessera_opt(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The installed tool, as a user runs it."""
    return _run([sys.executable, "-m", "tessera.opt", *map(str, args)])


def tessera_opt_unchecked(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-c", UNCHECKED_DRIVER, *map(str, args)])


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
