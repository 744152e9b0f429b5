"""``tessera.sample.greedy``: the greedy token of each row, straight from the hidden state and
the LM head, with the logits never materialised."""

from __future__ import annotations

from tessera.schema import (
    F32,
    FLOAT,
    Bool,
    OpDef,
    attr,
    dims,
    element_type,
    finite_positive,
    op,
    operand,
    result,
    same_dim,
    tensor,
)


@op("tessera.sample.greedy", pure=True)
class GreedySample(OpDef):
    """token[...] = the n of the largest logit[..., n], where logit is what ``tessera.mma.proj``
    with ``transpose_w`` computes from x [..., K] and w [N, K] (+ bias [N], then the softcap
    c·tanh(y/c)), rounded to x's element type (with ``rounded_softcap``, y rounds first and
    y/c, tanh and ·c each round). Ties go to the smallest n and a NaN logit counts
    as the largest, as ``torch.argmax`` decides."""

    x = operand(tensor(min_rank=1, elements=FLOAT))
    w = operand(tensor(rank=2, elements=FLOAT))
    bias = operand(tensor(rank=1, elements=FLOAT), optional=True)
    token = result(tensor(elements=("i64",)))
    softcap = attr(F32(), optional=True)
    rounded_softcap = attr(
        Bool(),
        default=False,
        doc="the softcap's y/c, tanh and ·c each round to x's type (a narrow-dtype model's own "
        "three ops); otherwise it is applied in f32 before the one rounding",
    )

    def verify(self) -> None:
        x, w, token = dims(self.x), dims(self.w), dims(self.token)
        if not same_dim(x[-1], w[1]):
            raise self.error(f"x's last dim {x[-1]} does not match w's K {w[1]} (w is [N, K])")
        for name, value in (("w", self.w), ("bias", self.bias)):
            if value is not None and element_type(value) != element_type(self.x):
                raise self.error(
                    f"{name} holds {element_type(value)} but x holds {element_type(self.x)}"
                )
        if len(token) != len(x) - 1 or not all(
            same_dim(a, b) for a, b in zip(token, x[:-1], strict=True)
        ):
            raise self.error(f"result {self.token.type} must have x's leading dims {x[:-1]}")
        if self.bias is not None and not same_dim(dims(self.bias)[0], w[0]):
            raise self.error(f"bias has {dims(self.bias)[0]} elements, expected N = {w[0]}")
        if self.softcap is not None and not finite_positive(self.softcap):
            raise self.error(f"softcap must be a finite positive number, found {self.softcap}")
        if self.rounded_softcap and self.softcap is None:
            raise self.error("rounded_softcap is set but there is no softcap")
