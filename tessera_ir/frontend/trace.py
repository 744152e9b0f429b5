"""``trace``: a torch.nn.Module → the high-level IR (docs/high-level-ir.md) and its weights."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from mlir import ir
from torch.export import Dim, ExportedProgram

from tessera.context import parse_module
from tessera.diagnostics import MLIRError, from_mlir_error
from tessera.errors import ParseError, TesseraError, VerifyError

from .folder import fold
from .graph import analyze
from .translator import Translator

# The attribute holding the user's model in the traced wrapper; stripped from names and paths.
_PREFIX = "model"


@dataclass
class TracedProgram:
    """A traced model: ``module`` holds ``func.func @forward(%input_ids, weights...)``;
    ``weights`` names each weight argument (state-dict name, shape, dtype) in order and
    ``parameters`` holds the tensors to pass for them."""

    module: ir.Module
    weights: list[tuple[str, tuple[int, ...], torch.dtype]]
    parameters: list[torch.Tensor]
    model_kind: str
    output_dtype: torch.dtype
    dynamic_batch: bool
    exported: ExportedProgram


class LogitsOnly(torch.nn.Module):
    """``forward(input_ids)`` → the model's logits, without a kv cache."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        parameters = inspect.signature(model.forward).parameters
        self._options = {"use_cache": False} if "use_cache" in parameters else {}

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        output = self.model(input_ids, **self._options)
        if hasattr(output, "logits"):
            return output.logits
        if isinstance(output, (tuple, list)):
            return output[0]
        return output


# The example input torch.export traces with; a static batch is this one's.
EXAMPLE_BATCH, EXAMPLE_LENGTH = 2, 7


def export(model: torch.nn.Module) -> tuple[ExportedProgram, bool]:
    """``torch.export`` of the logits wrapper with dynamic batch and sequence dims; when the
    batch cannot be dynamic, a static batch of ``EXAMPLE_BATCH`` (returned flag False).

    When both fail, the error names both attempts: the first one's message usually says what
    in the model stands in the way (a data-dependent branch, an unsupported call), while the
    second may only repeat it or fail on something the static batch brought in."""
    wrapper = LogitsOnly(model)
    example = torch.zeros((EXAMPLE_BATCH, EXAMPLE_LENGTH), dtype=torch.int64)
    sequence = Dim("sequence", min=1)
    try:
        dims = {0: Dim("batch", min=1), 1: sequence}
        return torch.export.export(wrapper, (example,), dynamic_shapes=(dims,)), True
    except Exception as error:  # torch.export raises many error types; retry, then report it
        dynamic_error = error
    try:
        return torch.export.export(wrapper, (example,), dynamic_shapes=({1: sequence},)), False
    except Exception as error:
        raise TesseraError(
            f"torch.export failed for {type(model).__name__}:\n"
            f"  with a dynamic batch and sequence length: {_first_lines(dynamic_error)}\n"
            f"  with a static batch of {EXAMPLE_BATCH}: {_first_lines(error)}"
        ) from dynamic_error


def _first_lines(error: BaseException, limit: int = 40) -> str:
    """``error``'s type and message, indented under its attempt; torch.export's messages can
    run to pages of guards and suggestions, of which the first lines say what went wrong."""
    lines = f"{type(error).__name__}: {error}".strip().splitlines()
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more lines)"]
    return "\n    ".join(lines)


def trace(model: torch.nn.Module, context: ir.Context) -> TracedProgram:
    """Traces ``model`` (eval mode) into high-level IR in ``context``.

    Raises ``UnsupportedOpError`` for an aten op without a translation (naming the op and the
    module that ran it) and ``TesseraError`` when export or verification fails."""
    exported, dynamic_batch = export(model)
    info = analyze(exported, model, _PREFIX)
    folding = fold(exported, info)
    config = getattr(model, "config", None)
    model_kind = str(getattr(config, "model_type", None) or "custom")
    translator = Translator(exported, info, folding, model_kind, _PREFIX)
    text = translator.translate()
    module = _parse(text, context)
    _verify(module)
    output = next(n for n in exported.graph.nodes if n.op == "output").args[0][0]
    return TracedProgram(
        module=module,
        weights=[
            (
                translator.state_dict_name(target),
                tuple(node.meta["val"].shape),
                node.meta["val"].dtype,
            )
            for target, node in translator.weights
        ],
        parameters=[exported.state_dict[target] for target, _ in translator.weights],
        model_kind=model_kind,
        output_dtype=output.meta["val"].dtype,
        dynamic_batch=dynamic_batch,
        exported=exported,
    )


def _parse(text: str, context: ir.Context) -> ir.Module:
    try:
        return parse_module(text, context, source_name="tessera.frontend")
    except ParseError as error:
        line = ""
        if error.location is not None:
            line = text.splitlines()[error.location.line - 1].strip()
        raise TesseraError(
            f"internal error: the front end wrote IR that does not parse: {error.message}\n  {line}"
        ) from None


def _verify(module: ir.Module) -> None:
    """MLIR's verifier. (The tessera ops' own verifier lives in ``tessera.dialects``, above
    this package; the pipeline runs it on every module it is given.)"""
    try:
        module.operation.verify()
    except MLIRError as error:
        first = from_mlir_error(error)[0]
        raise VerifyError(f"traced IR does not verify: {first.message}", first.location) from None
