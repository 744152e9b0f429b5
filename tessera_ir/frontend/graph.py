"""What the translator needs to know about an exported graph before writing IR.

Every node is classified by what it reads (``reads``): the user input, weights (parameters
and persistent buffers), constants (non-persistent buffers and constants the graph lifted),
sizes. What reads neither the input nor a weight is folded (``folder.py``); the rest is
translated op by op, and ``stream`` marks what depends on the user input (the residual stream
that enters a decoder block as the region's operand).
Decoder blocks are the children of an ``nn.ModuleList`` whose children all share one class;
their nodes are found through ``nn_module_stack`` and emitted as one region each.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
from torch import fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from tessera.errors import TesseraError

aten = torch.ops.aten


class Reads(enum.Flag):
    NOTHING = 0
    INPUT = enum.auto()
    WEIGHT = enum.auto()
    CONSTANT = enum.auto()
    SIZES = enum.auto()


# Ops that look only at their tensor operands' shape, dtype or device, never their data.
METADATA_ONLY = {
    aten.sym_size.int,
    aten.sym_numel.default,
    aten.sym_stride.int,
    aten.new_ones.default,
    aten.new_zeros.default,
    aten.new_full.default,
    aten.new_empty.default,
    aten.zeros_like.default,
    aten.ones_like.default,
    aten.empty_like.default,
    aten.full_like.default,
    aten._assert_tensor_metadata.default,
}


@dataclass(eq=False)
class Block:
    """One decoder block: its module path, index in its ModuleList, and nodes in graph order."""

    label: str
    layer: int
    nodes: list[fx.Node] = field(default_factory=list)


@dataclass
class GraphInfo:
    order: list[fx.Node | Block]
    reads: dict[fx.Node, Reads]
    block_of: dict[fx.Node, Block]
    module_path: dict[fx.Node, str]
    input_kinds: dict[str, InputKind]

    def stream(self, node: fx.Node) -> bool:
        return bool(self.reads[node] & Reads.INPUT)


def block_lists(model: torch.nn.Module) -> list[str]:
    """Paths of the outermost ModuleLists whose children all have one class."""
    found: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if any(name.startswith(outer + ".") for outer in found):
            continue
        found.append(name)
    return found


def module_path(node: fx.Node, prefix: str) -> str:
    """The path of the innermost module that ran ``node``, relative to the traced model."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    if path == prefix:
        return ""
    return path.removeprefix(prefix + ".") if prefix else path


def _input_reads(kind: InputKind, persistent: bool | None) -> Reads:
    if kind == InputKind.USER_INPUT:
        return Reads.INPUT
    if kind == InputKind.PARAMETER or (kind == InputKind.BUFFER and persistent):
        return Reads.WEIGHT
    return Reads.CONSTANT


def analyze(exported: ExportedProgram, model: torch.nn.Module, prefix: str) -> GraphInfo:
    """Classifies ``exported``'s nodes; ``prefix`` is the attribute holding ``model`` in the
    traced wrapper (stripped from module paths)."""
    specs = {s.arg.name: s for s in exported.graph_signature.input_specs}
    nodes = list(exported.graph.nodes)
    reads: dict[fx.Node, Reads] = {}
    for node in nodes:
        if node.op == "placeholder":
            spec = specs[node.name]
            reads[node] = _input_reads(spec.kind, spec.persistent)
        elif node.target in METADATA_ONLY:
            reads[node] = Reads.SIZES
        else:
            found = Reads.NOTHING
            for source in node.all_input_nodes:
                found |= reads[source]
                if isinstance(source.meta.get("val"), torch.SymInt):
                    found |= Reads.SIZES
            reads[node] = found
    calls = [n for n in nodes if n.op == "call_function"]
    paths = {n: module_path(n, prefix) for n in nodes}
    block_of = _assign_blocks(calls, paths, block_lists(model))
    return GraphInfo(
        order=_order(nodes, block_of),
        reads=reads,
        block_of=block_of,
        module_path=paths,
        input_kinds={name: spec.kind for name, spec in specs.items()},
    )


def _assign_blocks(
    calls: list[fx.Node], paths: dict[fx.Node, str], lists: list[str]
) -> dict[fx.Node, Block]:
    blocks: dict[str, Block] = {}
    block_of: dict[fx.Node, Block] = {}
    for node in calls:
        path = paths[node]
        for container in lists:
            if not path.startswith(container + "."):
                continue
            index = path[len(container) + 1 :].split(".")[0]
            label = f"{container}.{index}"
            if label not in blocks:
                blocks[label] = Block(label, int(index))
            blocks[label].nodes.append(node)
            block_of[node] = blocks[label]
    return block_of


def _order(nodes: list[fx.Node], block_of: dict[fx.Node, Block]) -> list[fx.Node | Block]:
    """The emission order: blocks in graph order, each preceded by the outside nodes it needs
    that are not placed yet; outside nodes no block needs follow in graph order at the end.

    Outside nodes are placed when first needed, not where torch.export put them: the graph's
    order of independent computations can depend on Python's hash seed (transformers' Gemma 3
    builds its two rope tables by iterating a set), and the IR text keys the compile cache."""
    position = {n: i for i, n in enumerate(nodes)}
    placed: set[fx.Node] = set()
    order: list[fx.Node | Block] = []

    def place_with_inputs(roots: list[fx.Node], block: Block | None) -> None:
        members = set(block.nodes) if block is not None else set()
        needed: set[fx.Node] = set()
        pending = list(roots)
        while pending:
            source = pending.pop()
            if source in placed or source in members or source in needed:
                continue
            if block_of.get(source) is not None:
                raise TesseraError(
                    f"block '{block.label if block else '?'}' uses a value of block "
                    f"'{block_of[source].label}' that is not yet computed"
                )
            needed.add(source)
            pending.extend(source.all_input_nodes)
        for source in sorted(needed, key=position.__getitem__):
            if any(s in members for s in source.all_input_nodes):
                raise TesseraError(
                    f"a value flows out of block '{block.label if block else '?'}' and back "
                    f"in (through '{source.name}'); it cannot be one region"
                )
            order.append(source)
            placed.add(source)

    for node in nodes:
        block = block_of.get(node)
        if block is None or node in placed:
            continue
        place_with_inputs([s for m in block.nodes for s in m.all_input_nodes], block)
        order.append(block)
        placed.update(block.nodes)
    for node in nodes:
        if node not in placed and block_of.get(node) is None:
            place_with_inputs([node], None)
    return order
