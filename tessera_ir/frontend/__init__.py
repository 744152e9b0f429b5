"""Torch front end: traces a torch.nn.Module into high-level IR (docs/high-level-ir.md)."""

from .trace import TracedProgram, trace

__all__ = ["TracedProgram", "trace"]
