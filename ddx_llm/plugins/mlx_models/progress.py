"""Progress of long model work — converting a GGUF, loading weights — and where it is shown.

The work reports :class:`Progress` snapshots to a *sink*, any ``Callable[[Progress], None]``:

- :class:`ConsoleProgress` — ``ddx-llm convert`` and other direct callers: a bar redrawn in
  place on a terminal, a line every few seconds otherwise (tensors done / total, bytes,
  elapsed);
- :class:`LogProgress` — the server: a log line every few seconds;
- :class:`LoadProgress` — a backend's model load, read back as one fraction for ``/health``
  (``model_load_progress``), across the phases of the load.

Code that starts the work several calls up (the ``mlx`` worker thread loading a model, which
converts the bundled model on first use) hands its sink down with :func:`reporting_to`; the
work finds it with :func:`current_sink`.  It is a context variable, so it belongs to one thread
(or task) and never leaks into another.  Sinks must be fast and must not raise.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TextIO

CONVERT = "convert"
WEIGHTS = "weights"


@dataclass(frozen=True)
class Progress:
    """Where a piece of work stands.

    Attributes:
        phase: ``convert`` (GGUF → mlx-lm folder) or ``weights`` (loading a model's arrays).
        done, total: tensors done and to do.
        bytes_done, bytes_total: their sizes in bytes.
        elapsed: seconds since the phase started.
        step: what is going on now, for people (``reading model.gguf``, ``writing tensors``).
    """

    phase: str
    done: int
    total: int
    bytes_done: int
    bytes_total: int
    elapsed: float
    step: str = ""

    @property
    def fraction(self) -> float:
        """Done, from 0 to 1 (by bytes when known, else by tensors)."""
        if self.bytes_total > 0:
            return min(1.0, self.bytes_done / self.bytes_total)
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0

    @property
    def finished(self) -> bool:
        return self.total > 0 and self.done >= self.total

    def describe(self) -> str:
        """``writing tensors: 120/694 tensors, 45.1/98.4 MB, 1.2 s``"""
        head = f"{self.step}: " if self.step else ""
        if self.total == 0:  # nothing counted yet (reading)
            return f"{head}{_mb(self.bytes_total)} MB, {self.elapsed:.1f} s"
        return (
            f"{head}{self.done}/{self.total} tensors, "
            f"{_mb(self.bytes_done)}/{_mb(self.bytes_total)} MB, {self.elapsed:.1f} s"
        )


Sink = Callable[[Progress], None]

_current: ContextVar[Sink | None] = ContextVar("ddx_llm_progress_sink", default=None)


@contextmanager
def reporting_to(sink: Sink) -> Iterator[None]:
    """Within the block, on this thread, :func:`current_sink` is ``sink``."""
    token = _current.set(sink)
    try:
        yield
    finally:
        _current.reset(token)


def current_sink() -> Sink | None:
    """The sink of the enclosing :func:`reporting_to`, or None."""
    return _current.get()


def tee(*sinks: Sink) -> Sink:
    """One sink that reports to each of ``sinks``."""

    def report(progress: Progress) -> None:
        for sink in sinks:
            sink(progress)

    return report


def _mb(count: int) -> str:
    return f"{count / 1e6:.1f}"


class _Throttle:
    """True at most every ``interval`` seconds, and always for the last snapshot."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = -float("inf")

    def due(self, progress: Progress) -> bool:
        now = time.monotonic()
        if progress.finished or progress.done == 0 or now - self.last >= self.interval:
            self.last = now
            return True
        return False


class ConsoleProgress:
    """Progress on ``stream`` (default stderr): a bar on a terminal, lines otherwise.

    On a terminal the bar is redrawn in place at most 10 times a second and ends with a
    newline when the phase is done; elsewhere (a log file, CI) a line is written every
    ``interval`` seconds, plus the first and the last.
    """

    BAR_WIDTH = 28

    def __init__(self, stream: TextIO | None = None, *, interval: float = 2.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.throttle = _Throttle(0.1 if self.tty else interval)

    def __call__(self, progress: Progress) -> None:
        if not self.throttle.due(progress):
            return
        if not self.tty:
            self.stream.write(f"{progress.phase}: {progress.describe()}\n")
        else:
            filled = round(progress.fraction * self.BAR_WIDTH)
            bar = "#" * filled + "." * (self.BAR_WIDTH - filled)
            line = (
                f"\r{progress.phase} [{bar}] {progress.fraction * 100:3.0f}% {progress.describe()}"
            )
            self.stream.write(line + "\x1b[K" + ("\n" if progress.finished else ""))
        self.stream.flush()


class LogProgress:
    """Progress as INFO log lines of ``logger``, every ``interval`` seconds (and the last)."""

    def __init__(self, logger: logging.Logger, label: str, *, interval: float = 5.0) -> None:
        self.logger = logger
        self.label = label
        self.throttle = _Throttle(interval)

    def __call__(self, progress: Progress) -> None:
        if self.throttle.due(progress):
            self.logger.info("%s: %s %s", self.label, progress.phase, progress.describe())


class LoadProgress:
    """A model load's progress as one fraction, 0 to 1, that never goes back.

    A load converts first (the bundled model's first use) and then loads weights; once a
    conversion was seen it counts for ``CONVERT_SHARE`` of the whole.  :attr:`fraction` is None
    until the first report (nothing measured yet).  Written by the loading thread, read by the
    event loop: a float assignment, safe without a lock.
    """

    CONVERT_SHARE = 0.8

    def __init__(self) -> None:
        self.fraction: float | None = None
        self._converted = False

    def __call__(self, progress: Progress) -> None:
        share = progress.fraction
        if progress.phase == CONVERT:
            self._converted = True
            value = self.CONVERT_SHARE * share
        elif self._converted:
            value = self.CONVERT_SHARE + (1 - self.CONVERT_SHARE) * share
        else:
            value = share
        self.fraction = round(max(self.fraction or 0.0, value), 4)
