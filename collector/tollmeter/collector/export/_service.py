"""Running the exporter inside the collector: periodically, on request, and at shutdown."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from starlette.routing import BaseRoute

from tollmeter.collector.export._api import export_routes
from tollmeter.collector.export._config import ExportConfig
from tollmeter.collector.export._cursor import ExportSource
from tollmeter.collector.export._exporter import Exporter, ExportResult, ExportStatus
from tollmeter.collector.export._outcomes import OutcomeExporter, OutcomeSource
from tollmeter.collector.export._writer import FileFormat
from tollmeter.collector.pricing import Pricer
from tollmeter.collector.storage import Lease

__all__ = ["ExportService", "install_export"]

logger = logging.getLogger(__name__)


class ExportService:
    """Runs ``exporter`` every ``interval_s`` on a background thread.

    ``shutdown()`` is idempotent: it stops the thread and runs one last export
    within the time left, so every event committed before shutdown is exported.

    With replicas sharing a ledger, only the holder of ``lease`` exports: the others
    stand by, trying to take the lease at every interval, and so take over within one
    interval of the holder's death. ``export()`` on a standby answers ``BUSY``.

    ``outcomes`` exports the ledger's outcomes after each successful run of ``exporter``.
    """

    def __init__(
        self,
        exporter: Exporter,
        *,
        interval_s: float,
        lease: Lease | None = None,
        outcomes: OutcomeExporter | None = None,
    ) -> None:
        self.exporter = exporter
        self._outcomes = outcomes
        self._interval_s = interval_s
        self._lease = lease
        self._standing_by = False
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._final: ExportResult | None = None
        self._shutdown_lock = threading.Lock()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the export service is already started")
        self._thread = threading.Thread(target=self._run, name="tollmeter-export", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            if self._stopping:
                return
            result = self.export()
            if result.status is ExportStatus.SUCCESS and result.events:
                logger.info("exported %d events, cursor at %d", result.events, result.cursor)

    def export(self, *, timeout: float | None = None) -> ExportResult:
        """Export now if this process holds the lease (or there is none)."""
        if self._lease is not None and not self._lease.acquire():
            if not self._standing_by:
                logger.info("another collector runs the export; standing by")
                self._standing_by = True
            return ExportResult(ExportStatus.BUSY, error="another collector runs the export")
        self._standing_by = False
        started = time.monotonic()
        result = self.exporter.export(timeout=timeout)
        if self._outcomes is not None and result.status is ExportStatus.SUCCESS:
            left = None if timeout is None else timeout - (time.monotonic() - started)
            self._outcomes.export(timeout=left)
        return result

    def shutdown(self, timeout: float = 30.0) -> ExportResult:
        """Stop the periodic export, then export what is left before ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._shutdown_lock:
            if self._final is not None:
                return self._final
            self._stopping = True
            self._wake.set()
            if self._thread is not None:
                self._thread.join(max(0.0, deadline - time.monotonic()))
            try:
                self._final = self.export(timeout=max(0.0, deadline - time.monotonic()))
            finally:
                if self._lease is not None:
                    self._lease.release()
            if self._final.status is ExportStatus.BUSY and self._standing_by:
                return self._final  # the holder exports what this replica committed
            if self._final.status is not ExportStatus.SUCCESS or not self._final.caught_up:
                logger.warning("final export incomplete: %s", self._final.to_json())
            return self._final


class CollectorHooks(Protocol):
    """The parts of ``tollmeter.collector.Collector`` the export plugs into."""

    @property
    def ledger(self) -> ExportSource: ...

    def add_management_routes(self, routes: Sequence[BaseRoute]) -> None: ...


def install_export(
    collector: CollectorHooks,
    config: ExportConfig,
    *,
    data_dir: Path,
    collector_id: str | None,
    pricer: Pricer | None = None,
    lease: Lease | None = None,
) -> ExportService | None:
    """Start periodic export on ``collector`` and add ``POST /api/v1/export``; the caller
    ``shutdown()``s the service, which exports what is left. Only the holder of ``lease``
    (the ledger's ``export`` lease, shared by replicas) exports.

    Returns ``None`` when ``config.enabled`` is false. Call after the ledger is open.
    """
    if not config.enabled:
        return None
    exporter = Exporter.from_config(
        collector.ledger, config, data_dir=data_dir, collector_id=collector_id, pricer=pricer
    )
    outcomes = None
    if isinstance(collector.ledger, OutcomeSource):
        outcomes = OutcomeExporter(
            collector.ledger,
            exporter.store,
            collector_id=collector_id,
            timezone=config.timezone,
            batch_size=config.batch_size,
            file_format=FileFormat(config.row_group_size, config.compression_level),
            timeout_s=config.timeout_s,
        )
    service = ExportService(exporter, interval_s=config.interval_s, lease=lease, outcomes=outcomes)
    collector.add_management_routes(export_routes(service))
    service.start()
    return service
