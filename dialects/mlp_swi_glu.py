"""``tessera.mlp.swi_glu``: the gated MLP, down(act(x·gateᵀ) ⊙ x·upᵀ)."""

from __future__ import annotations

from tessera.schema import FLOAT, OpDef, Str, attr, dims, op, operand, result, same_dim, tensor

ACTIVATIONS = ("gelu_tanh", "silu", "gelu")


@op("tessera.mlp.swi_glu", pure=True)
class GatedMlp(OpDef):
    """y = (act(x·w_gateᵀ) ⊙ (x·w_upᵀ))·w_downᵀ with x [..., D], w_gate and w_up [F, D],
    w_down [D, F] (torch Linear layout). With three operands the second is the fused
    [2F, D] gate-and-up weight, gate rows first. gelu_tanh is Gemma's."""

    x = operand(tensor(min_rank=1, elements=FLOAT))
    weights = operand(tensor(rank=2, elements=FLOAT), variadic=True)
    y = result(tensor(min_rank=1, elements=FLOAT))
    activation = attr(Str(ACTIVATIONS))

    def verify(self) -> None:
        weights = list(self.weights)
        if len(weights) not in (2, 3):
            raise self.error(
                f"expects weights (w_gate, w_up, w_down) or (w_gate_up, w_down), "
                f"found {len(weights)} weight operands"
            )
        width = dims(self.x)[-1]
        down = dims(weights[-1])
        if len(weights) == 3:
            gate, up = dims(weights[0]), dims(weights[1])
            if not (same_dim(gate[0], up[0]) and same_dim(gate[1], up[1])):
                raise self.error(
                    f"w_gate {weights[0].type} and w_up {weights[1].type} must have the same shape"
                )
            hidden = gate[0]
        else:
            gate_up = dims(weights[0])
            gate = gate_up
            if gate_up[0] is not None and gate_up[0] % 2:
                raise self.error(
                    f"fused gate/up weight must have an even row count, found {gate_up[0]}"
                )
            hidden = None if gate_up[0] is None else gate_up[0] // 2
        if not same_dim(gate[1], width):
            raise self.error(f"gate weight takes {gate[1]} inputs but x's last dim is {width}")
        if not same_dim(down[1], hidden) or not same_dim(down[0], width):
            raise self.error(f"w_down {weights[-1].type} must be [{width}, {hidden}]")
        if str(self.y.type) != str(self.x.type):
            raise self.error(f"result type {self.y.type} must match x's type {self.x.type}")
