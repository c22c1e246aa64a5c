"""OTLP receivers: gRPC (``grpc.aio``) and HTTP (Starlette), sharing one ingest core."""

from __future__ import annotations

from tollmeter.collector.errors import Undecodable
from tollmeter.collector.receivers._grpc import GrpcReceiver
from tollmeter.collector.receivers._http import http_receiver_app
from tollmeter.collector.receivers._ingest import (
    RETRY_DELAY_S,
    SIGNALS,
    OtlpIngest,
    Signal,
    SignalSink,
    TracePipeline,
)

__all__ = [
    "RETRY_DELAY_S",
    "SIGNALS",
    "GrpcReceiver",
    "OtlpIngest",
    "Signal",
    "SignalSink",
    "TracePipeline",
    "Undecodable",
    "http_receiver_app",
]
