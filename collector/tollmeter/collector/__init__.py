"""The tollmeter collector: OTLP in, usage ledger, meters, limits and export out.

The public names load on first use, not when the package is imported: the ``tollmeter``
command (:mod:`tollmeter.collector.cli`) is installed with the base distribution too, and
must be able to check for the collector's dependencies and name the extra to install
before anything imports them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tollmeter.collector._config import (
        Config,
        GrpcReceiverConfig,
        HttpReceiverConfig,
        IngestConfig,
        ManagementConfig,
        ReceiversConfig,
        StorageConfig,
    )
    from tollmeter.collector._config_values import ConfigProblem, Endpoint, Section
    from tollmeter.collector._extract import Extractor, ExtractResult
    from tollmeter.collector._meters import Meters, MeterTotals
    from tollmeter.collector._pipeline import IngestResult, Pipeline, PipelineStats
    from tollmeter.collector._records import UsageEvent
    from tollmeter.collector._server import Collector
    from tollmeter.collector._usage_api import usage_routes
    from tollmeter.collector.errors import (
        InvalidConfig,
        InvalidSetting,
        PipelineFull,
        StartupError,
        StorageError,
        Unauthenticated,
    )

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

# Where each public name is defined; tests check this against ``__all__`` and the imports
# above, which give type checkers the same names.
_HOMES: dict[str, str] = {
    **dict.fromkeys(
        (
            "Config",
            "GrpcReceiverConfig",
            "HttpReceiverConfig",
            "IngestConfig",
            "ManagementConfig",
            "ReceiversConfig",
            "StorageConfig",
        ),
        "_config",
    ),
    **dict.fromkeys(
        ("ConfigProblem", "Endpoint", "Section"),
        "_config_values",
    ),
    "Extractor": "_extract",
    "ExtractResult": "_extract",
    "Meters": "_meters",
    "MeterTotals": "_meters",
    **dict.fromkeys(("IngestResult", "Pipeline", "PipelineStats"), "_pipeline"),
    "UsageEvent": "_records",
    "Collector": "_server",
    "usage_routes": "_usage_api",
    **dict.fromkeys(
        (
            "InvalidConfig",
            "InvalidSetting",
            "PipelineFull",
            "StartupError",
            "StorageError",
            "Unauthenticated",
        ),
        "errors",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
