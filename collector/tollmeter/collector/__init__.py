"""The tollmeter collector: OTLP in, usage ledger, meters, limits and export out."""

from __future__ import annotations

from tollmeter.collector._auth import Unauthenticated
from tollmeter.collector._config import (
    Config,
    GrpcReceiverConfig,
    HttpReceiverConfig,
    IngestConfig,
    ManagementConfig,
    ReceiversConfig,
    StorageConfig,
)
from tollmeter.collector._config_values import (
    ConfigProblem,
    Endpoint,
    InvalidConfig,
    InvalidSetting,
    Section,
)
from tollmeter.collector._extract import Extractor, ExtractResult
from tollmeter.collector._meters import Meters, MeterTotals
from tollmeter.collector._pipeline import IngestResult, Pipeline, PipelineFull, PipelineStats
from tollmeter.collector._records import UsageEvent
from tollmeter.collector._server import Collector, StartupError
from tollmeter.collector._usage_api import usage_routes
from tollmeter.collector.storage import StorageError

__all__: list[str] = [
    "Collector",
    "Config",
    "ConfigProblem",
    "Endpoint",
    "ExtractResult",
    "Extractor",
    "GrpcReceiverConfig",
    "HttpReceiverConfig",
    "IngestConfig",
    "IngestResult",
    "InvalidConfig",
    "InvalidSetting",
    "ManagementConfig",
    "MeterTotals",
    "Meters",
    "Pipeline",
    "PipelineFull",
    "PipelineStats",
    "ReceiversConfig",
    "Section",
    "StartupError",
    "StorageConfig",
    "StorageError",
    "Unauthenticated",
    "UsageEvent",
    "usage_routes",
]
