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

from tollmeter.collector._auth import Unauthenticated, key_from_headers
from tollmeter.collector._config import GrpcReceiverConfig
from tollmeter.collector._config_values import Endpoint
from tollmeter.collector.receivers._ingest import (
    RETRYABLE,
    SIGNALS,
    OtlpIngest,
    Signal,
    Undecodable,
    decode,
    retry_advice,
)

__all__ = ["GrpcReceiver"]

_logger = logging.getLogger(__name__)

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


class GrpcReceiver:
    """Serves OTLP/gRPC until :meth:`stop`."""

    def __init__(self, ingest: OtlpIngest, config: GrpcReceiverConfig) -> None:
        self._ingest = ingest
        self._config = config
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
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                # Without this a second collector could share the port unnoticed.
                ("grpc.so_reuseport", 0),
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
            port = server.add_insecure_port(address)
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
                bound_tenant = ingest.keys.ingest_tenant(key_from_headers(metadata.get))
            except Unauthenticated as exc:
                await _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
            try:
                request = decode(spec, payload, "protobuf")
            except Undecodable as exc:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            try:
                return await ingest.export(signal, request, bound_tenant=bound_tenant, raw=payload)
            except RETRYABLE as exc:
                message, delay_s = retry_advice(exc)
                await _abort(
                    context,
                    grpc.StatusCode.UNAVAILABLE,
                    message,
                    trailing_metadata=_retry_metadata(message, delay_s),
                )

        return export
