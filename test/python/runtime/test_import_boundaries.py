"""Imports go one way: the runtime loads nothing from MLIR, llvmlite or the compiler, and
``import tessera`` loads no MLIR. Each check runs in a fresh interpreter, since this test
process has long imported the compiler."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# The only tessera modules outside tessera.runtime that the runtime may load.
RUNTIME_MAY_LOAD = {"tessera", "tessera.errors"}


_BLOCKER = """
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {block!r}:
            raise ImportError(name + " is not installed here")
        return None

sys.meta_path.insert(0, Block())
"""


def _loaded_after(code: str, block: tuple[str, ...] = ()) -> list[str]:
    """The modules loaded after running ``code`` in a fresh interpreter in which importing
    any package in ``block`` fails, as on a machine without it."""
    script = _BLOCKER.format(block=block) + textwrap.dedent(code)
    script += "\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compiler_modules(modules: list[str]) -> list[str]:
    return [
        m
        for m in modules
        if m.split(".")[0] in ("mlir", "llvmlite")
        or (
            m.startswith("tessera")
            and m not in RUNTIME_MAY_LOAD
            and not m.startswith("tessera.runtime")
        )
    ]


def test_runtime_and_its_submodules_load_no_compiler() -> None:
    code = """
import pkgutil, importlib
import tessera.runtime
for info in pkgutil.iter_modules(tessera.runtime.__path__):
    importlib.import_module("tessera.runtime." + info.name)
"""
    loaded = _loaded_after(code)
    assert "tessera.runtime.program" in loaded and "tessera.runtime.cpu" in loaded
    assert _compiler_modules(loaded) == []


def test_runtime_imports_where_mlir_and_llvmlite_are_missing() -> None:
    code = """
import tessera.runtime
tessera.runtime.load  # the public names load on first use
try:
    import mlir.ir
except ImportError:
    pass
else:
    raise SystemExit("the blocker let mlir through")
"""
    loaded = _loaded_after(code, block=("mlir", "llvmlite"))
    assert "tessera.runtime.loader" in loaded


def test_import_tessera_loads_no_mlir() -> None:
    loaded = _loaded_after("import tessera")
    assert [m for m in loaded if m.split(".")[0] in ("mlir", "llvmlite")] == []


def test_the_check_sees_a_compiler_import() -> None:
    """The checks above would notice: importing the lowering loads MLIR."""
    loaded = _loaded_after("import tessera.lowering.cpu.artifact")
    assert "mlir" in loaded
    assert "tessera.lowering.cpu.artifact" in _compiler_modules(loaded)
