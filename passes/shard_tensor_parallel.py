"""tessera-shard-tensor-parallel: one rank's program of a Megatron-style tensor-parallel model,
from the mid-level IR.

Per decoder block (docs/architecture.md, "Tensor parallelism"):

- attention: the q projection is column parallel over the query heads (rank r computes heads
  [r·Hq/N, (r+1)·Hq/N)); k and v too when there are at least N kv heads, else each rank
  keeps the one kv head its query heads read (all of them share it); the head reshapes,
  transposes, rope, QK-norm and attention then work on the rank's heads
  (``tp_propagate.py``); the output projection is row parallel and an all-reduce follows it;
- the gated MLP: gate and up column parallel, down row parallel over the intermediate size,
  then an all-reduce.

Each all-reduce directly follows its projection, so Gemma 2/3's post-attention and
post-feedforward norms read the full sum. The embedding and the LM head are sharded over
the vocabulary (``tp_vocab.py``). Ops that none of this reaches (norms, residual adds) run
whole on every rank.

Weights keep their names and record their slice; the collectives take a communicator
argument (``tp_signature.py``). A size that the ranks must divide and do not is an error
naming it and the ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir

from tessera.dialects import FlashAttention, GatedMlp
from tessera.errors import PassError
from tessera.ir_types import shaped_dims
from tessera.ir_walk import walk_ops
from tessera.pass_registry import register_pass
from tessera.runtime.shard_layout import WeightShard

from .match import producer
from .tp_projections import all_reduce_after, column_parallel, row_parallel
from .tp_propagate import Split, propagate
from .tp_signature import MODULE_ATTR, ShardedSignature, located, mark_module
from .tp_vocab import shard_lm_head, shard_lookup

# Ops between a projection and attention's q, k or v that keep the head layout.
_HEAD_CHAIN = frozenset(
    {
        "linalg.transpose",
        "tensor.expand_shape",
        "tensor.collapse_shape",
        "tessera.rope.apply",
        "tessera.norm.rms",
        "arith.extf",
        "arith.truncf",
    }
)


@dataclass(frozen=True)
class ShardTensorParallelOptions:
    """``ranks``: how many ranks share the model (1: the pass changes nothing); ``rank``:
    the one this program is for, in [0, ranks)."""

    ranks: int = 1
    rank: int = 0


class _Function:
    """Sharding one function: its signature and the row-parallel projections done so far."""

    def __init__(self, function: ir.Operation, ranks: int, rank: int) -> None:
        self.signature = ShardedSignature(function)
        self.function = function
        self.ranks = ranks
        self.rank = rank
        self._reduced: list[ir.Operation] = []

    def row_parallel(self, op: ir.Operation, split: Split) -> None:
        if any(op == done for done in self._reduced):
            raise located("this projection contracts the heads of two attention ops", op)
        self._reduced.append(op)
        row_parallel(op, self.signature, split, self.ranks)

    def attention(self, op: ir.Operation) -> None:
        view = FlashAttention(op)
        if "tessera.layout" in op.attributes:
            raise located("shard before the CUDA layout rewrite (tessera.layout)", op)
        q, k, v = (shaped_dims(x.type) for x in (view.q, view.k, view.v))
        heads, kv_heads, depth, k_depth, v_depth = q[1], k[1], q[3], k[3], v[3]
        if heads is None or heads % self.ranks:
            raise located(f"the query heads ({heads}) are not divisible by ranks={self.ranks}", op)
        if kv_heads is None or depth is None or k_depth is None or v_depth is None:
            raise located("attention needs static kv heads and head dims to shard its heads", op)
        if kv_heads % self.ranks == 0:
            kv_local, kv_first = kv_heads // self.ranks, self.rank * (kv_heads // self.ranks)
        elif self.ranks % kv_heads == 0:
            # Fewer kv heads than ranks: the query heads of a rank all read one kv head.
            kv_local, kv_first = 1, self.rank // (self.ranks // kv_heads)
        else:
            raise located(
                f"the kv heads ({kv_heads}) and ranks={self.ranks} do not divide one another: "
                "kv heads are split when ranks divide them, else each rank keeps the one its "
                "query heads read",
                op,
            )
        local = heads // self.ranks
        # k and v need their projections only when their heads are split.
        parts = "qkv" if kv_local != kv_heads else "q"
        roots = [_projection_of(op.operands[i], op, part) for i, part in enumerate(parts)]
        for i in range(len(roots)):
            for j in range(i):
                if roots[i] == roots[j]:
                    raise located(
                        f"attention's {parts[j]} and {parts[i]} come from one projection; "
                        "sharding needs one projection each",
                        op,
                    )
        q_split = self._columns(roots[0], local * self.rank * depth, local * depth, heads * depth)
        propagate(roots[0].results[0], q_split, self.row_parallel, "attention's q projection")
        if len(roots) == 1:
            return  # a single kv head, which every rank keeps whole
        for root, part, width in ((roots[1], "k", k_depth), (roots[2], "v", v_depth)):
            split = self._columns(root, kv_first * width, kv_local * width, kv_heads * width)
            propagate(root.results[0], split, self.row_parallel, f"attention's {part} projection")

    def _columns(self, op: ir.Operation, offset: int, size: int, features: int) -> Split:
        found = shaped_dims(op.results[0].type)[-1]
        if found != features:
            raise located(
                f"this projection feeds attention with {found} features per token, not the "
                f"{features} of its heads",
                op,
            )
        return column_parallel(op, self.signature, offset, size)

    def mlp(self, op: ir.Operation) -> None:
        view = GatedMlp(op)
        weights = list(view.weights)
        if len(weights) != 3:
            raise located(
                "the fused [2F, D] gate/up weight cannot be sharded by rows (gate and up "
                "would need two slices of it); keep w_gate and w_up separate",
                op,
            )
        gate, up, down = weights
        hidden = shaped_dims(gate.type)[0]
        if hidden is None or hidden % self.ranks:
            raise located(
                f"the MLP's intermediate size ({hidden}) is not divisible by ranks={self.ranks}",
                op,
            )
        size = hidden // self.ranks
        offset = self.rank * size
        self.signature.shard(gate, WeightShard(0, offset, size), op, "gate weight")
        self.signature.shard(up, WeightShard(0, offset, size), op, "up weight")
        self.signature.shard(down, WeightShard(1, offset, size), op, "down weight")
        all_reduce_after(view.y, self.signature, self.ranks)

    def run(self) -> None:
        ops = walk_ops(self.function)
        # The blocks first, so that a head count the ranks do not divide is reported before
        # the vocabulary.
        for op in ops:
            if op.name == "tessera.attention.flash":
                self.attention(op)
            elif op.name == "tessera.mlp.swi_glu":
                self.mlp(op)
            elif op.name == "tessera.attention.paged":
                raise located("shard the forward function before the KV cache is inserted", op)
        for op in ops:
            if op.name == "tessera.tensor.lookup":
                shard_lookup(op, self.signature, self.ranks, self.rank)
        shard_lm_head(self.function, self.signature, self.ranks, self.rank)
        self.signature.check_uses()
        self.signature.finish()


def _projection_of(value: ir.Value, attention: ir.Operation, part: str) -> ir.Operation:
    """The projection that computes attention's ``part`` (q, k or v), through the ops that
    keep the head layout."""
    current = value
    while True:
        op = producer(current)
        if op is None:
            raise located(
                f"attention's {part} is a block argument, not a projection's result; only "
                "heads computed by a projection can be sharded",
                attention,
            )
        if op.name == "tessera.mma.proj":
            return op
        if op.name not in _HEAD_CHAIN:
            raise located(
                f"attention's {part} is computed by '{op.name}', which is not a projection "
                "nor an op that keeps the head layout",
                attention,
            )
        current = op.operands[0]


@register_pass("tessera-shard-tensor-parallel", ShardTensorParallelOptions)
def shard_tensor_parallel(module: ir.Operation, options: ShardTensorParallelOptions) -> None:
    """Shard every function for rank `rank` of `ranks` (Megatron tensor parallelism):
    attention heads and the MLP's intermediate size split over the ranks with one
    tessera.collective.all_reduce after each block half, the embedding and LM head split over
    the vocabulary (options: ranks=N rank=R)."""
    if options.ranks < 1 or not 0 <= options.rank < options.ranks:
        raise PassError(
            f"tessera-shard-tensor-parallel: needs ranks >= 1 and 0 <= rank < ranks, found "
            f"ranks={options.ranks} rank={options.rank}"
        )
    if options.ranks == 1:
        return
    if MODULE_ATTR in module.attributes:
        raise PassError("tessera-shard-tensor-parallel: the module is already sharded")
    for view in module.regions[0].blocks[0].operations:
        op = view.operation
        if op.name == "func.func" and op.regions[0].blocks:
            # Types and attributes are made in the function's context, at its location.
            with op.context, op.location:
                _Function(op, options.ranks, options.rank).run()
    with module.context, module.location:
        mark_module(module, options.ranks, options.rank)
