"""Writes an exported graph as the high-level IR's ``func.func @forward``.

Placeholders become the function's arguments (the user input, then one argument per weight
actually used) or inlined constants; nodes are written in ``GraphInfo.order``, each decoder
block inside one ``tessera.region``; the translations come from the registry. Folded nodes
(``folder.py``) are not translated: the folded values translated nodes read are written by
``term_writer.py`` in the function body, before the region that first reads them.
"""

from __future__ import annotations

import operator
import os
import re

import sympy
import torch
from torch import fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from tessera.errors import TesseraError, UnsupportedOpError
from tessera.mlir_text import quote, tensor_type

from . import ops_attention as _ops_attention  # noqa: F401  (fill the registry)
from . import ops_elementwise as _ops_elementwise  # noqa: F401
from . import ops_linalg as _ops_linalg  # noqa: F401
from . import ops_reduce as _ops_reduce  # noqa: F401
from . import ops_shape as _ops_shape  # noqa: F401
from .emitter import Emitter
from .folded import Folded
from .folder import Folding
from .graph import Block, GraphInfo, Reads
from .mask_window import mask_window
from .registry import TRANSLATIONS
from .term_writer import TermWriter
from .types import Shape, shape_of, to_dim
from .values import Scalar, TVal

_TORCH_DIR = os.path.dirname(torch.__file__)
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def location(node: fx.Node, path: str) -> str:
    """``loc("module.path"("file.py":line:0))``: the module that ran the node and the last
    line of model source (not torch's) in its stack trace."""
    name = quote(path or "forward")
    frames = _FRAME.findall(node.meta.get("stack_trace") or "")
    frames = [
        (f, line)
        for f, line in frames
        if not f.startswith(_TORCH_DIR) and not f.startswith(os.path.dirname(__file__))
    ]
    if not frames:
        return f"loc({name})"
    file, line = frames[-1]
    return f"loc({name}({quote(file)}:{line}:0))"


