"""Tessera's passes and named pipelines, by CLI name.

A pass is a function ``(module_op, options) -> None`` with a frozen dataclass of options; its
docstring is its help text. It raises a ``LocatedError`` for IR it cannot handle, never prints,
and never reads the environment. ``passes/`` registers them on import.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import shlex
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlir import ir

from .errors import PassError


@dataclass(frozen=True)
class NoOptions:
    """A pass that takes no options."""


PassFn = Callable[[ir.Operation, Any], None]


@dataclass(frozen=True)
class PassInfo:
    name: str
    run: PassFn
    options_type: type
    doc: str

    def parse_options(self, text: str) -> Any:
        """Options from mlir-opt's ``{key=value other=value}`` text (braces already removed)."""
        fields = {f.name.replace("_", "-"): f for f in dataclasses.fields(self.options_type)}
        values: dict[str, Any] = {}
        for item in shlex.split(text):
            key, sep, raw = item.partition("=")
            field = fields.get(key) or fields.get(key.replace("_", "-"))
            if field is None or not sep:
                known = ", ".join(fields) or "none"
                raise PassError(f"pass '{self.name}' has no option '{item}' (options: {known})")
            values[field.name] = _convert(self.name, key, raw, field.type)
        return self.options_type(**values)


def _convert(pass_name: str, key: str, raw: str, type_: Any) -> Any:
    kind = type_ if isinstance(type_, str) else getattr(type_, "__name__", str(type_))
    try:
        if kind == "bool":
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        return raw
    except ValueError:
        raise PassError(
            f"pass '{pass_name}': option '{key}' expects {kind}, found '{raw}'"
        ) from None


PASSES: dict[str, PassInfo] = {}
PIPELINES: dict[str, tuple[tuple[str, ...], str]] = {}
# A pipeline's options (``name{chip=gfx942}``): each ``$field`` of its elements is replaced by
# the option's value.
PIPELINE_OPTIONS: dict[str, type] = {}


def register_pass(name: str, options: type = NoOptions) -> Callable[[PassFn], PassFn]:
    def register(fn: PassFn) -> PassFn:
        if name in PASSES:
            raise ValueError(f"pass {name} is registered twice")
        PASSES[name] = PassInfo(name, fn, options, inspect.getdoc(fn) or "")
        return fn

    return register


def register_pipeline(name: str, elements: list[str], doc: str, options: type = NoOptions) -> None:
    if name in PIPELINES or name in PASSES:
        raise ValueError(f"pipeline {name} is registered twice")
    PIPELINES[name] = (tuple(elements), doc)
    PIPELINE_OPTIONS[name] = options


def pipeline_has_options(name: str) -> bool:
    """Whether pipeline ``name`` declares options (``register_pipeline(options=...)``)."""
    return PIPELINE_OPTIONS.get(name, NoOptions) is not NoOptions


def pipeline_elements(name: str, options: str) -> tuple[str, ...]:
    """The elements of pipeline ``name`` with its ``{options}`` text (braces removed) filled
    in; a ``PassError`` names an option it does not have."""
    elements, doc = PIPELINES[name]
    info = PassInfo(name, _pipeline_run, PIPELINE_OPTIONS.get(name, NoOptions), doc)
    values = {
        key: str(value) for key, value in dataclasses.asdict(info.parse_options(options)).items()
    }
    return tuple(string.Template(element).substitute(values) for element in elements)


def _pipeline_run(module: ir.Operation, options: Any) -> None:
    raise PassError("a pipeline runs its elements, never itself")


def load_all() -> None:
    """Imports every module that registers passes (kept lazy to keep imports one-way)."""
    importlib.import_module("tessera.passes")
    importlib.import_module("tessera.lowering")
