"""Signs of life in the collector's log.

At info level, one line per interval (a minute by default) while anything arrives:
spans received, model calls metered, tenants seen, and refusals (spans rejected as
invalid, OTLP requests refused while the pipeline was full, checks denied by a limit).
A quiet interval writes nothing. The first time a tenant or a service appears, one
line names it; at most ``max_new`` such lines per interval, so that a flood of made-up
tenant ids cannot fill the log: the rest are counted in the next summary line. Names
already announced are remembered up to ``max_remembered``; past that no name is
announced any more (one warning says so). At debug level, one line per commit.

The pipeline hands each commit's events to :meth:`ActivityLog.observe` on its writer
thread, after the commit: nothing runs on the ingest path. Counts of received and
refused spans are read from the pipeline's running totals at each interval.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from tollmeter.collector._pipeline import PipelineStats
from tollmeter.collector._records import UsageEvent

__all__ = ["ActivityLog"]

logger = logging.getLogger("tollmeter.collector.activity")

_MAX_TENANTS_COUNTED = 100_000
"""Distinct tenants counted per interval; past it the summary says "at least"."""


class ActivityLog:
    """Logs what arrives; ``observe`` is a pipeline subscriber, ``run`` the timer."""

    def __init__(
        self,
        *,
        pipeline_stats: Callable[[], PipelineStats],
        check_counts: Callable[[], Mapping[str, int]] | None = None,
        interval_s: float = 60.0,
        max_new: int = 20,
        max_remembered: int = 100_000,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._pipeline_stats = pipeline_stats
        self._check_counts = check_counts
        self._interval_s = interval_s
        self._max_new = max_new
        self._max_remembered = max_remembered
        self._lock = threading.Lock()
        self._known: dict[str, set[str]] = {"tenant": set(), "service": set()}
        self._memory_full = False
        self._calls = 0
        self._tenants: set[str] = set()
        self._announced = 0
        self._unannounced = 0
        self._last = self._totals()
        self._since = time.monotonic()

    def observe(self, events: Sequence[UsageEvent]) -> None:
        """Count one commit's events and announce new tenants and services."""
        new: list[tuple[str, str]] = []
        with self._lock:
            self._calls += len(events)
            for event in events:
                if len(self._tenants) < _MAX_TENANTS_COUNTED:
                    self._tenants.add(event.tenant_id)
                self._note("tenant", event.tenant_id, new)
                if event.service_name:
                    self._note("service", event.service_name, new)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "committed %d model calls (%d tokens) for %d tenants",
                len(events),
                sum(event.total_tokens for event in events),
                len({event.tenant_id for event in events}),
            )
        for kind, name in new:
            logger.info("first usage from %s %r", kind, name)

    def _note(self, kind: str, name: str, new: list[tuple[str, str]]) -> None:
        known = self._known[kind]
        if name in known:
            return
        if len(self._known["tenant"]) + len(self._known["service"]) >= self._max_remembered:
            if not self._memory_full:
                self._memory_full = True
                logger.warning(
                    "%d tenants and services seen: new ones are no longer announced",
                    self._max_remembered,
                )
            return
        known.add(name)
        if self._announced < self._max_new:
            self._announced += 1
            new.append((kind, name))
        else:
            self._unannounced += 1

    async def run(self) -> None:
        """Write a summary every interval until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            self.summarize()

    def summarize(self) -> None:
        """Log the interval that just ended, if anything happened in it, and start another."""
        totals = self._totals()
        received, invalid, full, denied = (
            now - before for now, before in zip(totals, self._last, strict=True)
        )
        self._last = totals
        now = time.monotonic()
        seconds, self._since = now - self._since, now
        with self._lock:
            calls, tenants, unannounced = self._calls, len(self._tenants), self._unannounced
            self._calls, self._announced, self._unannounced = 0, 0, 0
            self._tenants = set()
        if not (received or calls or invalid or full or denied or unannounced):
            return
        more = "" if tenants < _MAX_TENANTS_COUNTED else "at least "
        refusals = [
            f"{count} {what}"
            for count, what in (
                (invalid, "invalid spans"),
                (full, "requests refused while full"),
                (denied, "checks denied"),
            )
            if count
        ]
        line = (
            f"last {seconds:.0f}s: {received} spans received, {calls} model calls "
            f"metered, {more}{tenants} tenants; refused: {', '.join(refusals) or 'none'}"
        )
        if unannounced:
            line += f"; {unannounced} more new tenants or services not listed"
        logger.info(line)

    def _totals(self) -> tuple[int, int, int, int]:
        """Since start: spans received, spans rejected, requests refused, checks denied."""
        stats = self._pipeline_stats()
        denied = 0 if self._check_counts is None else self._check_counts().get("checks_denied", 0)
        received = stats.spans_accepted + stats.spans_rejected
        return received, stats.spans_rejected, stats.refused_full, denied
