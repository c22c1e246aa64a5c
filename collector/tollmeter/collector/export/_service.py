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
from tollmeter.collector.pricing import Pricer

__all__ = ["ExportService", "install_export"]

logger = logging.getLogger(__name__)


class ExportService:
    """Runs ``exporter`` every ``interval_s`` on a background thread.

    ``shutdown()`` is idempotent: it stops the thread and runs one last export
    within the time left, so every event committed before shutdown is exported.
    """

    def __init__(self, exporter: Exporter, *, interval_s: float) -> None:
        self.exporter = exporter
        self._interval_s = interval_s
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
            result = self.exporter.export()
            if result.status is ExportStatus.SUCCESS and result.events:
                logger.info("exported %d events, cursor at %d", result.events, result.cursor)

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
            self._final = self.exporter.export(timeout=max(0.0, deadline - time.monotonic()))
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
) -> ExportService | None:
    """Start periodic export on ``collector`` and add ``POST /api/v1/export``; the caller
    ``shutdown()``s the service, which exports what is left.

    Returns ``None`` when ``config.enabled`` is false. Call after the ledger is open.
    """
    if not config.enabled:
        return None
    exporter = Exporter.from_config(
        collector.ledger, config, data_dir=data_dir, collector_id=collector_id, pricer=pricer
    )
    service = ExportService(exporter, interval_s=config.interval_s)
    collector.add_management_routes(export_routes(exporter))
    service.start()
    return service
