"""Serve an ASGI app with uvicorn inside the collector's event loop.

The collector binds the socket itself, so an address in use is reported as an
``OSError`` at start-up instead of uvicorn exiting the process, and port 0
yields the real port. uvicorn's own signal handling is disabled: one owner,
the CLI, handles signals for the whole process. Connections are served by
:func:`~tollmeter.collector._http_guard.guarded_protocol`, which adds header and
body deadlines and a connection cap to uvicorn's h11 protocol; with TLS, a
client that does not finish the handshake within the header timeout is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from tollmeter.collector._config_values import Endpoint
from tollmeter.collector._edge_config import ServerConfig
from tollmeter.collector._http_guard import guarded_protocol

__all__ = ["EmbeddedServer"]

_logger = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, handshake_timeout: float) -> None:
        super().__init__(config)
        self._handshake_timeout = handshake_timeout

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own startup cannot bound the TLS handshake (asyncio waits 60 s by
        # default); the collector always hands over its bound socket and runs no lifespan.
        if not sockets:
            raise RuntimeError("the embedded server serves sockets bound by its owner")
        config = self.config
        loop = asyncio.get_running_loop()

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state={}, _loop=loop
            )

        self.servers = [
            await loop.create_server(
                create_protocol,
                sock=sock,
                ssl=config.ssl,
                backlog=config.backlog,
                ssl_handshake_timeout=self._handshake_timeout if config.ssl else None,
            )
            for sock in sockets
        ]
        self.started = True


class EmbeddedServer:
    """One uvicorn server on one socket, started and stopped by its owner."""

    def __init__(
        self,
        app: ASGIApp,
        endpoint: Endpoint,
        *,
        name: str,
        limits: ServerConfig | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._app = app
        self._requested = endpoint
        self._name = name
        self._limits = limits or ServerConfig()
        self._ssl_context = ssl_context
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self.endpoint: Endpoint | None = None

    async def start(self, *, timeout: float = 10.0) -> Endpoint:
        """Bind and serve; raises ``OSError`` when the address cannot be used."""
        family = socket.AF_INET6 if ":" in self._requested.host else socket.AF_INET
        try:
            sock = _listening_socket(family, self._requested.host, self._requested.port)
        except OSError as exc:
            raise OSError(
                f"cannot listen on {self._requested} ({self._name}): {exc.strerror or exc}"
            ) from None
        sock.setblocking(False)
        self._socket = sock
        context = self._ssl_context
        config = uvicorn.Config(
            self._app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=5,
            http=guarded_protocol(self._limits),
            timeout_keep_alive=self._limits.idle_timeout,  # type: ignore[arg-type]
            # The collector's own context: shared by the listeners, reloaded in place.
            ssl_context_factory=None if context is None else (lambda _config, _default: context),
        )
        server = _QuietServer(config, handshake_timeout=self._limits.header_timeout)
        self._server = server
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"tollmeter-{self._name}")
        self._task = task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not server.started:
            if task.done():
                await self.stop(timeout=0)
                task.result()  # re-raises whatever ended it
                raise OSError(f"{self._name} server stopped during start-up")
            if loop.time() > deadline:
                await self.stop(timeout=1.0)
                raise OSError(f"{self._name} server did not start within {timeout:.0f}s")
            await asyncio.sleep(0.005)
        port = sock.getsockname()[1]
        self.endpoint = Endpoint(self._requested.host, port)
        return self.endpoint

    async def stop(self, *, timeout: float) -> None:
        """Stop accepting, let open requests finish within ``timeout``, then cancel them."""
        server, task, sock = self._server, self._task, self._socket
        self._server, self._task, self._socket = None, None, None
        if server is None or task is None or sock is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except asyncio.TimeoutError:
            _logger.error("%s server did not stop within %.1fs; cancelling", self._name, timeout)
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for listener in getattr(server, "servers", ()):
                listener.close()
        finally:
            sock.close()


def _listening_socket(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    # IPPROTO_TCP given explicitly: asyncio sets TCP_NODELAY only on sockets whose protocol
    # says TCP, and socket.create_server leaves it 0, so every small response would wait
    # for the client's delayed ACK (about 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    return sock
