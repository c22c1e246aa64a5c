"""The collector process in one object: ledger, pipeline, receivers, management API.

``Collector(config)`` is cheap; :meth:`Collector.start` opens the ledger, starts
the pipeline, then binds the management API and both receivers (port 0 allowed:
the bound addresses are exposed). :meth:`Collector.stop` shuts down in a fixed
order: stop the receivers and the management API (no new spans, in-flight
requests finish) → drain the pipeline within the grace period (everything
acknowledged is committed) → run ``on_shutdown`` hooks (a final export) → close
the ledger. :meth:`Collector.reload` swaps in new keys, TLS files and limits
while serving. Signals are the CLI's business, never this class's.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

from starlette.routing import BaseRoute

from tollmeter.collector._asgi_server import EmbeddedServer
from tollmeter.collector._auth import KeyRing
from tollmeter.collector._config import Config
from tollmeter.collector._management import ManagementApi
from tollmeter.collector._pipeline import Pipeline
from tollmeter.collector._tls import ServerTls, TlsError
from tollmeter.collector._wiring import build_pipeline, open_configured_ledger, usage_api_routes
from tollmeter.collector.console import attach_console
from tollmeter.collector.export import ExportService, install_export
from tollmeter.collector.forward import Forwarder, chain_sinks, start_forwarding
from tollmeter.collector.limits import LimitsService
from tollmeter.collector.limits._attach import attach_limits
from tollmeter.collector.observability import CollectorMetrics
from tollmeter.collector.receivers import GrpcReceiver, OtlpIngest, SignalSink, http_receiver_app
from tollmeter.collector.storage import Ledger
from tollmeter.semconv.errors import TollmeterError

__all__ = ["Collector", "StartupError"]

_logger = logging.getLogger(__name__)

ShutdownHook = Callable[[], Awaitable[None]]


class StartupError(TollmeterError):
    """The collector could not start (address in use, ledger unusable...)."""


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"


class Collector:
    """A running tollmeter collector; use ``async with Collector(config):`` or start/stop."""

    def __init__(
        self, config: Config | None = None, *, signal_sink: SignalSink | None = None
    ) -> None:
        self.config = config or Config()
        self._signal_sink = signal_sink
        self._keys = KeyRing(
            admin_keys=self.config.management.admin_keys,
            ingest_keys=self.config.management.ingest_keys,
        )
        self._management = ManagementApi(keys=self._keys, readiness=self._readiness)
        self._state = _State.NEW
        self._ledger: Ledger | None = None
        self._pipeline: Pipeline | None = None
        self._grpc: GrpcReceiver | None = None
        self._http: EmbeddedServer | None = None
        self._management_server: EmbeddedServer | None = None
        self._shutdown_hooks: list[ShutdownHook] = []
        self._receivers_bound = False
        self._tls: ServerTls | None = None
        self.limits: LimitsService | None = None
        self.export: ExportService | None = None
        self.forwarder: Forwarder | None = None
        self.metrics = CollectorMetrics(self.config.metrics)

    # -- wiring for features -------------------------------------------------

    def add_management_routes(self, routes: Sequence[BaseRoute]) -> None:
        """Serve more routes on the management API (``/api/*`` ones need an admin key)."""
        self._management.add_routes(routes)

    def on_shutdown(self, hook: ShutdownHook) -> None:
        """Run ``hook`` during :meth:`stop`, after the pipeline drained, before the
        ledger closes. A failing hook is logged and does not stop the others."""
        self._shutdown_hooks.append(hook)

    # -- state -----------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise RuntimeError("the collector is not started")
        return self._ledger

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise RuntimeError("the collector is not started")
        return self._pipeline

    @property
    def grpc_endpoint(self) -> str:
        """``host:port`` of the OTLP/gRPC receiver."""
        if self._grpc is None:
            raise RuntimeError("the gRPC receiver is not running")
        return str(self._grpc.endpoint)

    @property
    def http_endpoint(self) -> str:
        """Base URL of the OTLP/HTTP receiver (append ``/v1/traces``)."""
        if self._http is None or self._http.endpoint is None:
            raise RuntimeError("the HTTP receiver is not running")
        return f"{self._scheme}://{self._http.endpoint}"

    @property
    def management_url(self) -> str:
        """Base URL of the management API."""
        if self._management_server is None or self._management_server.endpoint is None:
            raise RuntimeError("the management API is not running")
        return f"{self._scheme}://{self._management_server.endpoint}"

    @property
    def _scheme(self) -> str:
        return "https" if self.config.server.tls.enabled else "http"

    def _readiness(self) -> dict[str, str | None]:
        pipeline = self._pipeline
        return {
            "ledger": None if self._ledger is not None else "the ledger is not open",
            "receivers": None if self._receivers_bound else "the receivers are not listening",
            "pipeline": (
                None if pipeline is not None and pipeline.ready else "the pipeline is not running"
            ),
            "ledger_commits": None if pipeline is None else pipeline.commit_error,
        }

    # -- reload ------------------------------------------------------------------

    def reload(self, config: Config) -> None:
        """Swap in the TLS certificates, keys and limits of ``config`` without dropping
        connections (what else changed waits for a restart).

        Raises :class:`~tollmeter.collector._tls.TlsError` and changes nothing when
        the new certificates cannot be used.
        """
        tls = config.server.tls
        if (self._tls is None) != (not tls.enabled):
            raise TlsError("turning TLS on or off needs a restart")
        if self._tls is not None and self._tls.reload(tls):
            _logger.info("TLS certificates reloaded from %s", tls.cert_file)
        self._keys.replace(
            admin_keys=config.management.admin_keys,
            ingest_keys=config.management.ingest_keys,
        )
        _logger.info("admin and ingest keys reloaded")
        if self.limits is not None:
            self.limits.reload(config.limits)

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Collector:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open, bind and serve; raises :class:`StartupError` and leaves nothing running."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"a collector starts once (state: {self._state.value})")
        self._state = _State.STARTING
        self._warn_if_exposed()
        try:
            await self._start()
        except BaseException as exc:
            # Nothing was acknowledged yet: a short grace only lets listeners close cleanly.
            await self._teardown(grace=1.0)
            self._state = _State.STOPPED
            if isinstance(exc, (OSError, TollmeterError)) and not isinstance(exc, StartupError):
                raise StartupError(str(exc)) from exc
            raise
        self._state = _State.RUNNING
        _logger.info(
            "collector %s ready: OTLP/gRPC %s, OTLP/HTTP %s, management %s",
            self.config.collector_id,
            self._grpc.endpoint if self._grpc else "off",
            self._http.endpoint if self._http else "off",
            self._management_server.endpoint if self._management_server else "off",
        )

    async def _start(self) -> None:
        config = self.config
        edge = config.server
        self._tls = ServerTls(edge.tls) if edge.tls.enabled else None
        ssl_context = None if self._tls is None else self._tls.ssl_context
        self._ledger = await asyncio.to_thread(open_configured_ledger, config)
        self._pipeline = build_pipeline(config, self.metrics.timed(self._ledger))
        await self._pipeline.start()
        self._management.add_routes(usage_api_routes(self._ledger, self._pipeline))
        self.limits = attach_limits(self)
        self.export = install_export(
            self,
            config.export,
            data_dir=config.data_dir,
            collector_id=config.collector_id,
            shutdown_timeout_s=config.shutdown_grace,
        )
        self.forwarder = start_forwarding(config.forward)
        await self.metrics.attach(
            self, keys=self._keys, limits=self.limits, forwarder=self.forwarder
        )
        attach_console(self, keys=self._keys, readiness=self._readiness)
        if config.management.enabled:
            self._management_server = EmbeddedServer(
                self._management.app,
                config.management.endpoint,
                name="management API",
                limits=edge,
                ssl_context=ssl_context,
            )
            await self._management_server.start()
        sink = chain_sinks(
            self.metrics.count_request,
            self._signal_sink,
            self.forwarder.offer if self.forwarder is not None else None,
        )
        ingest = OtlpIngest(self._pipeline, self._keys, signal_sink=sink)
        if config.receivers.grpc.enabled:
            self._grpc = GrpcReceiver(ingest, config.receivers.grpc, limits=edge, tls=self._tls)
            await self._grpc.start()
        if config.receivers.http.enabled:
            app = http_receiver_app(ingest, max_body_bytes=config.receivers.http.max_body_bytes)
            self._http = EmbeddedServer(
                app,
                config.receivers.http.endpoint,
                name="OTLP/HTTP",
                limits=edge,
                ssl_context=ssl_context,
            )
            await self._http.start()
        self._receivers_bound = True

    async def stop(self) -> None:
        """Shut down in order within ``config.shutdown_grace``; idempotent."""
        if self._state in (_State.NEW, _State.STOPPED):
            self._state = _State.STOPPED
            return
        self._state = _State.STOPPED
        await self._teardown(grace=self.config.shutdown_grace)
        _logger.info("collector %s stopped", self.config.collector_id)

    async def _teardown(self, *, grace: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace

        def remaining() -> float:
            return max(0.0, deadline - loop.time())

        self._receivers_bound = False
        grpc_receiver, self._grpc = self._grpc, None
        http_server, self._http = self._http, None
        management, self._management_server = self._management_server, None
        # The management API stops with the receivers: it serves nothing a
        # draining collector needs, and stopping both at once halves the wait.
        stops: list[Awaitable[None]] = []
        if grpc_receiver is not None:
            stops.append(grpc_receiver.stop(remaining()))
        if http_server is not None:
            stops.append(http_server.stop(timeout=remaining()))
        if management is not None:
            stops.append(management.stop(timeout=min(1.0, remaining())))
        await _quietly(asyncio.gather(*stops), "stopping the receivers")
        forwarder = self.forwarder
        if forwarder is not None:
            # Nothing new can arrive: forwarding flushes alongside the drain and the hooks.
            forwarder.close(time.monotonic() + remaining())
        pipeline = self._pipeline
        if pipeline is not None:
            await _quietly(pipeline.stop(timeout=remaining()), "draining the pipeline")
        for hook in self._shutdown_hooks:
            await _quietly(asyncio.wait_for(hook(), max(remaining(), 1.0)), "a shutdown hook")
        if forwarder is not None:
            await _quietly(
                asyncio.to_thread(forwarder.shutdown, remaining()), "flushing forwarding"
            )
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            await _quietly(asyncio.to_thread(ledger.close), "closing the ledger")

    def _warn_if_exposed(self) -> None:
        config = self.config
        endpoints = [
            (config.receivers.grpc.enabled, config.receivers.grpc.endpoint),
            (config.receivers.http.enabled, config.receivers.http.endpoint),
            (config.management.enabled, config.management.endpoint),
        ]
        exposed = [
            str(endpoint) for enabled, endpoint in endpoints if enabled and not endpoint.is_loopback
        ]
        if exposed and not config.server.tls.enabled:
            _logger.warning(
                "listening on non-loopback address(es) %s without TLS: keys and usage travel "
                "in clear text; set server.tls.cert_file unless a proxy terminates TLS",
                ", ".join(exposed),
            )
        if exposed and not (config.management.admin_keys or config.management.ingest_keys):
            _logger.warning(
                "listening on non-loopback address(es) %s with no admin or ingest keys: anyone "
                "who can reach them can report usage and read the ledger; set "
                "management.ingest_keys and management.admin_keys",
                ", ".join(exposed),
            )


async def _quietly(step: Awaitable[object], what: str) -> None:
    try:
        await step
    except Exception:
        _logger.exception("error while %s; continuing shutdown", what)
