"""The attribute registry shared by tollmeter's instrumentation and collector.

Attribute and metric names are constants in ``tollmeter.semconv.attributes`` and
``tollmeter.semconv.metrics`` (generated from ``registry.yaml``). This package turns the
attributes of any known instrumentation dialect into canonical values: ``Usage`` via
``usage_from_attributes``, plus ``provider_of``, ``operation_of`` and ``model_of``.
"""

from __future__ import annotations

from tollmeter.semconv._identity import (
    METERED_OPERATIONS,
    is_metered_operation,
    model_of,
    operation_of,
    provider_of,
)
from tollmeter.semconv._normalize import usage_from_attributes
from tollmeter.semconv._usage import MAX_TOKEN_COUNT, Usage, token_count
from tollmeter.semconv.errors import ConfigurationError, InvalidUsage, TollmeterError
from tollmeter.semconv.version import __version__

__all__ = [
    "MAX_TOKEN_COUNT",
    "METERED_OPERATIONS",
    "ConfigurationError",
    "InvalidUsage",
    "TollmeterError",
    "Usage",
    "__version__",
    "is_metered_operation",
    "model_of",
    "operation_of",
    "provider_of",
    "token_count",
    "usage_from_attributes",
]
