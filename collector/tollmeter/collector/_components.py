"""The collector's parts, each a component with one lifecycle.

A component starts with the collector as its context (the config, the keys, the one
``Pricer``, the ledger and pipeline once those started, and route registration) and
stops before an absolute ``deadline`` on the ``time.monotonic()`` clock, the one shutdown
budget that every part shares. ``COMPONENTS`` lists them in start order; the collector
stops those that started in the reverse order:

    management API                 closed at once: a stopping collector serves no queries
    receivers                      no new spans; requests in flight finish and commit
    console, reconciliation,       nothing to flush (a reconciliation under way finishes in
    metrics                        its thread within its own timeouts)
    retention                      its schedule stopped (each cut is one transaction)
    export                         the last Parquet file, with every acknowledged event
    grants                         its schedule stopped (grants live in the ledger)
    limits                         state written, expired reservations charged
    pipeline                       drained: everything still queued is committed
    forwarding                     queues flushed to the downstream collectors
    ledger                         closed last, once nothing reads or writes it

A component that cannot finish by the deadline is abandoned, logged, and the next
one still gets its turn: a stuck downstream never keeps the ledger open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from tollmeter.collector._asgi_server import EmbeddedServer
from tollmeter.collector._retention import Retention
from tollmeter.collector._wiring import build_pipeline, open_configured_ledger, usage_api_routes
from tollmeter.collector.billing._attach import Reconciler
from tollmeter.collector.console import attach_console
from tollmeter.collector.export import ExportService, install_export
from tollmeter.collector.forward import chain_sinks, start_forwarding
from tollmeter.collector.grants._attach import Grants
from tollmeter.collector.limits import LimitsService
from tollmeter.collector.limits._attach import attach_limits
from tollmeter.collector.receivers import GrpcReceiver, OtlpIngest, http_receiver_app

if TYPE_CHECKING:
    from tollmeter.collector._server import Collector

__all__ = ["COMPONENTS", "Component", "remaining"]


class Component(Protocol):
    name: str

    async def start(self, collector: Collector) -> None: ...

    async def stop(self, deadline: float) -> None: ...


def remaining(deadline: float) -> float:
    """Seconds left before ``deadline`` (``time.monotonic()``), never negative."""
    return max(0.0, deadline - time.monotonic())


async def _in_thread(work: Callable[[], object]) -> None:
    # ``work`` keeps to the deadline itself; the collector bounds the wait as well.
    await asyncio.to_thread(work)


class Ledger:
    name = "ledger"

    def __init__(self) -> None:
        self._collector: Collector | None = None

    async def start(self, collector: Collector) -> None:
        collector._ledger = await asyncio.to_thread(open_configured_ledger, collector.config)
        self._collector = collector

    async def stop(self, deadline: float) -> None:
        # Closing waits for a commit in progress, which the deadline cannot cut short.
        if self._collector is not None:
            ledger, self._collector._ledger = self._collector._ledger, None
            if ledger is not None:
                await asyncio.to_thread(ledger.close)


class Forwarding:
    name = "forwarding"

    def __init__(self) -> None:
        self._collector: Collector | None = None

    async def start(self, collector: Collector) -> None:
        collector.forwarder = start_forwarding(collector.config.forward)
        self._collector = collector

    async def stop(self, deadline: float) -> None:
        forwarder = None if self._collector is None else self._collector.forwarder
        if forwarder is not None:
            await _in_thread(lambda: forwarder.shutdown(remaining(deadline)))


class Pipeline:
    name = "pipeline"

    def __init__(self) -> None:
        self._collector: Collector | None = None

    async def start(self, collector: Collector) -> None:
        pipeline = build_pipeline(
            collector.config, collector.metrics.timed(collector.ledger), collector.pricer
        )
        collector._pipeline = pipeline
        await pipeline.start()
        collector.add_management_routes(
            usage_api_routes(collector.config, collector.ledger, pipeline)
        )
        self._collector = collector

    async def stop(self, deadline: float) -> None:
        pipeline = None if self._collector is None else self._collector._pipeline
        if pipeline is not None:
            await pipeline.stop(timeout=remaining(deadline))


class Limits:
    name = "limits"

    def __init__(self) -> None:
        self._service: LimitsService | None = None

    async def start(self, collector: Collector) -> None:
        self._service = collector.limits = attach_limits(collector, pricer=collector.pricer)

    async def stop(self, deadline: float) -> None:
        service = self._service
        if service is not None:
            await _in_thread(lambda: service.close(remaining(deadline)))


class Export:
    name = "export"

    def __init__(self) -> None:
        self._service: ExportService | None = None

    async def start(self, collector: Collector) -> None:
        config = collector.config
        self._service = collector.export = install_export(
            collector,
            config.export,
            data_dir=config.data_dir,
            collector_id=config.collector_id,
            pricer=collector.pricer,
            lease=collector.ledger.lease("export"),
        )

    async def stop(self, deadline: float) -> None:
        service = self._service
        if service is not None:
            await _in_thread(lambda: service.shutdown(remaining(deadline)))


class Metrics:
    name = "metrics"

    def __init__(self) -> None:
        self._collector: Collector | None = None

    async def start(self, collector: Collector) -> None:
        await collector.metrics.attach(
            collector, keys=collector.keys, limits=collector.limits, forwarder=collector.forwarder
        )
        self._collector = collector

    async def stop(self, deadline: float) -> None:
        if self._collector is not None:
            await asyncio.wait_for(self._collector.metrics.detach(), remaining(deadline))


class Console:
    name = "console"

    async def start(self, collector: Collector) -> None:
        attach_console(collector, keys=collector.keys, readiness=collector.readiness)

    async def stop(self, deadline: float) -> None:
        return None


class ManagementServer:
    name = "management API"

    def __init__(self) -> None:
        self._server: EmbeddedServer | None = None

    async def start(self, collector: Collector) -> None:
        config = collector.config
        if not config.management.enabled:
            return
        server = EmbeddedServer(
            collector.management_app,
            config.management.endpoint,
            name="management API",
            limits=config.server,
            ssl_context=collector.ssl_context,
        )
        await server.start()
        self._server = collector._management_server = server

    async def stop(self, deadline: float) -> None:
        # It serves nothing a stopping collector needs: a second is enough for replies.
        if self._server is not None:
            await self._server.stop(timeout=min(1.0, remaining(deadline)))


class Receivers:
    name = "receivers"

    def __init__(self) -> None:
        self._grpc: GrpcReceiver | None = None
        self._http: EmbeddedServer | None = None

    async def start(self, collector: Collector) -> None:
        config = collector.config
        forwarder = collector.forwarder
        sink = chain_sinks(
            collector.metrics.count_request,
            collector.signal_sink,
            forwarder.offer if forwarder is not None else None,
        )
        ingest = OtlpIngest(collector.pipeline, collector.keys, signal_sink=sink)
        if config.receivers.grpc.enabled:
            self._grpc = GrpcReceiver(
                ingest, config.receivers.grpc, limits=config.server, tls=collector.tls
            )
            await self._grpc.start()
            collector._grpc = self._grpc
        if config.receivers.http.enabled:
            app = http_receiver_app(ingest, max_body_bytes=config.receivers.http.max_body_bytes)
            self._http = EmbeddedServer(
                app,
                config.receivers.http.endpoint,
                name="OTLP/HTTP",
                limits=config.server,
                ssl_context=collector.ssl_context,
            )
            await self._http.start()
            collector._http = self._http
        collector.receivers_bound = True

    async def stop(self, deadline: float) -> None:
        stops = []
        if self._grpc is not None:
            stops.append(self._grpc.stop(remaining(deadline)))
        if self._http is not None:
            stops.append(self._http.stop(timeout=remaining(deadline)))
        await asyncio.gather(*stops)


COMPONENTS: Sequence[Callable[[], Component]] = (
    Ledger,
    Forwarding,
    Pipeline,
    Limits,
    Grants,
    Export,
    Retention,
    Metrics,
    Reconciler,
    Console,
    Receivers,
    ManagementServer,
)
"""Start order; each may use what those before it put on the collector."""
