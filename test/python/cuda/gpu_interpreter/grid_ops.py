"""Rules: programmatic dependent launch (``griddepcontrol``).

A kernel that holds a ``griddepcontrol.wait`` may start before the kernel before it ends, so
it must not touch global memory before the wait: an access there is a fault (``access.py``
asks ``waited``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlir import ir

from .driver import rule

if TYPE_CHECKING:
    from .driver import Kernel
    from .state import Step, _Op, _Run


@rule("nvvm.griddepcontrol")
def _griddepcontrol(k: Kernel, op: ir.Operation, info: _Op) -> Step | None:
    if "wait" not in str(op.attributes["kind"]):
        return None  # launch_dependents: lets the next kernel launch; nothing to model
    k.waits = True

    def wait(run: _Run) -> None:
        run.waited = True

    return wait
