"""Forwarding: pass every received OTLP trace, metric and log request on, unchanged,
to Jaeger, Grafana Tempo or any OTLP receiver, without ever slowing ingest."""

from __future__ import annotations

from tollmeter.collector.forward._config import (
    DropPolicy,
    ExporterConfig,
    ForwardBatch,
    ForwardConfig,
    ForwardRetry,
    ForwardTls,
    Protocol,
    Signal,
    SignalSink,
)
from tollmeter.collector.forward._exporter import (
    DROP_REASONS,
    DropReason,
    ExporterStats,
    ForwardExporter,
)
from tollmeter.collector.forward._service import Forwarder, chain_sinks, start_forwarding
from tollmeter.collector.forward._transport import (
    GrpcTransport,
    HttpTransport,
    SendResult,
    Transport,
    make_transport,
)

__all__ = [
    "DROP_REASONS",
    "DropPolicy",
    "DropReason",
    "ExporterConfig",
    "ExporterStats",
    "ForwardBatch",
    "ForwardConfig",
    "ForwardExporter",
    "ForwardRetry",
    "ForwardTls",
    "Forwarder",
    "GrpcTransport",
    "HttpTransport",
    "Protocol",
    "SendResult",
    "Signal",
    "SignalSink",
    "Transport",
    "chain_sinks",
    "make_transport",
    "start_forwarding",
]
