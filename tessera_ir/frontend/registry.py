"""The table of aten op translations, keyed by the aten overload.

Each translation is a small function ``(translator, node) -> value`` registered with
``@translates(aten.x.overload, ...)``: a ``TVal``, a tuple of them for ops with several results
(read by ``operator.getitem`` nodes), or None when the node has no value (an assertion). The
``ops_*`` modules fill the table when imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import fx

if TYPE_CHECKING:
    from .translator import Translator
    from .values import TVal

Translation = Callable[["Translator", fx.Node], "TVal | tuple[TVal, ...] | None"]

TRANSLATIONS: dict[object, Translation] = {}


def translates(*ops: object) -> Callable[[Translation], Translation]:
    """Registers the decorated function as the translation of each of ``ops``."""

    def register(function: Translation) -> Translation:
        for op in ops:
            if op in TRANSLATIONS:
                raise ValueError(f"{op} has two translations")
            TRANSLATIONS[op] = function
        return function

    return register


def supported_ops() -> list[str]:
    """The names of every aten op with a translation (for reports and docs)."""
    return sorted(str(op) for op in TRANSLATIONS)
