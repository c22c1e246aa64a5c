"""Helpers for limit tests: a controllable clock and config builders."""

from __future__ import annotations

from typing import Any

import pytest

from tollmeter.collector.limits import LimitsConfig


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _limits(*rules: dict[str, Any], **options: Any) -> LimitsConfig:
    return LimitsConfig.from_mapping({"rules": list(rules), **options})


@pytest.fixture
def make_limits() -> Any:
    """``make_limits(rule, ..., **options)`` -> a parsed ``LimitsConfig``."""
    return _limits
