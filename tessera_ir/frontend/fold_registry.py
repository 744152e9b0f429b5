"""The table of symbolic evaluations, keyed by the aten overload (or Python operator).

Each entry is a small function ``(folder, node) -> value`` registered with
``@folds(aten.x.overload, ...)`` that computes a node reading only sizes and constants: a
``Folded`` tensor (or a tuple of them, read by ``operator.getitem`` nodes), a scalar, or None
for a node without a value (an assertion). It raises ``NotFoldable`` when this node, with
these arguments, has no symbolic form; the node is then translated like any other
(``registry.py``), reading the folded values it takes as IR. The ``fold_*`` modules fill the
table when imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

import sympy
from torch import fx

from .folded import Folded

if TYPE_CHECKING:
    from .folder import Folder

FoldScalar: TypeAlias = sympy.Basic | float | int | bool
FoldValue: TypeAlias = Folded | tuple[Folded, ...] | FoldScalar | None
Rule = Callable[["Folder", fx.Node], FoldValue]

FOLDS: dict[object, Rule] = {}


class NotFoldable(Exception):
    """This node has no symbolic evaluation; the message says why."""


def folds(*ops: object) -> Callable[[Rule], Rule]:
    """Registers the decorated function as the symbolic evaluation of each of ``ops``."""

    def register(function: Rule) -> Rule:
        for op in ops:
            if op in FOLDS:
                raise ValueError(f"{op} has two symbolic evaluations")
            FOLDS[op] = function
        return function

    return register
