"""Fixtures for export tests: a real SQLite ledger filled with varied usage events."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import Ledger, open_ledger

DAY0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
TENANTS = ("acme", "globex", "initech")


def _make_events(count: int, *, start: int = 0, days: int = 3) -> list[UsageEvent]:
    """``count`` events spread over ``days`` UTC days, slightly out of time order."""
    events = []
    for i in range(start, start + count):
        # Every fifth event lands a day later than its neighbours: batches span partitions.
        moment = DAY0 + dt.timedelta(days=(i % days), minutes=i % 1440, seconds=i % 7)
        events.append(
            UsageEvent(
                event_id=f"ev-{i:08d}",
                event_time_ns=int(moment.timestamp()) * 1_000_000_000 + i % 1000,
                provider="openai" if i % 2 else "anthropic",
                operation="chat",
                tenant_id=TENANTS[i % len(TENANTS)],
                project_id=f"proj-{i % 4}" if i % 5 else None,
                feature="search" if i % 3 else None,
                request_model="gpt-4o" if i % 2 else "claude-sonnet-4-5",
                input_tokens=100 + i % 50,
                cache_read_input_tokens=i % 20,
                cache_write_input_tokens=i % 3,
                output_tokens=50 + i % 30,
                reasoning_output_tokens=i % 10,
                total_tokens=150 + i % 50 + i % 30,
                cost=Decimal(i % 97) * Decimal("0.000000123457") if i % 11 else None,
                currency="USD" if i % 11 else None,
                price_source="test prices" if i % 11 else "unpriced: unknown model x",
                duration_s=0.25 + i / 1000,
                attempt=1 + i % 2,
                trace_id=f"{i:032x}",
                span_id=f"{i:016x}",
            )
        )
    return events


EventFactory = Callable[..., list[UsageEvent]]


@pytest.fixture
def make_events() -> EventFactory:
    """``make_events(count, start=0, days=3)``: deterministic events with distinct ids."""
    return _make_events


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        yield opened


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    return tmp_path / "export"
