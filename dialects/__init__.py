"""The ``tessera`` dialect: one schema per op (see ``tessera.schema`` for the machinery)."""

from __future__ import annotations

from tessera.schema import SCHEMAS, OpDef

from . import attention_flash, lookup, mlp_swi_glu, mma_proj, norm_rms, region, rope
from .attention_flash import FlashAttention
from .lookup import Lookup
from .mlp_swi_glu import GatedMlp
from .mma_proj import Projection
from .norm_rms import RmsNorm
from .region import Region, Yield
from .rope import RopeApply
from .verifier import verify_module, verify_op

__all__ = [
    "SCHEMAS",
    "FlashAttention",
    "GatedMlp",
    "Lookup",
    "OpDef",
    "Projection",
    "Region",
    "RmsNorm",
    "RopeApply",
    "Yield",
    "attention_flash",
    "is_pure",
    "lookup",
    "mlp_swi_glu",
    "mma_proj",
    "norm_rms",
    "region",
    "rope",
    "schema_of",
    "verify_module",
    "verify_op",
]


def schema_of(name: str) -> type[OpDef] | None:
    return SCHEMAS.get(name)


def is_pure(name: str) -> bool:
    schema = SCHEMAS.get(name)
    return schema is not None and schema.TRAITS.pure
