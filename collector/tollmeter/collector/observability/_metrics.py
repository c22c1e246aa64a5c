"""``/metrics``: one private Prometheus registry per collector.

Each :class:`CollectorMetrics` owns its own ``CollectorRegistry`` (several
collectors can run in one process, as tests do) holding the usage counters,
the health metrics and the ledger commit latency histogram.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tollmeter.collector._auth import KeyRing
from tollmeter.collector._http_errors import error_response
from tollmeter.collector._pipeline import Pipeline
from tollmeter.collector.forward import Forwarder
from tollmeter.collector.forward._config import Signal
from tollmeter.collector.limits import LimitsService
from tollmeter.collector.observability._activity import ActivityLog
from tollmeter.collector.observability._config import MetricsConfig
from tollmeter.collector.observability._health import HealthMetrics, HealthSources, TimedLedger
from tollmeter.collector.observability._usage import UsageMetrics
from tollmeter.collector.storage import Ledger

__all__ = ["COMMIT_BUCKETS_S", "CollectorMetrics"]

COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Host(Protocol):
    """The parts of ``Collector`` the metrics read."""

    @property
    def ledger(self) -> Ledger: ...

    @property
    def pipeline(self) -> Pipeline: ...

    def add_management_routes(self, routes: Sequence[BaseRoute]) -> None: ...


class CollectorMetrics:
    """The Prometheus metrics of one collector."""

    def __init__(self, config: MetricsConfig | None = None) -> None:
        self.config = config or MetricsConfig()
        self._stop_activity: Callable[[], Awaitable[None]] | None = None
        self.registry = CollectorRegistry()
        self.commit_seconds = Histogram(
            "tollmeter_ledger_commit_seconds",
            "Duration of one ledger group commit (durable append).",
            buckets=COMMIT_BUCKETS_S,
            registry=self.registry,
        )
        self.usage = UsageMetrics(max_tenants=self.config.max_tenants)
        self.health = HealthMetrics(HealthSources())
        self.registry.register(self.usage)
        self.registry.register(self.health)

    def timed(self, ledger: Ledger) -> Ledger:
        """``ledger`` with its appends timed into the commit latency histogram."""
        return TimedLedger(ledger, self.commit_seconds)

    def count_request(self, signal: Signal, body: bytes) -> None:
        """A receivers' signal sink counting accepted OTLP requests."""
        self.health.count_request(signal, body)

    async def attach(
        self,
        collector: _Host,
        *,
        keys: KeyRing,
        limits: LimitsService | None = None,
        forwarder: Forwarder | None = None,
    ) -> None:
        """Read ``collector``'s parts and serve ``/metrics`` (when enabled).

        Call after the pipeline started and before the receivers take data: the usage
        counters start from the ledger's totals, then follow each commit.
        """
        await asyncio.to_thread(self.usage.restore, collector.ledger)
        pipeline = collector.pipeline
        pipeline.subscribe_commits(self.usage.apply_commit)
        sources = self.health.sources
        sources.pipeline = pipeline.stats
        if limits is not None:
            sources.checks = limits.engine.counts
            sources.hooks = limits.hook_stats
            sources.limits = limits.gauges
        if forwarder is not None:
            sources.forward = forwarder.stats
        if self.config.enabled:
            collector.add_management_routes([self.route(keys)])
        if self.config.activity_log_interval > 0:
            self._log_activity(collector, limits)

    def _log_activity(self, collector: _Host, limits: LimitsService | None) -> None:
        activity = ActivityLog(
            pipeline_stats=collector.pipeline.stats,
            check_counts=None if limits is None else limits.engine.counts,
            interval_s=self.config.activity_log_interval,
            max_new=self.config.activity_log_max_new,
        )
        collector.pipeline.subscribe(activity.observe)
        task = asyncio.get_running_loop().create_task(activity.run(), name="activity log")

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            # The last, partial interval, so that a short run still leaves its trace.
            activity.summarize()

        self._stop_activity = stop

    async def detach(self) -> None:
        """Stop what :meth:`attach` started (the activity log); idempotent."""
        stop, self._stop_activity = self._stop_activity, None
        if stop is not None:
            await stop()

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (Prometheus text, or OpenMetrics when ``accept`` asks) and its
        content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def route(self, keys: KeyRing) -> Route:
        require_admin = self.config.require_admin_key

        async def metrics(request: Request) -> Response:
            """Prometheus metrics: usage per tenant and the collector's health."""
            if require_admin and not keys.admin_allowed(_bearer(request.headers)):
                return error_response(
                    401,
                    "a valid admin key is required",
                    headers={"WWW-Authenticate": 'Bearer realm="tollmeter"'},
                )
            body, content_type = await asyncio.to_thread(
                self.render, request.headers.get("accept", "")
            )
            return Response(body, headers={"Content-Type": content_type})

        return Route("/metrics", metrics, methods=["GET"], name="metrics")


def _bearer(headers: Mapping[str, str]) -> str | None:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None
