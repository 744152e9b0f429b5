"""Constant folding over torch.export's symbolic shapes.

Every node that reads no user input and no weight (only sizes, constants and literals) is
evaluated here, in graph order, instead of being translated op by op:

* a node that reads no size is computed by torch on the constants it reads, exactly;
* a node that reads sizes is computed symbolically by its entry in ``fold_registry``: a
  ``Folded`` tensor whose elements are terms over index symbols and the sizes (``terms.py``),
  so the sequence length stays a symbol (``s27``) throughout;
* a scalar size (``sym_size``, arithmetic on sizes) is the sympy expression torch.export
  recorded for it.

A node without a symbolic evaluation (or whose evaluation does not apply to its arguments) is
left to the translator, and so is everything computed from it; ``Folding.reasons`` says why,
for the error should it have no translation either. The folded values that translated nodes
read (the ``boundaries``) are written as IR by ``term_writer.py``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import sympy
import torch
from torch import fx
from torch.export import ExportedProgram

from tessera.errors import TesseraError

from . import fold_contract as _fold_contract  # noqa: F401  (fill the table)
from . import fold_creation as _fold_creation  # noqa: F401
from . import fold_elementwise as _fold_elementwise  # noqa: F401
from . import fold_indexing as _fold_indexing  # noqa: F401
from . import fold_views as _fold_views  # noqa: F401
from .fold_registry import FOLDS, FoldScalar, FoldValue, NotFoldable
from .folded import Folded
from .graph import METADATA_ONLY, GraphInfo, Reads
from .terms import index_symbol
from .types import Shape, shape_of

_DATA = Reads.INPUT | Reads.WEIGHT


@dataclass
class Folding:
    """The value of every folded node; the folded tensors translated nodes read, in graph
    order; and for each node that reads only sizes and constants but was not folded, why."""

    values: dict[fx.Node, FoldValue] = field(default_factory=dict)
    boundaries: list[fx.Node] = field(default_factory=list)
    reasons: dict[fx.Node, str] = field(default_factory=dict)

    def folded(self, node: fx.Node) -> bool:
        return node in self.values


def symbolic_value(meta: object) -> FoldScalar | None:
    """The value of a scalar node (a size or arithmetic on sizes) from its metadata."""
    if isinstance(meta, bool | int | float):
        return meta
    if isinstance(meta, torch.SymInt | torch.SymFloat | torch.SymBool):
        expr = meta.node.expr
        if isinstance(expr, sympy.Integer):
            return int(expr)
        return expr
    return None


class Folder:
    """Folds the nodes of an exported graph (see the module docstring); rules read their
    arguments through ``tensor``, ``operand`` and ``scalar``."""

    def __init__(self, exported: ExportedProgram, info: GraphInfo) -> None:
        self.exported = exported
        self.info = info
        self.result = Folding()

    # -- for the rules -----------------------------------------------------------------------

    def shape(self, node: fx.Node) -> Shape:
        return shape_of(node.meta["val"])

    def dtype(self, node: fx.Node) -> torch.dtype:
        return node.meta["val"].dtype

    def tensor(self, arg: object) -> Folded:
        """The folded tensor an argument names."""
        if not isinstance(arg, fx.Node):
            raise NotFoldable(f"expected a tensor argument, found {arg!r}")
        value = self.result.values.get(arg)
        if not isinstance(value, Folded):
            raise NotFoldable(f"argument '{arg.name}' is not a folded tensor")
        return value

    def scalar(self, arg: object) -> FoldScalar:
        """A Python number, a size, or the one element of a constant 0-d tensor."""
        if isinstance(arg, bool | int | float):
            return arg
        if not isinstance(arg, fx.Node) or arg not in self.result.values:
            raise NotFoldable(f"expected a number or a size, found {arg!r}")
        value = self.result.values[arg]
        if isinstance(value, Folded):
            if value.constant is not None and value.constant.numel() == 1:
                item = value.constant.reshape(()).item()
                assert isinstance(item, bool | int | float)
                return item
            raise NotFoldable(f"argument '{arg.name}' is a tensor, not a number")
        if value is None or isinstance(value, tuple):
            raise NotFoldable(f"argument '{arg.name}' is not a number")
        return value

    def operand(self, arg: object) -> Folded | FoldScalar:
        """A folded tensor, or a number or size."""
        if isinstance(arg, fx.Node) and isinstance(self.result.values.get(arg), Folded):
            return self.tensor(arg)
        return self.scalar(arg)

    # -- the walk ----------------------------------------------------------------------------

    def run(self) -> Folding:
        kinds = {s.arg.name: s for s in self.exported.graph_signature.input_specs}
        for node in self.exported.graph.nodes:
            if node.op == "placeholder":
                if self.info.reads[node] == Reads.CONSTANT:
                    tensor = self._constant_input(kinds[node.name].target)
                    self.result.values[node] = Folded.of_constant(tensor)
            elif node.op == "call_function" and self._candidate(node):
                self._fold(node)
        values = self.result.values
        self.result.boundaries = [
            n
            for n in self.exported.graph.nodes
            if isinstance(values.get(n), Folded) and any(u not in values for u in n.users)
        ]
        return self.result

    def _constant_input(self, target: str | None) -> torch.Tensor:
        assert target is not None, "a constant input names its tensor"
        tensor = self.exported.constants.get(target, self.exported.state_dict.get(target))
        if not isinstance(tensor, torch.Tensor):
            raise TesseraError(f"constant input '{target}' is not a tensor")
        return tensor

    def _candidate(self, node: fx.Node) -> bool:
        """Reads no input or weight data, and every value it reads was folded."""
        if self.info.reads[node] & _DATA and node.target not in METADATA_ONLY:
            return False
        if node.target in METADATA_ONLY:
            return True
        return all(source in self.result.values for source in node.all_input_nodes)

    def _fold(self, node: fx.Node) -> None:
        meta = node.meta.get("val")
        scalar = symbolic_value(meta)
        if scalar is not None and not isinstance(meta, torch.Tensor):
            self.result.values[node] = scalar
            return
        try:
            if not self.info.reads[node] & Reads.SIZES and node.target not in METADATA_ONLY:
                value = self._with_torch(node)
            else:
                rule = FOLDS.get(node.target)
                if rule is None:
                    raise NotFoldable("it has no symbolic evaluation")
                value = rule(self, node)
                _evaluate_once(value)
        except NotFoldable as error:
            self.result.reasons[node] = str(error)
            return
        self.result.values[node] = value

    def _with_torch(self, node: fx.Node) -> FoldValue:
        """A node reading only constants, computed by torch."""
        if node.target is operator.getitem:
            source, index = node.args
            value = self.result.values[source] if isinstance(source, fx.Node) else None
            if not isinstance(value, tuple) or not isinstance(index, int):
                raise NotFoldable("getitem of something other than a tuple of tensors")
            return value[index]

        def concrete(arg: fx.Node) -> fx.node.Argument:
            value = self.result.values[arg]
            if isinstance(value, Folded):
                if value.constant is None:
                    raise NotFoldable(f"argument '{arg.name}' is not constant")
                return value.constant
            if isinstance(value, tuple):
                return tuple(v.constant for v in value)
            return value

        args = fx.node.map_arg(node.args, concrete)
        kwargs = fx.node.map_arg(node.kwargs, concrete)
        assert callable(node.target), "a call_function node calls a function"
        try:
            with torch.no_grad():
                result = node.target(*args, **kwargs)
        except Exception as error:  # torch raises many types; the translator reports it
            raise NotFoldable(f"computing it from its constants failed: {error}") from None
        if result is None:
            return None
        if isinstance(result, torch.Tensor):
            return Folded.of_constant(result)
        if isinstance(result, tuple | list) and all(isinstance(v, torch.Tensor) for v in result):
            return tuple(Folded.of_constant(v) for v in result)
        if isinstance(result, bool | int | float):
            return result
        raise NotFoldable(f"it gave {type(result).__name__}, not a tensor")


def _evaluate_once(value: FoldValue) -> None:
    """Computes a folded tensor's element at a symbolic index, so that a rule that cannot
    evaluate its node (``NotFoldable`` from an element) says so while the node can still be
    translated instead; the element is remembered for the writer."""
    tensors = value if isinstance(value, tuple) else (value,)
    for tensor in tensors:
        if isinstance(tensor, Folded) and tensor.constant is None:
            tensor.at([index_symbol(a) for a in range(tensor.rank)])


def fold(exported: ExportedProgram, info: GraphInfo) -> Folding:
    """Folds every node of ``exported`` that reads only sizes and constants."""
    return Folder(exported, info).run()
