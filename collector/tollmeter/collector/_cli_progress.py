"""Progress of long CLI work on stderr, with rate and time left.

On a terminal one bar is redrawn in place; otherwise (a pipe, a log file) each update
is a plain line, so that logs stay readable and nothing relies on control characters.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tollmeter.collector._cli_format import duration

__all__ = ["Progress"]

_BAR_WIDTH = 24


class Progress:
    """``update(done)`` as work advances towards ``total`` ``unit``; ``close()`` at the end."""

    def __init__(
        self,
        total: int,
        *,
        unit: str,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._total = max(total, 1)
        self._unit = unit
        self._stream = sys.stderr if stream is None else stream
        self._terminal = self._stream.isatty()
        self._clock = clock
        self._started = clock()
        self._drawn = False

    def update(self, done: int) -> None:
        done = min(done, self._total)
        elapsed = self._clock() - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        left = f"ETA {duration((self._total - done) / rate)}" if rate > 0 else "ETA ?"
        share = done / self._total
        counts = f"{done:,}/{self._total:,} {self._unit}"
        speed = f"{rate:,.0f} {self._unit}/s"
        if self._terminal:
            filled = round(share * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            self._stream.write(f"\r[{bar}] {share:4.0%}  {counts}  {speed}  {left}\x1b[K")
            self._drawn = True
        else:
            self._stream.write(f"{share:.0%}: {counts}, {speed}, {left}\n")
        self._stream.flush()

    def close(self) -> None:
        """End the bar's line (on a terminal); plain lines need nothing."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
