"""Run the fake LLM server in a background thread, for tests and embedding."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from tollmeter.fakellm._app import FakeLLMState, create_app
from tollmeter.fakellm._errors import FakeLLMError
from tollmeter.fakellm._journal import Exchange
from tollmeter.fakellm._tokens import preload

__all__ = ["FakeLLMServer", "bind_socket", "uvicorn_config"]

_GRACEFUL_SHUTDOWN_S = 2.0


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before serving, so that port 0 resolves to a known free port up front."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP;
    # without it every response waits out the client's delayed ACK (about 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def uvicorn_config(app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,  # request lines are not needed, and bodies never are
        lifespan="off",
        timeout_graceful_shutdown=int(_GRACEFUL_SHUTDOWN_S),
    )


class FakeLLMServer:
    """An OpenAI- and Anthropic-compatible server on ``host:port`` (0: any free port).

    Use as a context manager (sync or async) or call :meth:`start` / :meth:`stop`. OpenAI
    clients take ``base_url=f"{server.url}/v1"``, Anthropic clients ``base_url=server.url``.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self.state = FakeLLMState()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._failure: BaseException | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise FakeLLMError("the fake LLM server is not running")
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def requests(self) -> list[Exchange]:
        """Every recent exchange, oldest first (see ``GET /_fake/requests``)."""
        return self.state.journal.snapshot()

    def find(self, response_id: str) -> Exchange:
        """The exchange that produced ``response_id``."""
        for exchange in reversed(self.state.journal.snapshot()):
            if exchange.response_id == response_id:
                return exchange
        raise KeyError(response_id)

    def left_early(self, request_id: str) -> int | None:
        """The chunks sent to a streaming client that went away before the end, else ``None``
        (the client read the whole stream, or it was all sent before it left)."""
        return self.state.left_early.get(request_id)

    def last(self) -> Exchange:
        items = self.state.journal.snapshot()
        if not items:
            raise LookupError("no request has reached the fake LLM server yet")
        return items[-1]

    def start(self, timeout: float = 10.0) -> FakeLLMServer:
        if self._thread is not None:
            raise FakeLLMError("the fake LLM server is already running")
        preload(timeout)
        self._socket = bind_socket(self.host, self._port)
        self._server = uvicorn.Server(uvicorn_config(create_app(self.state)))
        self._thread = threading.Thread(
            target=self._run, args=(self._server, self._socket), name="fake-llm", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._failure is not None or not self._thread.is_alive():
                self.stop(timeout=1.0)
                raise FakeLLMError("the fake LLM server failed to start") from self._failure
            if time.monotonic() > deadline:
                self.stop(timeout=1.0)
                raise FakeLLMError(f"the fake LLM server did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to start(); a thread cannot raise to its owner
            self._failure = exc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving; idempotent. Open streams get a short grace period, then are cut."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout)
            if thread.is_alive():
                raise FakeLLMError(f"the fake LLM server did not stop within {timeout} s")
        if sock is not None:
            sock.close()
        self._socket = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeLLMServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)
