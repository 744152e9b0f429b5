"""Integer expressions over a program's symbols, as the manifest writes them.

Launch grids, shared-memory sizes, scalar kernel arguments, buffer sizes and arena offsets
depend on the dynamic sizes (``B``, ``S``) and are stored as text such as
``cdiv(B*S, 128)`` or ``4096*B*S + 512``. The grammar is a small subset of Python's: integer
literals, names, ``+ - * // %``, unary minus, parentheses and the functions ``cdiv``, ``min``,
``max``. It is parsed with ``ast`` and checked node by node, never ``eval``'d, so a manifest
cannot run code. ``//`` and ``%`` floor like Python's; ``cdiv(a, b)`` is ``-(-a // b)``.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable, Mapping

from tessera.errors import TesseraError


class ExprError(TesseraError):
    """An expression is malformed, names an unknown symbol, or divides by zero."""


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


_BINARY: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_FUNCTIONS: dict[str, Callable[[int, int], int]] = {"cdiv": _cdiv, "min": min, "max": max}


class Expr:
    """A parsed expression; ``evaluate(env)`` gives its value for the symbols in ``env``."""

    __slots__ = ("_code", "names", "text")

    def __init__(self, text: str | int) -> None:
        self.text = str(text)
        try:
            tree = ast.parse(self.text, mode="eval")
        except SyntaxError as error:
            raise ExprError(f"cannot parse expression '{self.text}': {error.msg}") from None
        names: set[str] = set()
        self._code = self._compile(tree.body, names)
        self.names = frozenset(names)

    def _compile(self, node: ast.expr, names: set[str]) -> Callable[[Mapping[str, int]], int]:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            value = node.value
            return lambda env: value
        if isinstance(node, ast.Name):
            name = node.id
            names.add(name)

            def lookup(env: Mapping[str, int]) -> int:
                try:
                    return env[name]
                except KeyError:
                    raise ExprError(f"'{self.text}' uses '{name}', which is not bound") from None

            return lookup
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = self._compile(node.operand, names)
            return lambda env: -inner(env)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            op = _BINARY[type(node.op)]
            left, right = self._compile(node.left, names), self._compile(node.right, names)
            division = isinstance(node.op, ast.FloorDiv | ast.Mod)

            def binary(env: Mapping[str, int]) -> int:
                b = right(env)
                if division and b == 0:
                    raise ExprError(f"'{self.text}' divides by zero")
                return op(left(env), b)

            return binary
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
            and len(node.args) == 2
            and not node.keywords
        ):
            function = _FUNCTIONS[node.func.id]
            a, b = (self._compile(arg, names) for arg in node.args)
            if node.func.id == "cdiv":

                def cdiv(env: Mapping[str, int]) -> int:
                    divisor = b(env)
                    if divisor == 0:
                        raise ExprError(f"'{self.text}' divides by zero")
                    return _cdiv(a(env), divisor)

                return cdiv
            return lambda env: function(a(env), b(env))
        raise ExprError(
            f"'{self.text}': '{ast.unparse(node)}' is not allowed (integers, names, + - * // %, "
            "cdiv/min/max only)"
        )

    def evaluate(self, env: Mapping[str, int]) -> int:
        return self._code(env)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"


@functools.lru_cache(maxsize=4096)
def parse(text: str | int) -> Expr:
    """The parsed expression for ``text`` (cached: manifests repeat the same expressions)."""
    return Expr(text)


def evaluate(text: str | int, env: Mapping[str, int]) -> int:
    if isinstance(text, int):
        return text
    return parse(text).evaluate(env)


def substitute(text: str | int, bindings: Mapping[str, str | int]) -> str:
    """``text`` with each name replaced by its binding (parenthesized), e.g. a kernel's
    ``cdiv(M, 128)`` with ``M`` → ``B*S`` gives ``cdiv((B*S), 128)``."""
    expr = parse(text)
    tree = ast.parse(expr.text, mode="eval")

    class Replace(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.expr:
            if node.id in bindings:
                return ast.parse(f"({bindings[node.id]})", mode="eval").body
            return node

    out = ast.unparse(Replace().visit(tree))
    parse(out)  # the result must itself be a valid expression
    return out
