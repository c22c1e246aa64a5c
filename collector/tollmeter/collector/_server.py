"""The collector process in one object: its components, started and stopped in order.

``Collector(config)`` is cheap; :meth:`Collector.start` starts the components of
``_components.COMPONENTS`` in order (ledger, forwarding, pipeline, limits, export,
metrics, console, receivers, management API; port 0 allowed: the bound addresses are
exposed). :meth:`Collector.stop` stops those that started in the reverse order within
one deadline, ``config.shutdown_grace`` from the stop: the listeners first (no new
spans, in-flight requests finish), the ledger last. :meth:`Collector.reload` swaps in new
keys, TLS files, limits and plans while serving. Signals are the CLI's business, never this
class's.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from tollmeter.collector._asgi_server import EmbeddedServer
from tollmeter.collector._auth import KeyRing
from tollmeter.collector._components import COMPONENTS, Component, remaining
from tollmeter.collector._config import Config
from tollmeter.collector._management import ManagementApi
from tollmeter.collector._pipeline import Pipeline
from tollmeter.collector._tls import ServerTls
from tollmeter.collector.errors import StartupError, TlsError
from tollmeter.collector.export import ExportService
from tollmeter.collector.forward import Forwarder
from tollmeter.collector.limits import LimitsService
from tollmeter.collector.observability import CollectorMetrics
from tollmeter.collector.pricing import Pricer
from tollmeter.collector.receivers import GrpcReceiver, SignalSink
from tollmeter.collector.storage import Ledger
from tollmeter.semconv.errors import TollmeterError

__all__ = ["Collector"]

_logger = logging.getLogger(__name__)


_LAST_MOMENT_S = 1.0


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"


class Collector:
    """A running tollmeter collector; use ``async with Collector(config):`` or start/stop."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        signal_sink: SignalSink | None = None,
        components: Sequence[Callable[[], Component]] = COMPONENTS,
    ) -> None:
        self.config = config or Config()
        self._components = tuple(components)
        self.signal_sink = signal_sink
        self.keys = KeyRing(
            admin_keys=self.config.management.admin_keys,
            ingest_keys=self.config.management.ingest_keys,
            internal_keys=self.config.management.internal_keys,
        )
        self.pricer = Pricer(self.config.pricing)
        self._management = ManagementApi(keys=self.keys, readiness=self.readiness)
        self._state = _State.NEW
        self._started: list[Component] = []
        self._ledger: Ledger | None = None
        self._pipeline: Pipeline | None = None
        self._grpc: GrpcReceiver | None = None
        self._http: EmbeddedServer | None = None
        self._management_server: EmbeddedServer | None = None
        self.receivers_bound = False
        self.tls: ServerTls | None = None
        self.limits: LimitsService | None = None
        self.export: ExportService | None = None
        self.forwarder: Forwarder | None = None
        self.metrics = CollectorMetrics(self.config.metrics)

    # -- the context components start with -------------------------------------

    def add_management_routes(self, routes: Sequence[BaseRoute]) -> None:
        """Serve more routes on the management API (``/api/*`` ones need an admin key)."""
        self._management.add_routes(routes)

    @property
    def management_app(self) -> ASGIApp:
        return self._management.app

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        return None if self.tls is None else self.tls.ssl_context

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

    def readiness(self) -> dict[str, str | None]:
        """Each readiness check's failure reason, ``None`` where it passes."""
        pipeline = self._pipeline
        return {
            # Components answer while start() still awaits the last of them: ready means all.
            "started": (
                None
                if self._state is _State.RUNNING
                else f"the collector is {self._state.value}, not running"
            ),
            "ledger": None if self._ledger is not None else "the ledger is not open",
            "receivers": None if self.receivers_bound else "the receivers are not listening",
            "pipeline": (
                None if pipeline is not None and pipeline.ready else "the pipeline is not running"
            ),
            "ledger_commits": None if pipeline is None else pipeline.commit_error,
        }

    # -- reload ------------------------------------------------------------------

    def reload(self, config: Config) -> None:
        """Swap in the TLS certificates, keys, limits and plans of ``config`` without
        dropping connections (what else changed waits for a restart).

        Raises :class:`~tollmeter.collector._tls.TlsError` and changes nothing when
        the new certificates cannot be used.
        """
        tls = config.server.tls
        if (self.tls is None) != (not tls.enabled):
            raise TlsError("turning TLS on or off needs a restart")
        if self.tls is not None and self.tls.reload(tls):
            _logger.info("TLS certificates reloaded from %s", tls.cert_file)
        self.keys.replace(
            admin_keys=config.management.admin_keys,
            ingest_keys=config.management.ingest_keys,
            internal_keys=config.management.internal_keys,
        )
        _logger.info("admin and ingest keys reloaded")
        if self.limits is not None:
            self.limits.reload(config.limits, config.plans)

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
        tls = self.config.server.tls
        self.tls = ServerTls(tls) if tls.enabled else None
        for make in self._components:
            component = make()
            # Listed before it starts: one that fails half-way still stops what it began.
            self._started.append(component)
            await component.start(self)

    async def stop(self) -> None:
        """Shut down in order within ``config.shutdown_grace``; idempotent."""
        if self._state in (_State.NEW, _State.STOPPED):
            self._state = _State.STOPPED
            return
        self._state = _State.STOPPED
        await self._teardown(grace=self.config.shutdown_grace)
        _logger.info("collector %s stopped", self.config.collector_id)

    async def _teardown(self, *, grace: float) -> None:
        deadline = time.monotonic() + grace
        self.receivers_bound = False
        started, self._started = self._started, []
        for component in reversed(started):
            # Past the deadline each still gets a moment: the ledger must close.
            budget = max(remaining(deadline), _LAST_MOMENT_S)
            try:
                await asyncio.wait_for(component.stop(deadline), budget)
            except asyncio.TimeoutError:
                _logger.error("the %s did not stop in time; going on without it", component.name)
            except Exception:
                _logger.exception("error while stopping the %s; continuing", component.name)
        self._grpc = self._http = self._management_server = None

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
