"""The import layers of docs/architecture.md ("Layout"), checked on the source of every module
of the package, imports deferred into functions included.

``test/python/runtime/test_import_boundaries.py`` checks what importing loads at run time;
this checks what each file may import at all, so an import hidden in a function that no test
happens to call still counts.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tests run on 3.11+
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]

# Layers, bottom up: a module may import its own layer and those below it.
ORDER = ("tessera_ir", "dialects", "passes", "lowering")
# tessera_ir modules that drive the layers above them (compile, tessera-opt, the pass pipeline
# with its verifier, target lookup): they may import those layers, inside a function only, so
# that importing them loads nothing above tessera_ir.
DRIVERS = {
    "tessera.api",
    "tessera.opt",
    "tessera.pipeline",
    "tessera.pass_registry",  # load_all: the modules that register passes
    "tessera.target",
}
# The runtime sits beside the layers: any may import it; it imports only these of Tessera.
RUNTIME_MAY_IMPORT = {"tessera", "tessera.errors"}
# Third-party packages the runtime must never import (an artifact runs without them).
COMPILER_ONLY = {"mlir", "llvmlite", "sympy", "transformers"}
# Import cycles that exist and should not: each must go, and this list with it (a cycle that
# is gone but still listed fails too, so the list stays true).
KNOWN_CYCLES: list[set[str]] = []


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (or package)
    line: int
    deferred: bool  # inside a function
    type_only: bool  # under `if TYPE_CHECKING:`, never run
    by_name: bool = False  # importlib.import_module("..."): a registry loading its entries


def modules() -> dict[str, Path]:
    """Every module of the package by its ``tessera.*`` name (pyproject's package-dir)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = setuptools["package-dir"]
    found: dict[str, Path] = {}
    for package in setuptools["packages"]:
        parts = package.split(".")
        cut = max(c for c in range(1, len(parts) + 1) if ".".join(parts[:c]) in mapping)
        folder = ROOT.joinpath(mapping[".".join(parts[:cut])], *parts[cut:])
        for file in sorted(folder.glob("*.py")):
            found[package if file.stem == "__init__" else f"{package}.{file.stem}"] = file
    return found


class _Collector(ast.NodeVisitor):
    def __init__(self, name: str, is_package: bool, known: set[str]) -> None:
        self.name = name
        self.package = name if is_package else name.rpartition(".")[0]
        self.known = known
        self.imports: list[Import] = []
        self._functions = 0
        self._type_only = 0

    def _add(self, target: str, node: ast.stmt) -> None:
        self.imports.append(
            Import(self.name, target, node.lineno, self._functions > 0, self._type_only > 0)
        )

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        guarded = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        self._type_only += guarded
        for child in node.body:
            self.visit(child)
        self._type_only -= guarded
        for child in node.orelse:
            self.visit(child)

    def visit_Call(self, node: ast.Call) -> None:
        """``importlib.import_module("tessera.x")`` with a literal name is an import too."""
        function = node.func
        if (
            isinstance(function, ast.Attribute)
            and function.attr == "import_module"
            and isinstance(function.value, ast.Name)
            and function.value.id == "importlib"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            target, deferred = node.args[0].value, self._functions > 0
            self.imports.append(Import(self.name, target, node.lineno, deferred, False, True))
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        submodules = [
            f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in self.known
        ]
        if len(submodules) < len(node.names):
            self._add(module, node)  # names defined in `module` itself
        for submodule in submodules:
            self._add(submodule, node)


def all_imports() -> list[Import]:
    known = modules()
    found: list[Import] = []
    for name, file in known.items():
        collector = _Collector(name, file.stem == "__init__", set(known))
        collector.visit(ast.parse(file.read_text(), filename=str(file)))
        found += collector.imports
    return found


def layer(module: str) -> str | None:
    """``runtime``, one of ``ORDER``, or None for a module outside the package."""
    if module != "tessera" and not module.startswith("tessera."):
        return None
    second = module.split(".")[1] if "." in module else ""
    if second in ("dialects", "passes", "lowering", "runtime"):
        return second
    return "tessera_ir"


def where(item: Import) -> str:
    return f"{item.source} (line {item.line}) imports {item.target}"


def test_the_scan_sees_every_kind_of_import() -> None:
    """The collector finds deferred and type-only imports, and resolves relative ones."""
    tree = ast.parse(
        "from . import a\nfrom ..b import c\nif TYPE_CHECKING:\n    import d\n"
        "def f():\n    from .e import g\n    importlib.import_module('tessera.h')\n"
    )
    collector = _Collector("tessera.x.y", False, {"tessera.x.a"})
    collector.visit(tree)
    found = {(i.target, i.deferred, i.type_only) for i in collector.imports}
    assert found == {
        ("tessera.x.a", False, False),
        ("tessera.b", False, False),
        ("d", False, True),
        ("tessera.x.e", True, False),
        ("tessera.h", True, False),
    }


def test_runtime_imports_only_itself_and_the_error_types() -> None:
    wrong = [
        where(i)
        for i in all_imports()
        if layer(i.source) == "runtime"
        and (
            (layer(i.target) not in (None, "runtime") and i.target not in RUNTIME_MAY_IMPORT)
            or i.target.split(".")[0] in COMPILER_ONLY
        )
    ]
    assert wrong == []


def test_error_types_import_nothing_of_the_compiler() -> None:
    """``tessera.errors`` is what the runtime shares with the compiler: standard library only."""
    wrong = [
        where(i)
        for i in all_imports()
        if i.source == "tessera.errors"
        and i.target.split(".")[0] not in sys.stdlib_module_names | {"__future__"}
    ]
    assert wrong == []


def test_layers_import_only_downwards() -> None:
    wrong = []
    for item in all_imports():
        source, target = layer(item.source), layer(item.target)
        if source is None or target in (None, "runtime") or source == "runtime":
            continue
        if ORDER.index(target) <= ORDER.index(source):
            continue
        if item.source in DRIVERS and item.deferred:
            continue
        wrong.append(where(item))
    assert wrong == []


def test_drivers_are_the_only_exceptions_and_use_them_lazily() -> None:
    """The exception for drivers is used (else it should go) and only inside functions."""
    upward = [
        i for i in all_imports() if layer(i.source) == "tessera_ir" and layer(i.target) in ORDER[1:]
    ]
    assert upward, "no driver imports a layer above tessera_ir: drop DRIVERS"
    assert [where(i) for i in upward if not i.deferred or i.source not in DRIVERS] == []


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_even_through_deferred_imports() -> None:
    """A cycle hidden by moving one import into a function still couples the modules both
    ways. Left out: `if TYPE_CHECKING:` imports (annotations, never run) and a registry
    loading its entries by name (``pass_registry.load_all``), which know the registry but
    are not known to it."""
    known = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for item in all_imports():
        if item.type_only or item.by_name:
            continue
        if item.target in known and item.target != item.source:
            edges[item.source].add(item.target)
    for name in known:
        edges[name]  # every module is a node
    cycles = _cycles(edges)
    assert [c for c in cycles if c not in KNOWN_CYCLES] == []
    assert [c for c in KNOWN_CYCLES if c not in cycles] == [], "a known cycle is gone: drop it"


def test_a_cycle_through_a_deferred_import_is_found() -> None:
    """The check above can fail: two modules importing each other, once lazily."""
    edges: dict[str, set[str]] = defaultdict(set, {"a": {"b"}, "b": {"a"}, "c": {"a"}})
    assert _cycles(edges) == [{"a", "b"}]
