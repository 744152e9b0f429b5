"""``tessera.mma.proj``: a projection, x·w (or x·wᵀ) + bias, with an optional output softcap."""

from __future__ import annotations

from tessera.schema import (
    F32,
    FLOAT,
    Bool,
    OpDef,
    attr,
    dims,
    finite_positive,
    op,
    operand,
    result,
    same_dim,
    tensor,
)


@op("tessera.mma.proj", pure=True)
class Projection(OpDef):
    """y[..., n] = Σ_k x[..., k]·w[k, n] (+ bias[n]), or w[n, k] with transpose_w (torch Linear).
    Accumulates in f32; the result may be wider than x (f32 logits from bf16). softcap c maps
    y to c·tanh(y/c) (Gemma 2's final logits)."""

    x = operand(tensor(min_rank=1, elements=FLOAT))
    w = operand(tensor(rank=2, elements=FLOAT))
    bias = operand(tensor(rank=1, elements=FLOAT), optional=True)
    y = result(tensor(min_rank=1, elements=FLOAT))
    transpose_w = attr(Bool(), default=False)
    softcap = attr(F32(), optional=True)

    def verify(self) -> None:
        x, w, y = dims(self.x), dims(self.w), dims(self.y)
        k_dim, n_dim = (w[1], w[0]) if self.transpose_w else (w[0], w[1])
        if not same_dim(x[-1], k_dim):
            layout = "[N, K]" if self.transpose_w else "[K, N]"
            raise self.error(
                f"x's last dim {x[-1]} does not match w's K {k_dim} "
                f"(w is {layout}, transpose_w = {str(self.transpose_w).lower()})"
            )
        if len(y) != len(x) or not all(same_dim(a, b) for a, b in zip(y[:-1], x[:-1], strict=True)):
            raise self.error(f"result {self.y.type} must keep x's leading dims {x[:-1]}")
        if not same_dim(y[-1], n_dim):
            raise self.error(f"result's last dim {y[-1]} does not match w's N {n_dim}")
        if self.bias is not None and not same_dim(dims(self.bias)[0], n_dim):
            raise self.error(f"bias has {dims(self.bias)[0]} elements, expected N = {n_dim}")
        if self.softcap is not None and not finite_positive(self.softcap):
            raise self.error(f"softcap must be a finite positive number, found {self.softcap}")
