"""Generation: the prompt through the cached prefill program, then one decode step per token.

A compiled model with a KV cache has two programs besides ``prefill`` (``runtime/kv_layout.py``
names them): ``prefill_kv`` runs a chunk of prompt tokens and ``decode`` one token per
sequence, each writing the tokens' keys and values into the cache and attending over it.
``decode_steps`` drives them as transformers' ``generate`` does, token for token:

1. The batch is left padded (``attention_mask``): every row ends at the last column, so all
   rows share one cache index per step; each row's keys before its first token are hidden
   (``kv_start``) and its rope positions count its own tokens (``attention_mask.positions``).
2. The prompt runs in chunks of at most ``CachedPrograms.chunk`` tokens, so that the sliding
   layers' rings stay small (``runtime/kv_cache.py``); the last chunk's last logits give the
   first new token.
3. Each step chooses a token per row (``runtime/sampling.py``). Greedy steps whose logits
   nobody keeps run ``decode_greedy`` instead of ``decode`` where the artifact has it (the GPU
   target builds it): its LM head returns the tokens and the logits are never written.
   A row that emits an end token is done: it gets the pad token from then on, as in
   transformers, its blocks go back to the pool, and it leaves the batch, so the decode
   program runs on the live rows only.

``cached_logits`` runs a padded batch through ``prefill_kv`` once (a temporary cache holding
the whole batch), which the call interface uses for left-padded inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from tessera.errors import RuntimeInputError, TesseraError

from . import kv_layout as names
from .attention_mask import padding_starts, positions
from .kv_cache import PagedKVCache, cache_bytes
from .kv_layout import KvLayout
from .manifest import BufferSpec, Manifest
from .sampling import Sampling, next_tokens, seeded_generator


@runtime_checkable
class StatefulProgram(Protocol):
    """A compiled program with state buffers (``runtime/program.py``'s ``Program``)."""

    def __call__(self, *inputs: torch.Tensor, **named: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The outputs for ``inputs``."""
        ...

    def bind_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Reads and writes ``tensors`` in place on every later call."""
        ...

    @property
    def bound_state(self) -> Mapping[str, torch.Tensor] | None:
        """The mapping last bound (None when unbound)."""
        ...

    def unbind_state(self) -> None:
        """Drops the state tensors."""
        ...


def _run(
    program: StatefulProgram, cache: PagedKVCache, inputs: dict[str, torch.Tensor]
) -> torch.Tensor:
    """``program``'s output (logits, or a greedy program's tokens) for ``inputs`` over
    ``cache``. The programs belong to the compiled
    model, so another generation (an interleaved stream) may have bound its own cache since
    the last call: then this one is bound again."""
    if program.bound_state is not cache.state():
        program.bind_state(cache.state())
    (output,) = program(**inputs)
    return output


def _release(programs: CachedPrograms, cache: PagedKVCache) -> None:
    """Unbinds ``cache`` from the programs still bound to it (its memory can then go)."""
    for program in (programs.prefill, programs.decode, programs.greedy):
        if program is not None and program.bound_state is cache.state():
            program.unbind_state()


class Streamer(Protocol):
    """What ``generate`` feeds as it goes, as transformers' streamers take it: the prompt
    [B, S] first, then each step's tokens [B], then ``end()``."""

    def put(self, value: torch.Tensor) -> None:
        """Takes the prompt, then one step's tokens."""
        ...

    def end(self) -> None:
        """Generation is over."""
        ...


@dataclass(frozen=True)
class CachedPrograms:
    """The two cache programs of an artifact, its cache layout and its limits."""

    prefill: StatefulProgram
    decode: StatefulProgram
    layout: KvLayout
    buffers: tuple[BufferSpec, ...]
    # The longest sequence and the largest batch the programs take (None: no limit).
    max_len: int | None
    max_batch: int | None
    # Where the cache lives and the tokens are chosen: the programs' device.
    device: str = "cpu"
    # The decode step that returns greedy tokens [B, 1] instead of logits (its LM head
    # chooses them); None when the artifact has none.
    greedy: StatefulProgram | None = None

    def chunk(self, prompt: int) -> int:
        """The most tokens of a ``prompt``-token prompt that one prefill call takes
        (``prefill_chunk``)."""
        return prefill_chunk(self.layout, prompt)

    def cache_memory(self, batch: int, max_len: int) -> int:
        """The bytes of the cache that generating ``batch`` sequences of up to ``max_len``
        tokens allocates (at most: a prompt shorter than a chunk needs smaller rings)."""
        return cache_bytes(self.layout, self.buffers, batch, max_len, self.chunk(max_len))

    def new_cache(self, sequences: int, max_len: int, chunk: int) -> PagedKVCache:
        return PagedKVCache(
            self.layout,
            self.buffers,
            sequences=sequences,
            max_len=max_len,
            chunk=chunk,
            device=self.device,
        )


def prefill_chunk(layout: KvLayout, prompt: int) -> int:
    """The most tokens of a ``prompt``-token prompt that one prefill call takes: a sliding
    layer's ring must hold its window and the call's tokens, so chunks are about a window long
    (at least a block); without sliding layers the prompt goes at once."""
    windows = [g.window for g in layout.groups if g.window is not None]
    if not windows:
        return prompt
    return min(prompt, max(max(windows), layout.block_size))


def cache_layout(manifest: Manifest, why_not: str = "") -> KvLayout:
    """The KV-cache layout an artifact records; a ``TesseraError`` says why it has none."""
    metadata = manifest.metadata.get(names.METADATA_KEY)
    if not isinstance(metadata, Mapping) or "unavailable" in metadata:
        reason = metadata.get("unavailable") if isinstance(metadata, Mapping) else None
        raise TesseraError(
            "this compiled model has no KV-cache programs"
            + (f": {reason}" if reason else (f" ({why_not})" if why_not else ""))
        )
    return KvLayout.from_json(metadata)


def cache_buffers(manifest: Manifest) -> tuple[BufferSpec, ...]:
    """The cache's buffers: the decode program's state (a GPU program's arena slices are its
    own)."""
    return tuple(b for b in manifest.program(names.DECODE_PROGRAM).buffers if b.kind == "state")


def manifest_cache_memory(manifest: Manifest, batch: int, max_len: int) -> int:
    """``CachedPrograms.cache_memory`` from the manifest alone (nothing loaded, no GPU)."""
    layout = cache_layout(manifest)
    buffers = cache_buffers(manifest)
    return cache_bytes(layout, buffers, batch, max_len, prefill_chunk(layout, max_len))


def cached_programs(
    manifest: Manifest, programs: Mapping[str, object], why_not: str = ""
) -> CachedPrograms:
    """The cache programs of an artifact (``programs``: its loaded programs by name); a
    ``TesseraError`` says why there are none."""
    layout = cache_layout(manifest, why_not)
    found: dict[str, StatefulProgram] = {}
    for name in (names.PREFILL_PROGRAM, names.DECODE_PROGRAM):
        program = programs.get(name)
        if program is None:
            raise TesseraError(
                f"the artifact's metadata describes a KV cache but it has no program '{name}'"
            )
        if not isinstance(program, StatefulProgram):
            raise TesseraError(
                f"program '{name}' of this artifact cannot hold a KV cache on this runtime "
                f"({type(program).__name__} binds no state)"
            )
        found[name] = program
    greedy = programs.get(names.GREEDY_DECODE_PROGRAM)
    if greedy is not None and not isinstance(greedy, StatefulProgram):
        raise TesseraError(
            f"program '{names.GREEDY_DECODE_PROGRAM}' of this artifact cannot hold a KV cache on "
            f"this runtime ({type(greedy).__name__} binds no state)"
        )
    prefill_spec = manifest.program(names.PREFILL_PROGRAM)
    symbols = {s.name: s for s in prefill_spec.symbols}
    length, batch = symbols.get("S"), symbols.get("B")
    return CachedPrograms(
        prefill=found[names.PREFILL_PROGRAM],
        decode=found[names.DECODE_PROGRAM],
        layout=layout,
        buffers=cache_buffers(manifest),
        max_len=None if length is None else length.max,
        max_batch=None if batch is None else batch.max,
        # A ROCm build of torch names the AMD GPU "cuda" too.
        device="cpu" if manifest.target.kind == "cpu" else "cuda",
        greedy=greedy,
    )


@dataclass(frozen=True)
class Request:
    """What to generate: up to ``max_new_tokens`` per row, chosen by ``sampling`` (drawn
    from a generator seeded with ``seed``); a row ends at any of ``eos_token_ids`` and is
    padded with ``pad_token_id`` afterwards."""

    max_new_tokens: int
    sampling: Sampling
    seed: int | None
    eos_token_ids: frozenset[int]
    pad_token_id: int

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise RuntimeInputError(
                f"max_new_tokens must be an integer, found {self.max_new_tokens!r}"
            )
        if self.max_new_tokens < 0:
            raise RuntimeInputError(
                f"max_new_tokens must be at least 0, found {self.max_new_tokens}"
            )


def token_set(value: int | Sequence[int] | None, name: str) -> frozenset[int]:
    """An end-token argument (one id, several, or None for none) as a set of ids."""
    if value is None:
        return frozenset()
    items = [value] if isinstance(value, int) else value
    if not isinstance(items, Sequence) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in items
    ):
        raise RuntimeInputError(
            f"{name} must be a token id, a list of them or None, found {value!r}"
        )
    return frozenset(int(v) for v in items)


@dataclass(frozen=True)
class Step:
    """One generation step: the token of every row [B] (the pad token for rows that had
    ended) and, when asked for, the raw logits [B, V] they were chosen from (NaN rows for
    rows that had ended)."""

    tokens: torch.Tensor
    logits: torch.Tensor | None


def _per_row(value: int, rows: int) -> torch.Tensor:
    return torch.full((rows,), value, dtype=torch.int64)


def _check_limits(programs: CachedPrograms, rows: int, total: int) -> None:
    if programs.max_len is not None and total > programs.max_len:
        raise RuntimeInputError(
            f"the prompt and the new tokens make {total} tokens; the model was compiled for "
            f"at most {programs.max_len} (max_seq_len)"
        )
    if programs.max_batch is not None and rows > programs.max_batch:
        raise RuntimeInputError(
            f"a batch of {rows} sequences; the model was compiled for at most "
            f"{programs.max_batch} (max_batch)"
        )


def decode_steps(
    programs: CachedPrograms,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    request: Request,
    *,
    keep_logits: bool = False,
) -> Iterator[Step]:
    """Yields each step of generating from ``input_ids`` [B, S] (int64; ``attention_mask`` a
    bool [B, S], left padded, or None): at most ``request.max_new_tokens`` steps, fewer when
    every row has ended."""
    rows, length = input_ids.shape
    if request.max_new_tokens == 0:
        return
    total = length + request.max_new_tokens
    _check_limits(programs, rows, total)
    if attention_mask is None:
        starts = _per_row(0, rows)
        places = torch.arange(length, dtype=torch.int64).expand(rows, length)
    else:
        starts = padding_starts(attention_mask, left_only=True)
        places = positions(attention_mask)
    chunk = programs.chunk(length)
    cache = programs.new_cache(rows, total, chunk)
    generator = seeded_generator(request.seed, torch.device(programs.device))
    # Greedy steps whose logits nobody reads take the program that chooses the token itself.
    greedy = None if request.sampling.do_sample or keep_logits else programs.greedy
    everyone = list(range(rows))
    try:
        logits = None
        for first in range(0, length, chunk):
            end = min(length, first + chunk)
            for row in everyone:
                cache.reserve(row, end)
            logits = _run(
                programs.prefill,
                cache,
                {
                    names.INPUT_IDS: input_ids[:, first:end].contiguous(),
                    names.POSITIONS: places[:, first:end].contiguous(),
                    names.CACHE_INDEX: _per_row(first, rows),
                    names.KV_START: starts,
                    **cache.block_tables(everyone),
                },
            )
        assert logits is not None, "a prompt has at least one token"
        last: torch.Tensor | None = logits[:, -1, :].float()
        live = everyone
        next_place = places[:, -1] + 1
        chosen = torch.empty(0, dtype=torch.int64)
        for step in range(request.max_new_tokens):
            # Chosen where the logits are (or by the greedy program); the loop's bookkeeping
            # (end tokens, rows) is here.
            if last is not None:
                chosen = next_tokens(last, request.sampling, generator).cpu()
            tokens = _per_row(request.pad_token_id, rows)
            tokens[live] = chosen
            kept = None
            if keep_logits:
                assert last is not None, "kept logits come from the logits program"
                kept = torch.full((rows, last.shape[-1]), math.nan, dtype=torch.float32)
                kept[live] = last.cpu()
            yield Step(tokens, kept)
            if step + 1 == request.max_new_tokens:
                break
            staying = [
                i for i, token in enumerate(chosen.tolist()) if token not in request.eos_token_ids
            ]
            for i, row in enumerate(live):
                if i not in staying:
                    cache.release(row)
            if not staying:
                break
            live = [live[i] for i in staying]
            selected = torch.tensor(live, dtype=torch.int64)
            index = length + step
            for row in live:
                cache.reserve(row, index + 1)
            output = _run(
                programs.decode if greedy is None else greedy,
                cache,
                {
                    names.INPUT_IDS: chosen[staying].reshape(-1, 1).contiguous(),
                    names.POSITIONS: next_place[selected].reshape(-1, 1).contiguous(),
                    names.CACHE_INDEX: _per_row(index, len(live)),
                    names.KV_START: starts[selected].contiguous(),
                    **cache.block_tables(live),
                },
            )
            next_place[selected] += 1
            if greedy is None:
                last = output[:, 0, :].float()
            else:
                last, chosen = None, output[:, 0].cpu()
    finally:
        _release(programs, cache)


def cached_logits(
    programs: CachedPrograms, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The logits [B, S, V] of a padded batch (each row's ones one run), every real position
    as if its row ran alone: one ``prefill_kv`` call over a cache that holds the batch."""
    rows, length = input_ids.shape
    _check_limits(programs, rows, length)
    starts = padding_starts(attention_mask)
    cache = programs.new_cache(rows, length, length)
    everyone = list(range(rows))
    for row in everyone:
        cache.reserve(row, length)
    try:
        return _run(
            programs.prefill,
            cache,
            {
                names.INPUT_IDS: input_ids,
                names.POSITIONS: positions(attention_mask),
                names.CACHE_INDEX: _per_row(0, rows),
                names.KV_START: starts,
                **cache.block_tables(everyone),
            },
        )
    finally:
        _release(programs, cache)
