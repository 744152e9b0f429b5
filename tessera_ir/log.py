"""The ``tessera`` logger and progress bars.

The logger is silent unless ``TESSERA_LOG`` (``info`` or ``debug``) asks for it: it then writes
one line per record to stderr, ``tessera.<area>: message``, and stops propagating to the root
logger so that an application that configured logging itself does not see every line twice.
Left silent, it only carries a ``NullHandler``: an application may still route it anywhere.
It is set up once, when this module is first imported (by the compile driver, the checkpoint
loader and the ``tessera`` command), not by ``import tessera``, which must stay as light as the
runtime needs it (docs/architecture.md, "Layout").

Progress bars (tqdm) are drawn on stderr only when it is a terminal, and cleared when done, so
logs, pipes and CI output never hold one. Log lines written while a bar is up go through
``tqdm.write``, which keeps the bar below them intact.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO, TypeVar

from . import knobs

if TYPE_CHECKING:
    from tqdm import tqdm

LOGGER_NAME = "tessera"
logger = logging.getLogger(LOGGER_NAME)

_T = TypeVar("_T")

# How many bars are on screen: while any is, log lines must be written around them.
_bars_open = 0


def get(area: str) -> logging.Logger:
    """The logger of one area of Tessera (``compile``, ``cache``, ``checkpoints``, ``cli``)."""
    return logger.getChild(area)


class _StderrHandler(logging.Handler):
    """Writes each record as one line to the current ``sys.stderr`` (looked up at every record,
    since test harnesses and callers replace it), above any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if _bars_open:
                from tqdm import tqdm

                tqdm.write(line, file=sys.stderr)
            else:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)


def configure(level: int | None) -> None:
    """Sets the ``tessera`` logger up for ``level``: None leaves it silent (a ``NullHandler``,
    records propagate to whatever the application configured), a level writes records at or
    above it to stderr. Calling it again replaces the previous set-up."""
    for handler in list(logger.handlers):
        if isinstance(handler, _StderrHandler | logging.NullHandler):
            logger.removeHandler(handler)
    if level is None:
        logger.addHandler(logging.NullHandler())
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _has_size(stream: TextIO) -> bool:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return size.columns > 0 and size.lines > 0


class Progress:
    """A bar over ``total`` steps on ``stream`` (default: stderr), drawn only when the stream
    is a terminal; otherwise every method does nothing. Use it as a context manager."""

    def __init__(
        self, total: int, description: str, *, unit: str, stream: TextIO | None = None
    ) -> None:
        stream = sys.stderr if stream is None else stream
        self.description = description
        self._bar: tqdm | None = None
        if is_terminal(stream):
            from tqdm import tqdm

            global _bars_open
            # A terminal that reports no size (a bare pseudo-terminal) would get a bar of no
            # width on no rows, which tqdm draws as nothing at all: assume 80x24 there.
            sized = _has_size(stream)
            self._bar = tqdm(
                total=total,
                desc=description,
                unit=unit,
                file=stream,
                leave=False,  # the bar goes when done: what stays is the log and the result
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit}s "
                "[{elapsed}]",
                mininterval=0,  # steps are seconds apart: draw every one
                dynamic_ncols=sized,
                ncols=None if sized else 80,
                nrows=None if sized else 24,
            )
            _bars_open += 1

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def describe(self, step: str) -> None:
        """Names the step now running next to the bar."""
        if self._bar is not None:
            self._bar.set_description_str(f"{self.description} {step}")

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def close(self) -> None:
        global _bars_open
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            _bars_open -= 1

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def track(
    items: Iterable[_T],
    description: str,
    *,
    unit: str,
    total: int | None = None,
    stream: TextIO | None = None,
) -> Iterator[_T]:
    """``items`` one by one, with a bar while they are consumed (on a terminal); ``total``
    counts them where ``items`` has no length."""
    if total is None:
        total = len(items) if isinstance(items, Sized) else 0
    with Progress(total, description, unit=unit, stream=stream) as progress:
        for item in items:
            yield item
            progress.advance()


class Stage:
    """One running compile stage: ``note`` adds what it did to its summary line."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        if text:
            self.notes.append(text)


class Stages:
    """A compile's stages, run in order: each logs one info line on ``area``'s logger (name,
    seconds, notes) and moves the bar on by one."""

    def __init__(
        self,
        names: Iterable[str],
        *,
        area: str = "compile",
        description: str = "compile",
        stream: TextIO | None = None,
    ) -> None:
        self._log = get(area)
        self._progress = Progress(len(list(names)), description, unit="stage", stream=stream)

    @contextmanager
    def run(self, name: str) -> Iterator[Stage]:
        stage = Stage(name)
        self._progress.describe(name)
        started = time.perf_counter()
        yield stage
        seconds = time.perf_counter() - started
        details = "".join(f", {note}" for note in stage.notes)
        self._log.info("stage %s: %.2f s%s", name, seconds, details)
        self._progress.advance()

    def close(self) -> None:
        self._progress.close()

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


configure(knobs.log_level())
