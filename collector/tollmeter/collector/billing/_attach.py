"""Plug reconciliation into a running collector: the service, its schedule, its route and
its gauges. Admin keys guard the route like every admin route under ``/api/``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import date
from typing import Protocol, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tollmeter.collector._config import Config
from tollmeter.collector._http_errors import error_response
from tollmeter.collector.billing._compare import GRAINS
from tollmeter.collector.billing._report import PROVIDERS, Provider
from tollmeter.collector.billing._service import ReconciliationService
from tollmeter.collector.billing._store import ReportStore
from tollmeter.collector.limits import LimitsService
from tollmeter.collector.observability import CollectorMetrics
from tollmeter.collector.storage import Ledger
from tollmeter.semconv.errors import TollmeterError

__all__ = ["Reconciler", "reconciliation_route"]


class _Host(Protocol):
    @property
    def config(self) -> Config: ...

    @property
    def ledger(self) -> Ledger: ...

    limits: LimitsService | None
    metrics: CollectorMetrics

    def add_management_routes(self, routes: Sequence[BaseRoute]) -> None: ...


def reconciliation_route(service: ReconciliationService) -> Route:
    async def reconciliation(request: Request) -> Response:
        """Provider reports compared with the ledger per day and model.

        ``from`` / ``to`` (YYYY-MM-DD, ``to`` exclusive; default: the configured lookback),
        ``by`` (model, project or api_key), ``provider`` (repeatable), ``refresh=true``
        imports the configured providers' reports first.
        ---
        responses:
          "200": {description: "rows of ledger, report, difference and percent per measure"}
          "400": {description: a parameter that cannot be used}
        """
        query = request.query_params
        try:
            start = _day(query.get("from"))
            end = _day(query.get("to"))
        except ValueError:
            return error_response(400, "from and to must be dates written YYYY-MM-DD")
        if start is not None and end is not None and end <= start:
            return error_response(400, "to must be after from")
        by = query.get("by", service.config.by)
        if by not in GRAINS:
            return error_response(400, f"by must be one of {', '.join(GRAINS)}")
        providers = query.getlist("provider") or list(PROVIDERS)
        unknown = [name for name in providers if name not in PROVIDERS]
        if unknown:
            return error_response(400, f"unknown provider {unknown[0]!r}")
        refresh = query.get("refresh", "false").lower() in ("1", "true", "yes")
        try:
            result, errors = await asyncio.to_thread(
                service.run,
                start,
                end,
                refresh=refresh,
                providers=cast("list[Provider]", providers),
                by=by,
            )
        except TollmeterError as exc:
            return error_response(503, f"cannot reconcile: {exc}")
        return JSONResponse({**result.to_json(), "import_errors": errors})

    return Route("/api/v1/reconciliation", reconciliation, methods=["GET"])


def _day(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)


class Reconciler:
    """The collector component: runs on the configured interval when providers are set."""

    name = "reconciliation"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._service: ReconciliationService | None = None
        self._metrics: CollectorMetrics | None = None

    async def start(self, collector: _Host) -> None:
        config = collector.config
        limits = collector.limits
        service = ReconciliationService(
            config.reconciliation,
            store=ReportStore(config.data_dir / "reports.db"),
            ledger=collector.ledger,
            notify=None if limits is None else limits.hooks.emit,
        )
        collector.metrics.registry.register(service.gauges)
        self._service, self._metrics = service, collector.metrics
        collector.add_management_routes([reconciliation_route(service)])
        if config.reconciliation.sources and config.reconciliation.interval > 0:
            self._task = asyncio.get_running_loop().create_task(
                self._every(service, config.reconciliation.interval), name="reconciliation"
            )

    @staticmethod
    async def _every(service: ReconciliationService, interval: float) -> None:
        while True:
            # Failures are logged by the service; a broken ledger must not end the schedule.
            with contextlib.suppress(TollmeterError):
                await asyncio.to_thread(service.run)
            await asyncio.sleep(interval)

    async def stop(self, deadline: float) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # A run in its thread finishes on its own (its fetches have timeouts).
            await asyncio.gather(task, return_exceptions=True)
        if self._metrics is not None and self._service is not None:
            self._metrics.registry.unregister(self._service.gauges)
            self._metrics = None
