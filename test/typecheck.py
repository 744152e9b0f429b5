"""Type-check the `tessera` package under the module names it is imported by.

pyproject.toml assembles `tessera` from several folders (`[tool.setuptools] package-dir`:
passes/ is `tessera.passes`, ...), and the editable install reaches them through an import hook
that mypy never runs. Pointed at the folders, mypy would name `passes/match.py` `passes.match`
and could not resolve the `tessera.passes.match` that every other module imports. This script
reads the same mapping, hands mypy each source file with its installed module name, and
otherwise behaves like the `mypy` command: flags after the script name, `[tool.mypy]` from
pyproject.toml, one line per message, a summary, and exit status 0 (clean), 1 (errors) or
2 (mypy could not run).

Usage: python test/typecheck.py [mypy flags]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource
from mypy.util import count_stats

if sys.version_info >= (3, 11):
    import tomllib
else:  # mypy depends on tomli before Python 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def package_folder(package: str, package_dir: dict[str, str]) -> Path:
    """The folder setuptools installs `package` from: its longest mapped prefix, plus the rest."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        mapped = package_dir.get(".".join(parts[:cut]))
        if mapped is not None:
            return ROOT.joinpath(mapped, *parts[cut:])
    return ROOT.joinpath(package_dir.get("", ""), *parts)


def package_sources() -> list[BuildSource]:
    """One source per module of every package pyproject.toml lists, named as installed."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools.get("package-dir", {})
    sources = []
    for package in setuptools["packages"]:
        folder = package_folder(package, package_dir)
        if not (folder / "__init__.py").is_file():
            raise SystemExit(f"typecheck: package {package} has no {folder}/__init__.py")
        for file in sorted(folder.glob("*.py")):
            module = package if file.stem == "__init__" else f"{package}.{file.stem}"
            sources.append(BuildSource(os.path.relpath(file), module))
    return sources


def main(argv: list[str]) -> int:
    sources = package_sources()
    if not any(arg == "--config-file" or arg.startswith("--config-file=") for arg in argv):
        argv = ["--config-file", str(ROOT / "pyproject.toml"), *argv]
    # Parse flags and the config file exactly as `mypy` does; its own module naming of the files
    # is what this script replaces, so the sources it returns are dropped.
    _, options = process_options([*argv, *(str(source.path) for source in sources)])
    try:
        messages = build.build(sources, options).errors
        blocked = False
    except CompileError as error:
        messages, blocked = error.messages, True
    for message in messages:
        print(message)
    errors, _, files = count_stats(messages)
    if blocked or errors:
        print(f"Found {errors} errors in {files} files (checked {len(sources)} source files)")
        return 2 if blocked else 1
    print(f"Success: no issues found in {len(sources)} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
