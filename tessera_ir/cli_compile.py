"""``tessera compile MODEL --target T -o ARTIFACT``: compile a model into an artifact folder.

MODEL is a Hugging Face checkpoint folder or ``tiny:<name>``, one of the built-in tiny models
with seeded random weights (``tessera.models.tiny``): the same two sources the main example,
``examples/run_gemma.py``, takes, loaded by the same functions. ``load_model`` is shared with
the subcommands that run models.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import TesseraError

if TYPE_CHECKING:
    import torch

TINY_PREFIX = "tiny:"
# --dtype's values: torch's names (as tessera.compile and from_pretrained take them) and
# "auto", a checkpoint's own dtype (float32 for a tiny model).
DTYPES = ("auto", "bfloat16", "float16", "float32")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .models.tiny import CONFIGS

    parser = subparsers.add_parser(
        "compile",
        help="compile a model into an artifact folder",
        description=(
            "Compile a model for a target and write the artifact (manifest, binaries, every "
            "stage's IR) to a new folder, which tessera.runtime.load runs; the weights are "
            "bound separately. Compiles are cached (`tessera cache list`)."
        ),
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help=(
            "a Hugging Face checkpoint folder, or tiny:<name> for a built-in tiny model with "
            f"seeded random weights ({', '.join(TINY_PREFIX + name for name in sorted(CONFIGS))})"
        ),
    )
    parser.add_argument(
        "--target",
        "-t",
        default="auto",
        metavar="T",
        help="cpu, cpu:<isa>, cuda, cuda:sm_80, cuda:sm_90, or auto (default: cuda where a GPU "
        "and ptxas are found, else cpu)",
    )
    parser.add_argument(
        "--output", "-o", required=True, metavar="ARTIFACT", help="the artifact folder to write"
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="the weights' dtype (auto: a checkpoint's own; float32 for tiny models)",
    )
    parser.add_argument("--max-batch", type=_positive, help="the largest batch accepted")
    parser.add_argument(
        "--max-seq-len",
        type=_positive,
        help="the longest sequence accepted (default: the config's max_position_embeddings)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="build afresh, neither reusing nor storing"
    )
    parser.set_defaults(run=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def torch_dtype(name: str) -> torch.dtype:
    import torch

    dtype: torch.dtype = getattr(torch, "float32" if name == "auto" else name)
    return dtype


def load_model(spec: str, dtype: str | None) -> torch.nn.Module | Path | str:
    """MODEL as given on the command line: a built-in tiny model (built here, in ``dtype``,
    float32 for auto), a checkpoint folder (returned as a path) or a Hub id (returned as is),
    for ``tessera.compile`` to load in ``dtype`` (auto: the checkpoint's)."""
    from .models.tiny import CONFIGS, tiny_gemma

    if spec.startswith(TINY_PREFIX):
        name = spec.removeprefix(TINY_PREFIX)
        if name not in CONFIGS:
            raise TesseraError(
                f"unknown tiny model '{name}' in MODEL '{spec}' (tiny models: "
                f"{', '.join(TINY_PREFIX + known for known in sorted(CONFIGS))})"
            )
        return tiny_gemma(name, dtype=torch_dtype(dtype or "auto"))
    path = Path(spec)
    if path.exists():
        return path
    if _looks_like_hub_id(spec):
        # Resolved from the local Hugging Face cache by tessera.compile, whose error names the
        # id and the cache folder when it is not there.
        return spec
    raise TesseraError(
        f"MODEL '{spec}' is neither a checkpoint folder (no such path), a Hub id "
        f"(owner/name) nor {TINY_PREFIX}<name> for a built-in tiny model"
    )


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~"))


def run(args: argparse.Namespace) -> int:
    import tessera

    output = Path(args.output)
    # Checked before compiling, which takes a while, rather than when the result is saved.
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise TesseraError(f"-o {output}: exists and is not an empty folder; choose a new folder")
    model = load_model(args.model, args.dtype)
    dtype = args.dtype if isinstance(model, Path | str) else None
    compiled = tessera.compile(
        model,
        args.target,
        dtype=dtype,
        max_batch=args.max_batch,
        max_seq_len=args.max_seq_len,
        cache=not args.no_cache,
    )
    compiled.save(output)
    how = "cache hit" if compiled.cache_hit else "compiled"
    print(
        f"{output}: {args.model} for {compiled.target} ({how} in "
        f"{compiled.compile_seconds:.1f} s, cache key {compiled.key})",
        file=sys.stdout,
    )
    return 0
