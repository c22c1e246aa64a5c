"""Sending one OTLP request body downstream over gRPC or HTTP/protobuf.

A transport never raises: every outcome is a :class:`SendResult` saying whether
the request arrived, and if not, whether and when to try again. Bodies are
serialized ``Export*ServiceRequest`` messages; several concatenated bodies of
the same signal form one valid request (protobuf merges repeated fields), which
is how batches are built without decoding anything.
"""

from __future__ import annotations

import email.utils
import gzip
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Protocol as TypingProtocol

import grpc
import httpx
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from tollmeter.collector.forward._config import ExporterConfig, Signal

__all__ = ["GrpcTransport", "HttpTransport", "SendResult", "Transport", "make_transport"]

logger = logging.getLogger(__name__)

# The OTLP specification's retryable codes; anything else will fail again.
_RETRYABLE_GRPC = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
_RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_MAX_RECONNECT_BACKOFF_MS = 5000
_SERVICES: dict[Signal, str] = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}


@dataclass(frozen=True, slots=True)
class SendResult:
    """``ok``, or a failure that is ``retryable`` (after ``retry_after_s`` when the
    server said so) or final."""

    ok: bool
    retryable: bool = False
    retry_after_s: float | None = None
    error: str = ""


SENT = SendResult(ok=True)


class Transport(TypingProtocol):
    def send(self, signal: Signal, body: bytes, *, timeout_s: float) -> SendResult: ...

    def close(self) -> None: ...


class GrpcTransport:
    """OTLP/gRPC: the ``Export`` method of each signal's service, bodies passed as bytes."""

    def __init__(self, config: ExporterConfig) -> None:
        options = [
            ("grpc.max_send_message_length", -1),
            # gRPC's default reconnect backoff grows to two minutes: a restarted
            # downstream would stay unused long after it is back.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS),
        ]
        if config.tls.insecure:
            self._channel = grpc.insecure_channel(config.endpoint, options=options)
        else:
            root = config.tls.ca_file.read_bytes() if config.tls.ca_file is not None else None
            credentials = grpc.ssl_channel_credentials(root_certificates=root)
            self._channel = grpc.secure_channel(config.endpoint, credentials, options=options)
        self._metadata = tuple(config.headers.items())
        self._compression = grpc.Compression.Gzip if config.compression == "gzip" else None
        # No serializers: the bodies are already protobuf and pass through untouched.
        self._methods = {
            signal: self._channel.unary_unary(f"/{service}/Export")
            for signal, service in _SERVICES.items()
        }

    def send(self, signal: Signal, body: bytes, *, timeout_s: float) -> SendResult:
        try:
            self._methods[signal](
                body,
                timeout=timeout_s,
                metadata=self._metadata,
                compression=self._compression,
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            hint = _retry_info(exc) if isinstance(exc, grpc.Call) else None
            return SendResult(
                ok=False,
                retryable=code in _RETRYABLE_GRPC,
                retry_after_s=hint,
                error=f"{code.name}: {details}",
            )
        except Exception as exc:
            logger.debug("gRPC send failed", exc_info=True)
            return SendResult(ok=False, retryable=True, error=repr(exc))
        return SENT

    def close(self) -> None:
        self._channel.close()


def _retry_info(call: grpc.Call) -> float | None:
    """The ``RetryInfo`` delay a server put in the status details, if any."""
    for key, value in call.trailing_metadata() or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                delay = info.retry_delay
                return max(0.0, float(delay.seconds) + float(delay.nanos) / 1e9)
    return None


class HttpTransport:
    """OTLP/HTTP with protobuf bodies, posted to ``<endpoint>/v1/<signal>``."""

    def __init__(self, config: ExporterConfig) -> None:
        verify: bool | ssl.SSLContext = True
        if config.tls.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(config.tls.ca_file))
        self._client = httpx.Client(verify=verify, follow_redirects=False)
        self._base = config.endpoint.rstrip("/")
        self._gzip = config.compression == "gzip"
        self._headers = {
            **config.headers,
            "content-type": "application/x-protobuf",
            **({"content-encoding": "gzip"} if self._gzip else {}),
        }

    def send(self, signal: Signal, body: bytes, *, timeout_s: float) -> SendResult:
        content = gzip.compress(body, compresslevel=6) if self._gzip else body
        try:
            response = self._client.post(
                f"{self._base}/v1/{signal}",
                content=content,
                headers=self._headers,
                timeout=timeout_s,
            )
        except httpx.HTTPError as exc:
            return SendResult(ok=False, retryable=True, error=repr(exc))
        except Exception as exc:
            logger.debug("HTTP send failed", exc_info=True)
            return SendResult(ok=False, retryable=False, error=repr(exc))
        if 200 <= response.status_code < 300:
            return SENT
        return SendResult(
            ok=False,
            retryable=response.status_code in _RETRYABLE_HTTP,
            retry_after_s=_retry_after(response.headers.get("retry-after")),
            error=f"HTTP {response.status_code}",
        )

    def close(self) -> None:
        self._client.close()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def make_transport(config: ExporterConfig) -> Transport:
    if config.protocol == "grpc":
        return GrpcTransport(config)
    return HttpTransport(config)
