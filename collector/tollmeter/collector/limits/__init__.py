"""Limits: atomic reservations against usage quotas, reconciliation, expiry and hooks."""

from __future__ import annotations

from tollmeter.collector.errors import LimitStateError
from tollmeter.collector.limits._api import limits_routes, limits_to_mapping
from tollmeter.collector.limits._config import (
    HookConfig,
    HooksConfig,
    LimitConfig,
    LimitsConfig,
)
from tollmeter.collector.limits._engine import LimitEngine
from tollmeter.collector.limits._hooks import HookStats, sign, verify_signature
from tollmeter.collector.limits._model import CheckRequest, CheckResult, LimitStatus, Notice
from tollmeter.collector.limits._service import LimitsService

__all__ = [
    "CheckRequest",
    "CheckResult",
    "HookConfig",
    "HookStats",
    "HooksConfig",
    "LimitConfig",
    "LimitEngine",
    "LimitStateError",
    "LimitStatus",
    "LimitsConfig",
    "LimitsService",
    "Notice",
    "limits_routes",
    "limits_to_mapping",
    "sign",
    "verify_signature",
]
