"""OTLP/gRPC receiver on ``grpc.aio``: TraceService, MetricsService, LogsService.

Requests arrive as raw bytes (no deserializer registered) so that an
undecodable payload is answered INVALID_ARGUMENT rather than a generic error.
Status mapping, as the OTLP specification asks:

- too large (``max_message_bytes``): RESOURCE_EXHAUSTED, from gRPC itself;
- undecodable: INVALID_ARGUMENT;
- missing or unknown ingest key: UNAUTHENTICATED;
- pipeline full or ledger failing: UNAVAILABLE with ``google.rpc.RetryInfo``, both in
  ``grpc-status-details-bin`` and in ``google.rpc.retryinfo-bin`` (read by the
  OpenTelemetry Python exporter), so that standard exporters retry later;
- some spans rejected: OK with ``partial_success``.

Slow and idle clients (the ``server`` section): a connection must finish its
TLS and HTTP/2 handshake within ``header_timeout``; one with no call in
progress is closed after ``idle_timeout``; at most ``max_connections`` are
open, and each carries at most ``_MAX_STREAMS`` calls at once. gRPC hands a
unary request over only once it arrived in full, so a call whose message
trickles in is bounded by the connection's age: every connection is asked to
close after ``_MAX_CONNECTION_AGE_S``, and cut ``body_timeout`` later.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.rpc import (  # type: ignore[import-untyped]
    code_pb2,
    error_details_pb2,
    status_pb2,
)

from tollmeter.collector._auth import key_from_headers
from tollmeter.collector._config import GrpcReceiverConfig
from tollmeter.collector._config_values import Endpoint
from tollmeter.collector._edge_config import ServerConfig
from tollmeter.collector._tls import ServerTls
from tollmeter.collector.errors import Unauthenticated, Undecodable
from tollmeter.collector.receivers._ingest import (
    RETRYABLE,
    SIGNALS,
    OtlpIngest,
    Signal,
    decode,
    retry_advice,
)

__all__ = ["GrpcReceiver"]

_logger = logging.getLogger(__name__)

_MAX_STREAMS = 100
# Long enough not to matter to a healthy exporter; also lets an L4 balancer spread
# reconnecting clients over replicas.
_MAX_CONNECTION_AGE_S = 300.0

_Handler = Callable[[bytes, grpc.aio.ServicerContext[bytes, Message]], Awaitable[Message]]


def _retry_metadata(message: str, delay_s: float) -> tuple[tuple[str, bytes], ...]:
    seconds = int(delay_s)
    retry = error_details_pb2.RetryInfo(
        retry_delay=Duration(seconds=seconds, nanos=int((delay_s - seconds) * 1e9))
    )
    packed = AnyMessage()
    packed.Pack(retry)
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message, details=[packed])
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", retry.SerializeToString()),
    )


async def _abort(
    context: grpc.aio.ServicerContext[bytes, Message],
    code: grpc.StatusCode,
    details: str,
    trailing_metadata: tuple[tuple[str, bytes], ...] = (),
) -> NoReturn:
    await context.abort(code, details, trailing_metadata=trailing_metadata)
    # abort() always raises; this line only makes the NoReturn contract explicit.
    raise RuntimeError("grpc context.abort() returned")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class GrpcReceiver:
    """Serves OTLP/gRPC until :meth:`stop`."""

    def __init__(
        self,
        ingest: OtlpIngest,
        config: GrpcReceiverConfig,
        *,
        limits: ServerConfig | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        self._ingest = ingest
        self._config = config
        self._limits = limits or ServerConfig()
        self._tls = tls
        self._server: grpc.aio.Server | None = None
        self._endpoint: Endpoint | None = None

    @property
    def endpoint(self) -> Endpoint:
        """The bound address (the real port when the configured one was 0)."""
        if self._endpoint is None:
            raise RuntimeError("the gRPC receiver is not started")
        return self._endpoint

    async def start(self) -> Endpoint:
        """Bind and start serving; raises ``OSError`` when the address is unusable."""
        limit = self._config.max_message_bytes
        limits = self._limits
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                # Without this a second collector could share the port unnoticed.
                ("grpc.so_reuseport", 0),
                ("grpc.server_handshake_timeout_ms", _ms(limits.header_timeout)),
                ("grpc.max_connection_idle_ms", _ms(limits.idle_timeout)),
                ("grpc.max_connection_age_ms", _ms(_MAX_CONNECTION_AGE_S)),
                ("grpc.max_connection_age_grace_ms", _ms(limits.body_timeout)),
                ("grpc.max_allowed_incoming_connections", limits.max_connections),
                ("grpc.max_concurrent_streams", _MAX_STREAMS),
            ]
        )
        handlers = [
            grpc.method_handlers_generic_handler(
                spec.service,
                {
                    "Export": grpc.unary_unary_rpc_method_handler(
                        self._handler(signal),
                        response_serializer=lambda message: message.SerializeToString(),
                    )
                },
            )
            for signal, spec in SIGNALS.items()
        ]
        server.add_generic_rpc_handlers(handlers)
        address = str(self._config.endpoint)
        try:
            if self._tls is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, self._tls.grpc_credentials())
        except RuntimeError:
            # gRPC's own message only points at GRPC_VERBOSITY; the cause is nearly always this.
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {address} (gRPC): address in use or unavailable")
        await server.start()
        self._server = server
        self._endpoint = Endpoint(self._config.endpoint.host, port)
        return self._endpoint

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let running ones finish within ``grace`` seconds."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)

    def _handler(self, signal: Signal) -> _Handler:
        spec = SIGNALS[signal]
        ingest = self._ingest

        async def export(
            payload: bytes, context: grpc.aio.ServicerContext[bytes, Message]
        ) -> Message:
            metadata = {
                key.lower(): value
                for key, value in (context.invocation_metadata() or ())
                if isinstance(value, str)
            }
            try:
                bound = ingest.keys.ingest_key(key_from_headers(metadata.get))
            except Unauthenticated as exc:
                await _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
            try:
                request = decode(spec, payload, "protobuf")
            except Undecodable as exc:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            try:
                return await ingest.export(
                    signal,
                    request,
                    bound_tenant=bound.tenant,
                    internal=bound.internal,
                    raw=payload,
                )
            except RETRYABLE as exc:
                message, delay_s = retry_advice(exc)
                await _abort(
                    context,
                    grpc.StatusCode.UNAVAILABLE,
                    message,
                    trailing_metadata=_retry_metadata(message, delay_s),
                )

        return export
