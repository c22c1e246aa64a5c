"""What both OTLP receivers share: the three signals, decoding, keys, and the
hand-off to the pipeline.

Traces go to the pipeline, which answers only once their usage is committed.
Every decoded request (traces once accepted, metrics and logs at once) is also
offered as protobuf bytes to an optional ``signal_sink``, the seam where
forwarding to a tracing backend plugs in. A sink must not block; its errors are
logged and never reach the sender.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tollmeter.collector._auth import KeyRing
from tollmeter.collector._pipeline import IngestResult, PipelineFull
from tollmeter.collector.errors import Undecodable
from tollmeter.collector.receivers._otlp_json import from_otlp_json
from tollmeter.collector.storage import StorageError

__all__ = [
    "RETRYABLE",
    "RETRY_DELAY_S",
    "SIGNALS",
    "Encoding",
    "OtlpIngest",
    "Signal",
    "SignalSink",
    "SignalSpec",
    "TracePipeline",
    "decode",
    "retry_advice",
]

_logger = logging.getLogger(__name__)

Signal = Literal["traces", "metrics", "logs"]
Encoding = Literal["protobuf", "json"]
SignalSink = Callable[[Signal, bytes], None]


RETRY_DELAY_S = 1.0
"""Delay suggested to senders when the pipeline names none."""

RETRYABLE = (PipelineFull, StorageError)
"""Failures that acknowledged nothing and may pass: the sender should retry."""


def retry_advice(exc: PipelineFull | StorageError) -> tuple[str, float]:
    """The message and delay to send back for a retryable failure.

    The delay (the pipeline's, else :data:`RETRY_DELAY_S`) is spread by ±50% so
    that senders refused together do not all come back together.
    """
    if isinstance(exc, PipelineFull):
        message = f"collector busy, retry later: {exc}"
        base = exc.retry_after_s if exc.retry_after_s > 0 else RETRY_DELAY_S
    else:
        _logger.warning("ledger commit failed; asking the sender to retry: %s", exc)
        message = "ledger unavailable, retry later"
        base = RETRY_DELAY_S
    return message, base * random.uniform(0.5, 1.5)


@dataclass(frozen=True)
class SignalSpec:
    signal: Signal
    service: str
    request_type: type[Message]
    response_type: type[Message]


SIGNALS: dict[Signal, SignalSpec] = {
    "traces": SignalSpec(
        "traces",
        "opentelemetry.proto.collector.trace.v1.TraceService",
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    ),
    "metrics": SignalSpec(
        "metrics",
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    ),
    "logs": SignalSpec(
        "logs",
        "opentelemetry.proto.collector.logs.v1.LogsService",
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    ),
}


class TracePipeline(Protocol):
    async def ingest_traces(
        self,
        request: ExportTraceServiceRequest,
        *,
        bound_tenant: str | None = None,
        internal: bool = False,
    ) -> IngestResult: ...


def decode(spec: SignalSpec, payload: bytes, encoding: Encoding) -> Message:
    """Parse ``payload``; raises :class:`Undecodable` with the reason."""
    if encoding == "json":
        try:
            return from_otlp_json(payload, spec.request_type)
        except ValueError as exc:
            raise Undecodable(str(exc)) from None
    message = spec.request_type()
    try:
        message.ParseFromString(payload)
    except (DecodeError, RecursionError) as exc:
        raise Undecodable(f"not an OTLP {spec.request_type.DESCRIPTOR.name}: {exc}") from None
    return message


class OtlpIngest:
    """Authenticates, decodes and exports one OTLP request of any signal."""

    def __init__(
        self,
        pipeline: TracePipeline,
        keys: KeyRing,
        *,
        signal_sink: SignalSink | None = None,
    ) -> None:
        self._pipeline = pipeline
        self.keys = keys
        self._sink = signal_sink

    async def export(
        self,
        signal: Signal,
        request: Message,
        *,
        bound_tenant: str | None,
        internal: bool = False,
        raw: bytes | None = None,
    ) -> Message:
        """Export a decoded request and build its response; ``bound_tenant`` and
        ``internal`` are what its ingest key says (``KeyRing.ingest_key``).

        Raises the pipeline's ``PipelineFull`` when it cannot take the spans now.
        """
        spec = SIGNALS[signal]
        if signal != "traces":
            self._offer(signal, request, raw)
            return spec.response_type()
        if not isinstance(request, ExportTraceServiceRequest):
            raise TypeError(f"expected ExportTraceServiceRequest, got {type(request).__name__}")
        result = await self._pipeline.ingest_traces(
            request, bound_tenant=bound_tenant, internal=internal
        )
        self._offer(signal, request, raw)
        response = ExportTraceServiceResponse()
        if result.rejected_spans or result.error_message:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(
                    rejected_spans=result.rejected_spans, error_message=result.error_message
                )
            )
        return response

    def _offer(self, signal: Signal, request: Message, raw: bytes | None) -> None:
        if self._sink is None:
            return
        try:
            self._sink(signal, raw if raw is not None else request.SerializeToString())
        except Exception:
            _logger.exception(
                "signal sink failed for %s; the request is still acknowledged", signal
            )
