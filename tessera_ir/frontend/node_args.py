"""Typed reads of an exported node's arguments.

torch.fx types every node argument as one wide union (nodes, numbers, lists, dtypes, ...). A
translation knows from the aten schema what each position holds; these readers check that and
return the narrow type, so a graph that breaks the expectation fails as an unsupported op naming
the argument rather than as a TypeError somewhere inside a translation.
"""

from __future__ import annotations

import torch
from torch import fx
from torch.fx.node import Argument

from .emitter import Emitter


def argument(node: fx.Node, index: int, name: str, default: Argument = None) -> Argument:
    """Positional argument ``index`` when the node has it, else keyword ``name``, else
    ``default`` (torch.export passes an argument either way depending on the schema)."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def int_arg(em: Emitter, node: fx.Node, index: int, name: str, default: int | None = None) -> int:
    """An integer argument (a dim, an index); an absent or None one reads as ``default``."""
    value = argument(node, index, name)
    if value is None:
        value = default
    if not isinstance(value, int):
        em.unsupported(f"argument '{name}' must be an integer, found {value!r}")
    return value


def int_list(em: Emitter, value: Argument, name: str) -> list[int]:
    """A list (or tuple) of integers, such as the dims of a permutation or a reduction."""
    if not isinstance(value, (list, tuple)):
        em.unsupported(f"argument '{name}' must be a list of integers, found {value!r}")
    ints = [v for v in value if isinstance(v, int)]
    if len(ints) != len(value):
        em.unsupported(f"argument '{name}' must be a list of integers, found {value!r}")
    return ints


def number_arg(
    em: Emitter, node: fx.Node, index: int, name: str, default: float | None = None
) -> float:
    """A Python number (int or float, returned as given); absent or None reads as ``default``."""
    value = argument(node, index, name)
    if value is None:
        value = default
    if not isinstance(value, (int, float)):
        em.unsupported(f"argument '{name}' must be a number, found {value!r}")
    return value


def optional_number_arg(em: Emitter, node: fx.Node, index: int, name: str) -> float | None:
    """A Python number, or None when the argument is absent or None."""
    value = argument(node, index, name)
    if value is None:
        return None
    return number_arg(em, node, index, name)


def str_arg(em: Emitter, node: fx.Node, index: int, name: str, default: str) -> str:
    """A string argument (such as an approximation's name); absent reads as ``default``."""
    value = argument(node, index, name, default)
    if not isinstance(value, str):
        em.unsupported(f"argument '{name}' must be a string, found {value!r}")
    return value


def dtype_arg(em: Emitter, node: fx.Node, index: int, name: str) -> torch.dtype | None:
    """A dtype argument, or None when it is absent or None."""
    value = argument(node, index, name)
    if value is not None and not isinstance(value, torch.dtype):
        em.unsupported(f"argument '{name}' must be a dtype, found {value!r}")
    return value


def node_list(em: Emitter, value: Argument, name: str) -> list[fx.Node]:
    """A list (or tuple) of graph values, such as the tensors a concatenation joins."""
    if not isinstance(value, (list, tuple)):
        em.unsupported(f"argument '{name}' must be a list of tensors, found {value!r}")
    nodes = [v for v in value if isinstance(v, fx.Node)]
    if len(nodes) != len(value):
        em.unsupported(f"argument '{name}' must be a list of tensors, found {value!r}")
    return nodes


def _is_operand_type(kind: torch._C.JitType) -> bool:
    if isinstance(kind, torch._C.OptionalType):
        kind = kind.getElementType()
    return isinstance(kind, torch._C.TensorType | torch._C.NumberType)


def split_arguments(node: fx.Node) -> tuple[list[Argument], dict[str, Argument]]:
    """An elementwise op's operands (the positional tensors and numbers of its schema, in
    order) and its options (every other argument it was given, by name)."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        raise TypeError(f"{node.target} has no schema")
    operands: list[Argument] = []
    options: dict[str, Argument] = {}
    for position, entry in enumerate(schema.arguments):
        if position < len(node.args):
            value = node.args[position]
        elif entry.name in node.kwargs:
            value = node.kwargs[entry.name]
        else:
            continue
        if not entry.kwarg_only and _is_operand_type(entry.type):
            operands.append(value)
        else:
            options[entry.name] = value
    return operands, options
