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
from tollmeter.collector._server import Collector, StartupError

__all__: list[str] = [
    "Collector",
    "Config",
    "ConfigProblem",
    "Endpoint",
    "GrpcReceiverConfig",
    "HttpReceiverConfig",
    "IngestConfig",
    "InvalidConfig",
    "InvalidSetting",
    "ManagementConfig",
    "ReceiversConfig",
    "Section",
    "StartupError",
    "StorageConfig",
    "Unauthenticated",
]
