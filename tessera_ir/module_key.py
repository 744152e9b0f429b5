"""What a compiled artifact depends on in a torch module, known without tracing it.

Tracing a model (torch.export) takes seconds; looking a compiled model up in the cache should
not. ``module_fingerprint`` describes everything about a module that the traced IR follows
from: the source of every submodule's class (its ``forward`` and helpers), the config, each
parameter's name, shape and dtype, and each buffer's name, shape, dtype and values (buffers
such as RoPE's inverse frequencies are folded into the IR as constants; parameters are bound at
run time, so their values are not part of it). Two modules with equal fingerprints trace to the
same IR, so the fingerprint can key a cache entry made by an earlier trace; where it cannot be
made (a class without source, a config that is not plain data), there is none and the caller
traces.

``weights_by_name`` finds, for an artifact's weight names, the module's own tensors (weights
are bound by state-dict name, tied weights under each of their names).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Sequence
from typing import Any

import torch


def module_fingerprint(model: torch.nn.Module) -> dict[str, Any] | None:
    """A JSON-ready description of what tracing ``model`` depends on, or None when some part
    of it cannot be described (then only a trace can tell)."""
    sources: dict[str, str] = {}
    for module in model.modules():
        cls = type(module)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name in sources:
            continue
        digest = hashlib.sha256()
        try:
            for base in cls.__mro__:
                if base in (torch.nn.Module, object):
                    break
                digest.update(inspect.getsource(base).encode())
        except (OSError, TypeError):
            return None
        sources[name] = digest.hexdigest()
    config = getattr(model, "config", None)
    config_text = None
    if config is not None:
        try:
            as_dict = config.to_dict() if hasattr(config, "to_dict") else vars(config)
            config_text = json.dumps(as_dict, sort_keys=True, default=_plain)
        except (TypeError, ValueError):
            return None
    parameters = [
        [name, list(tensor.shape), str(tensor.dtype)]
        for name, tensor in model.named_parameters(remove_duplicate=False)
    ]
    buffers = []
    for name, tensor in model.named_buffers(remove_duplicate=False):
        values = hashlib.sha256(
            tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
        buffers.append([name, list(tensor.shape), str(tensor.dtype), values.hexdigest()])
    return {
        "classes": sorted(sources.items()),
        "config": config_text,
        "parameters": parameters,
        "buffers": buffers,
        "torch": torch.__version__,
    }


def _plain(value: object) -> object:
    """JSON for the config values json cannot write itself (dtypes); anything else is not
    plain data and makes the fingerprint unavailable."""
    if isinstance(value, torch.dtype):
        return str(value)
    raise TypeError(f"not plain data: {type(value).__name__}")


def weights_by_name(model: torch.nn.Module, names: Sequence[str]) -> dict[str, torch.Tensor] | None:
    """The module's tensor for each of ``names`` (parameters and buffers, tied ones under
    every name), or None when one of them is missing."""
    tensors: dict[str, torch.Tensor] = {
        **dict(model.named_buffers(remove_duplicate=False)),
        **dict(model.named_parameters(remove_duplicate=False)),
    }
    found = {}
    for name in names:
        tensor = tensors.get(name)
        if tensor is None:
            return None
        found[name] = tensor.detach()
    return found
