"""Retention of raw events: the ``storage.retention`` settings and the component that
prunes on a schedule.

Every ``interval``, the replica holding the ``retention`` lease cuts the ledger's exported
events older than ``events`` (see ``storage/_retention.py``) in batches of at most
``batch`` events, each its own short transaction, for at most half an interval. The
Parquet export is the copy of what is cut, so the setting needs the export enabled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tollmeter.collector._config_values import Section
from tollmeter.collector.export._cursor import load_cursor
from tollmeter.collector.storage import Ledger, StorageError
from tollmeter.collector.storage._retention import prune

if TYPE_CHECKING:
    from tollmeter.collector._server import Collector
    from tollmeter.collector.storage import Lease

__all__ = ["Retention", "RetentionConfig", "ledger_options", "prune_once"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionConfig:
    """Ages in seconds: ``events`` past which exported events are pruned, and
    ``minute_rollups`` / ``hour_rollups`` past which those rollups are; ``None`` leaves the
    ledger's own (events and hour rollups forever, minute rollups 7 days)."""

    events: float | None = None
    minute_rollups: float | None = None
    hour_rollups: float | None = None
    interval: float = 3600.0
    batch: int = 5_000

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> RetentionConfig:
        section = Section(mapping, path)
        ages = {
            name: None if section.raw(name) is None else section.duration(name, 0, positive=True)
            for name in ("events", "minute_rollups", "hour_rollups")
        }
        config = cls(
            events=ages["events"],
            minute_rollups=ages["minute_rollups"],
            hour_rollups=ages["hour_rollups"],
            interval=section.duration("interval", cls.interval, positive=True),
            batch=section.integer("batch", cls.batch, minimum=1),
        )
        section.finish()
        return config


def ledger_options(config: RetentionConfig) -> dict[str, float]:
    """The ledger's own rollup ages, for ``open_ledger``; only those set, so a storage
    URL's query string still applies otherwise."""
    options = {"minute_rollups_s": config.minute_rollups, "hour_rollups_s": config.hour_rollups}
    return {name: value for name, value in options.items() if value is not None}


def prune_once(ledger: Ledger, lease: Lease, config: RetentionConfig, *, now_ns: int) -> int:
    """One scheduled run: the events pruned (0 when another replica holds the lease or
    pruning failed, which is logged: retention never stops the collector)."""
    if config.events is None or not lease.acquire():
        return 0
    try:
        return prune(
            ledger,
            cutoff_ns=now_ns - int(config.events * 1e9),
            exported_through=load_cursor(ledger).sequence,
            batch_events=config.batch,
            deadline=time.monotonic() + config.interval / 2,
        )
    except StorageError as exc:
        logger.warning("retention: %s", exc)
        return 0


class Retention:
    """The collector component; starts after the export, whose cursor bounds the cut."""

    name = "retention"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._lease: Lease | None = None

    async def start(self, collector: Collector) -> None:
        config = collector.config.storage.retention
        if config.events is None:
            return
        ledger = collector.ledger
        self._lease = lease = ledger.lease("retention")
        self._task = asyncio.get_running_loop().create_task(
            self._every(ledger, lease, config), name="retention"
        )

    @staticmethod
    async def _every(ledger: Ledger, lease: Lease, config: RetentionConfig) -> None:
        while True:
            pruned = await asyncio.to_thread(
                lambda: prune_once(ledger, lease, config, now_ns=time.time_ns())
            )
            if pruned:
                logger.info("retention: pruned %d exported events", pruned)
            await asyncio.sleep(config.interval)

    async def stop(self, deadline: float) -> None:
        del deadline  # a cut is one transaction: stopping between two loses nothing
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        lease, self._lease = self._lease, None
        if lease is not None:
            await asyncio.to_thread(lease.release)
