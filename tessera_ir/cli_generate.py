"""``tessera generate MODEL --prompt TEXT``: compile a model and stream what it generates.

MODEL is what ``tessera compile`` takes, loaded by its functions (``cli_compile.load_model``);
the compile is cached, so a second run starts generating at once. A checkpoint's prompt is
text, encoded with the checkpoint's own tokenizer (``tessera.tokenizer``), and the new tokens
are printed as text as they come. A built-in tiny model has no tokenizer: its prompt is token
ids and so is what it prints. ``--prompt-ids`` gives ids to any model and prints ids back,
which needs no tokenizer.

The arguments of generation are checked by the library (``CompiledModel.stream``, through
``tessera.runtime.sampling.Sampling``), before the compile here so that a typo does not wait
for one; this module checks only what the library cannot see: the prompt's text.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TextIO

from .cli_compile import DTYPES, TINY_PREFIX, _positive, load_model
from .errors import RuntimeInputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# What a decoder shows in place of bytes that do not yet make a whole character.
REPLACEMENT_CHARACTER = "\ufffd"
# Token ids on the command line: integers separated by commas and/or whitespace.
_SEPARATORS = re.compile(r"[,\s]+")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .models.tiny import CONFIGS

    parser = subparsers.add_parser(
        "generate",
        help="generate text (or token ids) from a prompt",
        description=(
            "Compile a model (cached, as `tessera compile` does) and generate from a prompt, "
            "printing the new tokens as they come: as text for a checkpoint, decoded with its "
            "tokenizer; as token ids for a tiny model or with --prompt-ids. Greedy unless "
            "--do-sample; the options are those of CompiledModel.generate."
        ),
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help=(
            "a Hugging Face checkpoint folder (with its tokenizer), a Hub id in the local cache, "
            f"or tiny:<name> for a built-in tiny model with seeded random weights and no "
            f"tokenizer ({', '.join(TINY_PREFIX + name for name in sorted(CONFIGS))})"
        ),
    )
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument(
        "--prompt",
        "-p",
        metavar="TEXT",
        help="the prompt: text for a checkpoint; token ids ('1,5,9' or '1 5 9') for a tiny model",
    )
    prompt.add_argument(
        "--prompt-ids",
        metavar="IDS",
        help="the prompt as token ids ('1,5,9'), for any model; the output is then ids too",
    )
    parser.add_argument(
        "--max-new-tokens",
        "-n",
        type=_positive,
        default=32,
        metavar="N",
        help="generate at most N tokens (fewer when an end token comes; default: 32)",
    )
    parser.add_argument(
        "--do-sample",
        action="store_true",
        help="sample the next token (default: greedy, the most likely one)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        metavar="T",
        help="with --do-sample: divide the logits by T > 0 (default: 1.0)",
    )
    parser.add_argument(
        "--top-k",
        type=_positive,
        metavar="K",
        help="with --do-sample: sample among the K most likely tokens (default: all)",
    )
    parser.add_argument(
        "--top-p",
        type=float,
        metavar="P",
        help="with --do-sample: sample among the most likely tokens whose probability reaches "
        "P, in (0, 1] (default: 1.0, all)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="with --do-sample: seed the sampling, so that a run repeats (default: a fresh seed "
        "each run)",
    )
    parser.add_argument(
        "--target",
        "-t",
        default="cpu",
        metavar="T",
        help="the target to compile for (as for tessera compile; default: cpu; the cuda "
        "and rocm targets build the generation programs too)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="the weights' dtype (auto: a checkpoint's own; float32 for tiny models)",
    )
    parser.set_defaults(run=run)


def parse_ids(text: str, flag: str, why: str = "") -> list[int]:
    """Token ids written as ``'1,5,9'`` or ``'1 5 9'``; a RuntimeInputError naming ``flag``
    (and ``why`` ids were expected) for anything else, or for none at all. Whether each id
    lies in the vocabulary is the compiled model's check, which knows the vocabulary."""
    words = [word for word in _SEPARATORS.split(text.strip()) if word]
    if not words:
        raise RuntimeInputError(f"{flag} is empty; give at least one token id ('1,5,9')")
    ids = []
    for word in words:
        try:
            ids.append(int(word))
        except ValueError:
            because = f"{why}: " if why else ""
            raise RuntimeInputError(
                f"{because}{flag} takes token ids separated by commas or spaces ('1,5,9'), "
                f"found {word!r}"
            ) from None
    return ids


