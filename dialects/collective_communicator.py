"""The communicator operand that every ``tessera.collective.*`` op takes.

A collective runs over the ranks of a tensor-parallel program; the communicator names them at
run time. In the IR it is a function argument, an int64 tensor [1] bound like a weight
(``tessera.weight = "tessera.communicator"``): on the CPU it holds the address of the
runtime's callback (``runtime/collectives.py``). Taking it as an operand, as MLIR's ``mpi``
dialect takes its communicator, keeps each collective's dependence on it visible to every
pass that copies or moves the op.
"""

from __future__ import annotations

from mlir import ir

from tessera.schema import OpDef, dims, tensor

COMMUNICATOR_TYPE = tensor(rank=1, elements=("i64",))


def verify_communicator(view: OpDef, communicator: ir.Value, ranks: int) -> None:
    """The communicator is tensor<1xi64> and the op runs over at least two ranks."""
    if dims(communicator) != [1]:
        raise view.error(f"communicator must be tensor<1xi64>, found {communicator.type}")
    if ranks < 2:
        raise view.error(f"ranks must be at least 2, found {ranks}")
