"""uvicorn's h11 protocol with the deadlines and connection cap it lacks.

uvicorn closes idle keep-alive connections but waits forever for a request
that never arrives in full: a client may connect and send nothing, or trickle
its headers or body one byte at a time. :func:`guarded_protocol` makes a
protocol class that gives each request ``header_timeout`` for its headers
(counted from the connection opening, or from the first byte of a later
request) and ``body_timeout`` for its body once the headers are in; a request
late on either is dropped with the connection. While the application works on
a complete request no deadline runs. Beyond ``max_connections`` open
connections, a new one is answered 503 and closed at once.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from tollmeter.collector._edge_config import ServerConfig

__all__ = ["guarded_protocol"]

_logger = logging.getLogger(__name__)

_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 21\r\n\r\ntoo many connections\n"
)
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
    b"Connection: close\r\nContent-Length: 29\r\n\r\nrequest not received in time\n"
)


def guarded_protocol(limits: ServerConfig) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass enforcing ``limits`` (pass it as uvicorn's ``http``)."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._deadline: asyncio.TimerHandle | None = None
            self._waiting_for: object = None
            # uvicorn counts this connection only in super(): the set holds the others.
            if len(self.connections) >= limits.max_connections:
                _logger.warning(
                    "refusing a connection: %d open, limit %d",
                    len(self.connections),
                    limits.max_connections,
                )
                transport.write(_TOO_MANY)
                transport.close()
                # Registered anyway so connection_lost finds consistent state.
                super().connection_made(transport)
                return
            super().connection_made(transport)
            self._follow()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _follow(self) -> None:
            """Arm the deadline that fits the state of the request being received."""
            state = self.conn.their_state
            if self.transport.is_closing():
                self._disarm()
            elif state is h11.IDLE:
                # Between requests uvicorn's keep-alive timer runs (it stops at the
                # next byte); the header deadline runs from a new connection or
                # from a request's first byte.
                if self.timeout_keep_alive_task is None:
                    self._arm(h11.IDLE, limits.header_timeout)
                else:
                    self._disarm()
            elif state is h11.SEND_BODY:
                self._arm(h11.SEND_BODY, limits.body_timeout)
            else:
                self._disarm()

        def _arm(self, waiting_for: object, seconds: float) -> None:
            if self._waiting_for is waiting_for:
                return
            self._disarm()
            self._waiting_for = waiting_for
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = None
            self._waiting_for = None

        def _expire(self) -> None:
            waiting_for, self._deadline, self._waiting_for = self._waiting_for, None, None
            if self.transport.is_closing():
                return
            _logger.info(
                "closing a connection from %s: request %s not received in time",
                f"{self.client[0]}:{self.client[1]}" if self.client else "?",
                "headers" if waiting_for is h11.IDLE else "body",
            )
            if waiting_for is h11.IDLE:
                # No request is being answered, so a response cannot collide with one.
                self.transport.write(_TIMED_OUT)
            self.transport.close()

    return GuardedH11Protocol
