"""The shape of the traced IR: the function's signature, one region per decoder block with the
right kind, weights as named arguments, shared values before the regions, the forms the fusion
passes read (docs/high-level-ir.md)."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from mlir import ir

from tessera.context import make_context
from tessera.dialects import verify_module
from tessera.frontend import TracedProgram, trace
from tessera.ir_walk import walk_ops
from tessera.models.tiny import tiny_gemma


@cache
def traced(
    name: str, attention: str = "eager", dtype: torch.dtype = torch.float32
) -> tuple[torch.nn.Module, TracedProgram]:
    model = tiny_gemma(name, dtype, attn_implementation=attention)
    return model, trace(model, make_context())


def forward_of(program: TracedProgram) -> ir.Operation:
    return next(
        op.operation for op in program.module.body.operations if op.operation.name == "func.func"
    )


def regions_of(program: TracedProgram) -> list[ir.Operation]:
    return [op for op in walk_ops(program.module.operation) if op.name == "tessera.region"]


def ops_in(root: ir.Operation, name: str) -> list[ir.Operation]:
    return [op for op in walk_ops(root) if op.name == name]


@pytest.mark.parametrize(
    ("name", "attention", "kinds"),
    [
        ("gemma1-mqa", "eager", ["global", "global"]),
        ("gemma1-mha", "sdpa", ["global", "global"]),
        ("gemma2-gqa", "eager", ["sliding", "global", "sliding"]),
        ("gemma3-gqa", "sdpa", ["sliding", "sliding", "global"]),
        ("gemma3-mqa-odd", "eager", ["sliding", "global"]),
    ],
)
def test_one_region_per_decoder_block(name: str, attention: str, kinds: list[str]) -> None:
    model, program = traced(name, attention)
    assert program.module.operation.verify()
    assert verify_module(program.module.operation) == []
    regions = regions_of(program)
    assert [str(r.attributes["label"].value) for r in regions] == [
        f"model.layers.{i}" for i in range(model.config.num_hidden_layers)
    ]
    assert [int(r.attributes["layer"].value) for r in regions] == list(range(len(regions)))
    assert [str(r.attributes["kind"].value) for r in regions] == kinds
    for region in regions:
        # The residual stream goes in and comes out; everything else is used from above.
        (operand,) = region.operands
        (result,) = region.results
        assert (
            str(operand.type) == str(result.type) == f"tensor<?x?x{model.config.hidden_size}xf32>"
        )
        assert len(ops_in(region, "linalg.softmax")) == 1
        assert len(ops_in(region, "linalg.batch_matmul")) == 2
        assert len(ops_in(region, "linalg.matmul")) == 7  # q, k, v, o, gate, up, down


def test_signature_has_dynamic_ids_and_named_weights() -> None:
    model, program = traced("gemma2-gqa")
    function = forward_of(program)
    kind = function.attributes["function_type"].value
    assert str(kind.inputs[0]) == "tensor<?x?xi64>"
    assert str(kind.results[0]) == f"tensor<?x?x{model.config.vocab_size}xf32>"
    assert str(function.attributes["tessera.model"].value) == "gemma2" == program.model_kind
    assert program.output_dtype == torch.float32 and program.dynamic_batch
    arguments = function.attributes["arg_attrs"]
    assert str(arguments[0]["tessera.input"].value) == "input_ids"
    names = [str(arguments[i + 1]["tessera.weight"].value) for i in range(len(program.weights))]
    assert names == [name for name, _, _ in program.weights]
    assert len(kind.inputs) == 1 + len(program.weights)
    state = model.state_dict()
    for (name, shape, dtype), tensor, type_ in zip(
        program.weights, program.parameters, list(kind.inputs)[1:], strict=True
    ):
        assert tuple(state[name].shape) == shape == tuple(tensor.shape) == tuple(type_.shape)
        assert state[name].dtype == dtype
        assert torch.equal(state[name], tensor)
    # The tied embedding / LM head is one argument, under the name torch.export gives it.
    assert len(set(names)) == len(names)
    assert ("lm_head.weight" in names) != ("model.embed_tokens.weight" in names)
    # Every parameter the model computes with is an argument; nothing else is.
    assert set(names) | {"model.embed_tokens.weight", "lm_head.weight"} == set(state)


def test_buffers_are_inlined_constants_and_shared_values_precede_their_regions() -> None:
    model, program = traced("gemma3-gqa")
    function = forward_of(program)
    body = [op.operation for op in function.regions[0].blocks[0].operations]
    first_region = next(i for i, op in enumerate(body) if op.name == "tessera.region")
    # The rotary buffer is folded into the tables: the frequencies of each lane, the halves
    # repeating it (concat(f, f)), are one inlined constant.
    inv_freq = model.model.rotary_emb.sliding_attention_inv_freq
    lanes = 2 * inv_freq.numel()
    constants = [
        op
        for op in body
        if op.name == "arith.constant"
        and isinstance(op.attributes["value"], ir.DenseFPElementsAttr)
        and op.attributes["value"].type.shape == [lanes]
    ]
    values = [[float(c.attributes["value"][i]) for i in range(lanes)] for c in constants]
    assert torch.cat([inv_freq, inv_freq]).tolist() in values
    # Masks and positions: no-input linalg.generic ops reading linalg.index in the function
    # body, each before the first region that uses it (the global mask before the global layer).
    index_generics = [
        i
        for i, op in enumerate(body)
        if op.name == "linalg.generic" and len(op.operands) == 1 and ops_in(op, "linalg.index")
    ]
    assert len(index_generics) >= 3  # sliding mask, global mask, positions
    assert min(index_generics) < first_region
    regions = [i for i, op in enumerate(body) if op.name == "tessera.region"]
    assert max(index_generics) < regions[-1]
    assert not [
        op
        for op in walk_ops(function)
        if op.name.startswith("tessera.") and op.name not in ("tessera.region", "tessera.yield")
    ]


def test_sdpa_is_written_out_with_f32_scores_and_a_select_mask() -> None:
    _, program = traced("gemma3-gqa", "sdpa", torch.bfloat16)
    region = regions_of(program)[0]
    scores, values = ops_in(region, "linalg.batch_matmul")
    assert "xbf16>" in str(scores.operands[0].type) and "xf32>" in str(scores.results[0].type)
    (softmax,) = ops_in(region, "linalg.softmax")
    assert "xf32>" in str(softmax.results[0].type)
    (select,) = [
        op
        for op in ops_in(region, "arith.select")
        if isinstance(op.operands[0].type, ir.RankedTensorType)
    ]
    assert select.operands[0].type.element_type == ir.IntegerType.get_signless(
        1, context=select.context
    )
    assert "xbf16>" in str(values.operands[0].type)


def test_ops_carry_the_module_path_and_model_source_line() -> None:
    _, program = traced("gemma1-mqa")
    region = regions_of(program)[0]
    matmul = ops_in(region, "linalg.matmul")[0]
    location = matmul.location
    assert location.is_a_name() and location.name_str == "model.layers.0.self_attn.q_proj"
    assert location.child_loc.is_a_file()
    assert location.child_loc.filename.endswith("modeling_gemma.py")


def test_static_batch_fallback() -> None:
    class BatchOfTwo(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            x = self.embed(input_ids)
            if x.shape[0] != 2:  # specialises the batch: export refuses a dynamic one
                x = x * 2
            return x

    program = trace(BatchOfTwo().eval(), make_context())
    assert not program.dynamic_batch
    assert str(forward_of(program).attributes["function_type"].value.inputs[0]) == "tensor<2x?xi64>"
