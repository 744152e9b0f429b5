"""The ``tessera`` dialect: one schema per op (see ``tessera.schema`` for the machinery)."""

from __future__ import annotations

from tessera.schema import SCHEMAS, OpDef

from . import (
    attention_flash,
    attention_paged,
    collective_all_gather,
    collective_all_reduce,
    kv_append,
    lookup,
    mlp_swi_glu,
    mma_proj,
    norm_rms,
    region,
    rope,
    sample_greedy,
)
from .attention_flash import FlashAttention
from .attention_paged import PagedAttention
from .collective_all_gather import AllGather
from .collective_all_reduce import AllReduce
from .kv_append import KvAppend
from .lookup import Lookup
from .mlp_swi_glu import GatedMlp
from .mma_proj import Projection
from .norm_rms import RmsNorm
from .region import Region, Yield
from .rope import RopeApply
from .sample_greedy import GreedySample
from .verifier import verify_module, verify_op

__all__ = [
    "SCHEMAS",
    "AllGather",
    "AllReduce",
    "FlashAttention",
    "GatedMlp",
    "GreedySample",
    "KvAppend",
    "Lookup",
    "OpDef",
    "PagedAttention",
    "Projection",
    "Region",
    "RmsNorm",
    "RopeApply",
    "Yield",
    "attention_flash",
    "attention_paged",
    "collective_all_gather",
    "collective_all_reduce",
    "is_pure",
    "kv_append",
    "lookup",
    "mlp_swi_glu",
    "mma_proj",
    "norm_rms",
    "region",
    "rope",
    "sample_greedy",
    "schema_of",
    "verify_module",
    "verify_op",
]


def schema_of(name: str) -> type[OpDef] | None:
    return SCHEMAS.get(name)


def is_pure(name: str) -> bool:
    schema = SCHEMAS.get(name)
    return schema is not None and schema.TRAITS.pure