class Translator:
    """Holds the values written so far (``env``) and the helpers translations use."""

    def __init__(
        self,
        exported: ExportedProgram,
        info: GraphInfo,
        folding: Folding,
        model_kind: str,
        prefix: str,
    ) -> None:
        self.exported = exported
        self.prefix = prefix
        self.info = info
        self.folding = folding
        self.boundaries = set(folding.boundaries)
        self.model_kind = model_kind
        self.env: dict[fx.Node, TVal] = {}
        self.results: dict[fx.Node, tuple[TVal, ...]] = {}  # of ops with several results
        self.weights: list[tuple[str, fx.Node]] = []
        self.em = Emitter({})
        # Folded values are written at the function's top level only, so what this writer
        # remembers is visible everywhere after it.
        self.writer = TermWriter(self.em)

    # -- helpers for translations ----------------------------------------------------------

    def arg(self, arg: object) -> TVal:
        """The tensor value of a node argument."""
        if not isinstance(arg, fx.Node):
            self.em.unsupported(f"expected a tensor argument, found {arg!r}")
        if arg not in self.env:
            raise TesseraError(f"internal error: '{arg.name}' has no value")
        return self.env[arg]

    def operand(self, arg: object) -> TVal | Scalar:
        """A tensor, or a Scalar for Python numbers, sizes and 0-d constants."""
        if isinstance(arg, (bool, int, float)):
            return Scalar(arg)
        if isinstance(arg, fx.Node) and isinstance(arg.meta.get("val"), torch.SymInt):
            return Scalar(to_dim(arg.meta["val"]))
        folded = self.folding.values.get(arg) if isinstance(arg, fx.Node) else None
        if isinstance(folded, Folded):
            scalar = self.writer.scalar(folded)
            if scalar is not None:
                return scalar
        value = self.arg(arg)
        if value.const is not None and value.const.dim() == 0:
            return Scalar(value.const.item(), value.const.dtype)
        return value

    def shape(self, node: fx.Node) -> Shape:
        return shape_of(node.meta["val"])

    def dtype(self, node: fx.Node) -> torch.dtype:
        return node.meta["val"].dtype

    # -- the function ----------------------------------------------------------------------

    def translate(self) -> str:
        """The module text."""
        arguments = self._arguments()
        for item in self.info.order:
            if isinstance(item, Block):
                self._block(item)
            else:
                self._node(item)
        output = next(n for n in self.exported.graph.nodes if n.op == "output")
        results = output.args[0]
        if not isinstance(results, (list, tuple)) or len(results) != 1:
            raise TesseraError("the traced forward must return exactly one tensor (the logits)")
        self.em.loc = 'loc("forward")'
        result = self.arg(results[0])
        result_type = self.em.type_of(result)
        self.em.op(f"func.return {self.em.value(result)} : {result_type}")
        header = (
            f"func.func @forward({', '.join(arguments)}) -> {result_type} "
            f"attributes {{tessera.model = {quote(self.model_kind)}}} {{"
        )
        body = "\n".join([header, *self.em.prologue, *self.em.lines, '} loc("forward")'])
        return "module {\n" + body + "\n}\n"

    def _arguments(self) -> list[str]:
        arguments: list[str] = []
        symbols: dict[sympy.Symbol, tuple[str, int, str]] = {}
        placeholders = [n for n in self.exported.graph.nodes if n.op == "placeholder"]
        # The user input comes first, then the weights.
        placeholders.sort(key=lambda n: self.info.input_kinds[n.name] != InputKind.USER_INPUT)
        targets = {s.arg.name: s.target for s in self.exported.graph_signature.input_specs}
        for node in placeholders:
            kind = self.info.input_kinds[node.name]
            target = targets[node.name]
            meta = node.meta["val"]
            if kind == InputKind.USER_INPUT:
                name = f"%{re.sub(r'[^A-Za-z0-9_]', '_', node.name)}"
                type_ = tensor_type(shape_of(meta), self.em.element(meta.dtype))
                arguments.append(
                    f"{name}: {type_} {{tessera.input = {quote(node.name)}}} "
                    f"loc({quote(node.name)})"
                )
                for axis, dim in enumerate(shape_of(meta)):
                    if not isinstance(dim, int) and dim.is_Symbol and dim not in symbols:
                        symbols[dim] = (name, axis, type_)
                self.env[node] = TVal(name, shape_of(meta), meta.dtype)
            elif self.info.reads[node] == Reads.WEIGHT:
                if not node.users:
                    continue  # e.g. the second name of a tied weight
                name = f"%w{len(self.weights)}"
                self.weights.append((target, node))
                type_ = tensor_type(shape_of(meta), self.em.element(meta.dtype))
                label = quote(self.state_dict_name(target))
                arguments.append(f"{name}: {type_} {{tessera.weight = {label}}} loc({label})")
                self.env[node] = TVal(name, shape_of(meta), meta.dtype)
            else:
                tensor = self.exported.constants.get(target, self.exported.state_dict.get(target))
                if not isinstance(tensor, torch.Tensor):
                    raise TesseraError(f"constant input '{target}' is not a tensor")
                self.env[node] = self.em.dense(tensor.detach())
        self.em.symbols.update(symbols)
        return arguments

    def state_dict_name(self, target: str) -> str:
        """The name in the traced model's state dict (without the wrapper's attribute)."""
        return target.removeprefix(self.prefix + ".")

    # -- nodes and blocks ------------------------------------------------------------------

    def _enter(self, node: fx.Node) -> str:
        path = self.info.module_path[node]
        self.em.loc = location(node, path)
        self.em.op_name, self.em.module_path = str(node.target), path
        return path

    def _node(self, node: fx.Node) -> None:
        if node.op != "call_function":
            return
        path = self._enter(node)
        if self.folding.folded(node):
            if node in self.boundaries and node not in self.env:
                self._write_folded(node)
            return
        if node.target is operator.getitem:
            source, index = node.args
            if not isinstance(source, fx.Node) or not isinstance(index, int):
                raise TesseraError(f"internal error: '{node.name}' is not a getitem of a result")
            self.env[node] = self.results[source][index]
            return
        translation = TRANSLATIONS.get(node.target)
        if translation is None:
            detail = "no translation for this op"
            reason = self.folding.reasons.get(node)
            if reason is not None:
                detail = (
                    f"it computes from sizes and constants alone, but {reason}, and it has "
                    "no translation"
                )
            raise UnsupportedOpError(str(node.target), path, detail)
        self._store(node, translation(self, node))

    def _write_folded(self, node: fx.Node) -> None:
        """Writes the folded value of ``node`` (at the function's top level)."""
        value = self.folding.values[node]
        assert isinstance(value, Folded), "boundaries are folded tensors"
        self._enter(node)
        self.env[node] = self.writer.folded(value)

    def _store(self, node: fx.Node, result: TVal | tuple[TVal, ...] | None) -> None:
        if isinstance(result, tuple):
            self.results[node] = result
        elif result is not None:
            self.env[node] = result

    def _block(self, block: Block) -> None:
        """Writes ``block`` as a ``tessera.region``: its operands are the stream values it
        reads from outside, its results the values used after it."""
        em = self.em
        members = set(block.nodes)
        for member in block.nodes:
            if member in self.boundaries and member not in self.env:
                self._write_folded(member)
        operands: list[TVal] = []
        for member in block.nodes:
            for source in member.all_input_nodes:
                if source in members or source not in self.env or not self.info.stream(source):
                    continue
                if all(self.env[source] is not seen for seen in operands):
                    operands.append(self.env[source])
        outputs = [
            m
            for m in block.nodes
            if isinstance(m.meta.get("val"), torch.Tensor)
            and not self.folding.folded(m)
            and any(u not in members for u in m.users)
        ]
        in_types = [em.type_of(v) for v in operands]
        out_types = [em.type(self.shape(m), self.dtype(m)) for m in outputs]
        name = em.fresh("r")
        count = f":{len(outputs)}" if len(outputs) > 1 else ""
        em.line(f'{name}{count} = "tessera.region"({", ".join(em.value(v) for v in operands)}) ({{')
        arguments = [TVal(em.fresh("x"), v.shape, v.dtype) for v in operands]
        typed = ", ".join(f"{a.name}: {t}" for a, t in zip(arguments, in_types, strict=True))
        em.line(f"^bb0({typed}):" if operands else "^bb0:")
        # Inside the region every name for an operand's value reads the block argument.
        outside = {n: v for n, v in self.env.items() if any(v is o for o in operands)}
        for node, value in outside.items():
            self.env[node] = arguments[next(i for i, o in enumerate(operands) if o is value)]
        em.depth += 1
        for member in block.nodes:
            self._node(member)
        em.loc = f"loc({quote(block.label)})"
        yielded = ", ".join(em.value(self.arg(m)) for m in outputs)
        em.op(f'"tessera.yield"({yielded}) : ({", ".join(out_types)}) -> ()')
        em.depth -= 1
        attributes = [f"label = {quote(block.label)}", f"layer = {block.layer} : i64"]
        kind = self._kind(block)
        if kind is not None:
            attributes.insert(0, f"kind = {quote(kind)}")
        em.op(
            f"}}) {{{', '.join(attributes)}}} : ({', '.join(in_types)}) -> ({', '.join(out_types)})"
        )
        self.env.update(outside)
        for member in members:
            if member not in self.boundaries:  # folded values live outside the region
                self.env.pop(member, None)
        for index, member in enumerate(outputs):
            result = f"{name}#{index}" if count else name
            self.env[member] = TVal(result, self.shape(member), self.dtype(member))

    def _kind(self, block: Block) -> str | None:
        """'sliding' when a mask with a window reaches the block, 'global' for any other mask
        or an attention op, None for a block without attention."""
        members = set(block.nodes)
        windows: list[int | None] = []
        seen: set[fx.Node] = set()
        pending = list(block.nodes)
        while pending:
            node = pending.pop()
            if node in seen:
                continue
            seen.add(node)
            value = self.folding.values.get(node)
            if node in self.boundaries and isinstance(value, Folded):
                found = mask_window(value)
                if found is not None:
                    windows.append(found.window)
            for source in node.all_input_nodes:
                if source in members or not self.info.stream(source):
                    pending.append(source)
        if any(w is not None for w in windows):
            return "sliding"
        attention = any(
            n.target == torch.ops.aten.scaled_dot_product_attention.default for n in block.nodes
        )
        return "global" if windows or attention else None
