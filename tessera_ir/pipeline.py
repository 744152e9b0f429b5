"""Textual pass pipelines mixing tessera passes with any upstream MLIR pass.

``builtin.module(canonicalize, tessera-fuse-attention, func.func(cse))`` is split into its
elements; upstream ones go to MLIR's own parser (``PassManager.add(text)``), tessera ones are
added as Python passes. Upstream passes cannot see that pure tessera ops are pure (MLIR treats
unregistered ops as side-effecting), so ``canonicalize`` is followed by ``tessera-dce`` and
``cse`` by ``tessera-cse``: together they do for tessera ops what the upstream pass does for
registered ones.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass

from mlir import ir, passmanager

from . import knobs
from .errors import LocatedError, PassError
from .pass_registry import PASSES, PIPELINES, PassInfo, load_all, pipeline_elements

CLEANUP_AFTER = {"canonicalize": "tessera-dce", "cse": "tessera-cse"}


@dataclass(frozen=True)
class Element:
    """One pipeline element: ``name{options}`` or ``name(nested pipeline)``."""

    name: str
    options: str = ""
    nested: str | None = None

    def text(self) -> str:
        out = self.name
        if self.options:
            out += "{" + self.options + "}"
        if self.nested is not None:
            out += "(" + self.nested + ")"
        return out


def split_elements(text: str) -> list[Element]:
    """Splits ``a{x=1}, b(c, d)`` at top-level commas into elements."""
    elements: list[Element] = []
    depth, start = 0, 0
    pieces: list[str] = []
    for i, char in enumerate(text):
        if char in "({":
            depth += 1
        elif char in ")}":
            depth -= 1
            if depth < 0:
                raise PassError(f"unbalanced '{char}' in pass pipeline '{text}'")
        elif char == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise PassError(f"unbalanced brackets in pass pipeline '{text}'")
    pieces.append(text[start:])
    for piece in (p.strip() for p in pieces):
        if not piece:
            continue
        elements.append(_parse_element(piece))
    return elements


def _parse_element(piece: str) -> Element:
    name_end = len(piece)
    for i, char in enumerate(piece):
        if char in "({":
            name_end = i
            break
    name, rest = piece[:name_end].strip(), piece[name_end:].strip()
    options, nested = "", None
    if rest.startswith("{"):
        close = rest.index("}")
        options, rest = rest[1:close].strip(), rest[close + 1 :].strip()
    if rest.startswith("(") and rest.endswith(")"):
        nested, rest = rest[1:-1], ""
    if rest or not name:
        raise PassError(f"cannot parse pass pipeline element '{piece}'")
    return Element(name, options, nested)


def parse_pipeline(text: str) -> list[Element]:
    """The top-level elements of a pipeline, with ``builtin.module(...)`` removed."""
    elements = split_elements(text.strip())
    if len(elements) == 1 and elements[0].name == "builtin.module" and elements[0].nested:
        return split_elements(elements[0].nested)
    return elements


def expand(elements: list[Element], seen: tuple[str, ...] = ()) -> list[Element]:
    """Replaces named tessera pipelines by their elements and adds the tessera cleanups."""
    load_all()
    out: list[Element] = []
    for element in elements:
        if element.name in PIPELINES and element.nested is None:
            if element.name in seen:
                raise PassError(f"pipeline '{element.name}' includes itself")
            inner = [_parse_element(e) for e in pipeline_elements(element.name, element.options)]
            out += expand(inner, (*seen, element.name))
            continue
        if element.nested is not None and _mentions_tessera(element.nested):
            raise PassError(
                f"tessera passes run on the whole module; move them out of '{element.name}(...)'"
            )
        out.append(element)
        cleanup = CLEANUP_AFTER.get(element.name)
        if cleanup is not None and element.nested is None:
            out.append(Element(cleanup))
    return out


def _mentions_tessera(nested: str) -> bool:
    return any(
        e.name.startswith("tessera-") or _mentions_tessera(e.nested or "")
        for e in split_elements(nested)
    )


def build_pass_manager(
    elements: list[Element],
    context: ir.Context,
    verify_each: bool = True,
    print_ir_after_all: bool = False,
) -> passmanager.PassManager:
    """A pass manager on ``builtin.module`` running ``elements`` (already expanded)."""
    with context:
        manager = passmanager.PassManager("builtin.module")
        for element in elements:
            info = PASSES.get(element.name)
            if info is not None:
                options = info.parse_options(element.options)
                manager.add(
                    _adapter(info, options, verify_each), name=info.name, argument=info.name
                )
                continue
            if element.name.startswith("tessera-"):
                raise PassError(
                    f"unknown pass '{element.name}' (tessera passes: {', '.join(sorted(PASSES))})"
                )
            try:
                manager.add(element.text())
            except ValueError as problem:
                raise PassError(_upstream_problem(element, str(problem))) from None
        if print_ir_after_all:
            manager.enable_ir_printing(print_after_all=True)
    return manager


def _upstream_problem(element: Element, message: str) -> str:
    """MLIR's pipeline-parser complaint, reduced to one readable line."""
    if "does not refer to a registered pass" in message:
        return f"unknown pass '{element.name}'"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    detail = next((line for line in lines if "no such option" in line or "error" in line), "")
    detail = detail.split("error:", 1)[-1].split(">:", 1)[-1].strip()
    return f"bad options for pass '{element.name}': {detail or message.strip()}"


def _adapter(
    info: PassInfo, options: object, verify_each: bool
) -> Callable[[ir.Operation, passmanager.ExternalPass], None]:
    """Wraps a tessera pass for ``PassManager.add``: errors become located diagnostics."""

    def run(op: ir.Operation, pass_: passmanager.ExternalPass) -> None:
        try:
            info.run(op, options)
            if verify_each:
                _verify(op)
        except LocatedError as problem:
            _emit(op, problem)
            pass_.signal_pass_failure()
        except Exception as problem:
            detail = traceback.format_exc() if knobs.debug() else f"{type(problem).__name__}: "
            if not knobs.debug():
                detail += str(problem)
            op.location.emit_error(f"internal error in pass '{info.name}': {detail}")
            pass_.signal_pass_failure()

    return run


def _verify(op: ir.Operation) -> None:
    from tessera.dialects import verify_module  # the dialect sits above this module

    problems = verify_module(op)
    for problem in problems[1:]:
        _emit(op, problem)
    if problems:
        raise problems[0]


def _emit(op: ir.Operation, problem: LocatedError) -> None:
    where = problem.location
    if where is None:
        op.location.emit_error(problem.message)
        return
    loc = ir.Location.file(where.file, where.line, where.col, context=op.context)
    loc.emit_error(problem.message)


def run_pipeline(
    module: ir.Module | ir.Operation,
    pipeline: str | list[Element],
    verify_each: bool = True,
    print_ir_after_all: bool = False,
) -> None:
    """Runs a pipeline on ``module`` (a module or its op) in place; raises ``PassError`` at the
    failing op."""
    from .diagnostics import DiagnosticCollector, MLIRError, from_mlir_error

    elements = expand(parse_pipeline(pipeline) if isinstance(pipeline, str) else pipeline)
    context = module.context
    manager = build_pass_manager(elements, context, verify_each, print_ir_after_all)
    collector = DiagnosticCollector(context)
    with collector.attached():
        try:
            manager.run(module.operation)
        except MLIRError as error:
            collector.add(from_mlir_error(error))
    if collector.errors:
        first = collector.errors[0]
        raise PassError(first.message, first.location)
