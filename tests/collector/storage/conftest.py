"""Ledger fixtures: every backend (SQLite file, in memory, PostgreSQL) on a fresh database,
and a usage event factory."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import Ledger, open_ledger

EventFactory = Callable[..., UsageEvent]

# 2026-03-14T15:09:26Z: mid-month, mid-day, so neighbouring buckets are on both sides.
BASE_NS = 1_773_500_966 * 1_000_000_000


@pytest.fixture
def make_event() -> EventFactory:
    counter = itertools.count(1)

    def make(**overrides: Any) -> UsageEvent:
        number = next(counter)
        fields: dict[str, Any] = {
            "event_id": f"evt-{number}",
            "event_time_ns": BASE_NS + number * 1_000_000,
            "provider": "openai",
            "operation": "chat",
            "tenant_id": "acme",
            "input_tokens": 100,
            "cache_read_input_tokens": 20,
            "output_tokens": 50,
            "reasoning_output_tokens": 10,
            "total_tokens": 150,
            "request_model": "gpt-4o-mini",
            "response_model": "gpt-4o-mini-2024-07-18",
        }
        fields.update(overrides)
        return UsageEvent(**fields)

    return make


@pytest.fixture(params=["sqlite", "memory", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        # A database of its own on the session's server.
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path}/ledger.db" if request.param == "sqlite" else "memory://"


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with open_ledger(ledger_url) as opened:
        yield opened


@pytest.fixture(params=["sqlite", "postgresql"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A ledger that outlives the process that opened it: a SQLite file or a PostgreSQL
    database."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path}/ledger.db"


@pytest.fixture(params=["memory", "postgresql"])
def fresh_ledger_url(request: pytest.FixtureRequest) -> Callable[[], str]:
    """Makes the URL of a new, empty ledger at each call (for property tests)."""
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        return server.create_database  # type: ignore[no-any-return]
    return lambda: "memory://"