class TextStream:
    """The text of generated tokens, handed out piece by piece as the tokens come.

    A character can take several tokens (byte-fallback tokens of a SentencePiece vocabulary,
    byte-level BPE), and a token alone may decode to nothing or to a replacement character.
    So each step decodes every token generated so far and hands out only what is new, holding
    it back while it ends in a replacement character (the rest of the character is yet to
    come)."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._tokens: list[int] = []
        self._shown = ""

    def add(self, token: int) -> str:
        """The text ``token`` completes (often empty while a character is incomplete)."""
        self._tokens.append(token)
        text = self._decode(self._tokens)
        if text.endswith(REPLACEMENT_CHARACTER):
            return ""
        return self._advance(text)

    def finish(self) -> str:
        """What is still held back (an incomplete character at the very end, as decoded)."""
        return self._advance(self._decode(self._tokens))

    def _advance(self, text: str) -> str:
        # A tokenizer may rewrite text it already decoded (spacing around punctuation); what
        # was printed stays, and the rest is what follows the part both texts share.
        shared = 0
        for shown, now in zip(self._shown, text, strict=False):
            if shown != now:
                break
            shared += 1
        self._shown = text
        return text[shared:]


def write_ids(tokens: Iterable[int], out: TextIO) -> None:
    """``tokens`` on one line, separated by spaces, each written as soon as it comes."""
    separator = ""
    for token in tokens:
        out.write(f"{separator}{token}")
        out.flush()
        separator = " "
    out.write("\n")
    out.flush()


def write_text(tokens: Iterable[int], decode: Callable[[list[int]], str], out: TextIO) -> None:
    """The text of ``tokens``, each piece written as soon as it is whole, then a newline."""
    stream = TextStream(decode)
    for token in tokens:
        piece = stream.add(token)
        if piece:
            out.write(piece)
            out.flush()
    out.write(stream.finish() + "\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    import torch

    import tessera
    from tessera.runtime.sampling import Sampling

    # The library's own checks, here before the compile (which takes a while) rather than at
    # the first step. --top-k's 0 (no limit, for the library) is refused by its parser: the
    # flag's default already means no limit.
    Sampling(args.do_sample, args.temperature, args.top_k, args.top_p)
    model = load_model(args.model, args.dtype)
    tokenizer = None
    if args.prompt_ids is not None:
        prompt = parse_ids(args.prompt_ids, "--prompt-ids")
    elif isinstance(model, torch.nn.Module):
        prompt = parse_ids(args.prompt, "--prompt", f"{args.model} has no tokenizer")
    else:
        if not args.prompt:
            raise RuntimeInputError("--prompt is empty; give the text to continue")
        # Loaded before the compile: a checkpoint without a tokenizer fails at once.
        from .tokenizer import load_tokenizer

        tokenizer = load_tokenizer(model)
        prompt = [int(token) for token in tokenizer(args.prompt)["input_ids"]]
        if not prompt:
            raise RuntimeInputError(f"--prompt {args.prompt!r} encodes to no tokens")
    # A tiny model is built in its dtype already; a checkpoint is read in it.
    dtype = None if isinstance(model, torch.nn.Module) else args.dtype
    compiled = tessera.compile(model, args.target, dtype=dtype)
    # Without --seed a sampled run draws a fresh seed: the global generator would repeat
    # itself (building a tiny model seeds it).
    seed = args.seed
    if seed is None and args.do_sample:
        seed = secrets.randbits(63)
    steps = compiled.stream(
        [prompt],
        args.max_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=seed,
    )
    tokens = (int(step[0]) for step in steps)
    if tokenizer is None:
        write_ids(tokens, sys.stdout)
    else:
        write_text(tokens, _decoder(tokenizer), sys.stdout)
    return 0


def _decoder(tokenizer: PreTrainedTokenizerBase) -> Callable[[list[int]], str]:
    """The text of a list of ids, without the special tokens (an end token is not text)."""

    def decode(ids: list[int]) -> str:
        text = tokenizer.decode(ids, skip_special_tokens=True)
        # One list of ids decodes to one string (a list of strings is a batch's).
        assert isinstance(text, str), f"decode of one sequence returned {type(text).__name__}"
        return text

    return decode
