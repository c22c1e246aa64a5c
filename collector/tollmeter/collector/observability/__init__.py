"""The collector's Prometheus metrics: usage meters per tenant and its own health."""

from __future__ import annotations

from tollmeter.collector.observability._config import MetricsConfig
from tollmeter.collector.observability._health import HealthMetrics, HealthSources, TimedLedger
from tollmeter.collector.observability._metrics import COMMIT_BUCKETS_S, CollectorMetrics
from tollmeter.collector.observability._usage import OTHER_TENANT, TOKEN_TYPES, UsageMetrics

__all__ = [
    "COMMIT_BUCKETS_S",
    "OTHER_TENANT",
    "TOKEN_TYPES",
    "CollectorMetrics",
    "HealthMetrics",
    "HealthSources",
    "MetricsConfig",
    "TimedLedger",
    "UsageMetrics",
]
