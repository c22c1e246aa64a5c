"""``Ledger.read_event_rows``: the events of ``read_events`` as plain tuples."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import Ledger, StorageError

_FIELDS = tuple(f.name for f in dataclasses.fields(UsageEvent))


def _as_event(row: tuple[object, ...]) -> UsageEvent:
    # Text may come as UTF-8 bytes.
    values = {
        name: value.decode() if isinstance(value, bytes) else value
        for name, value in zip(_FIELDS, row, strict=True)
    }
    if values["cost"] is not None:
        assert isinstance(values["cost"], str)
        values["cost"] = Decimal(values["cost"])
    return UsageEvent(**values)


def test_rows_page_in_sequence_order_like_events(ledger: Ledger, make_event) -> None:
    events = [
        make_event(cost=Decimal("0.000000000123"), currency="USD"),
        make_event(cost=None, user_id="ünï 🚀", input_tokens=2**40, total_tokens=2**40),
        make_event(cost=Decimal("12345.678901234567"), duration_s=0.1 + 0.2, attempt=3),
    ]
    committed = ledger.append(events).committed

    rows = ledger.read_event_rows(0, 10)
    assert [len(row) for row in rows] == [len(_FIELDS)] * 3
    assert [_as_event(row) for row in rows] == committed
    assert _as_event(rows[0]).cost == Decimal("1.23E-10")
    assert ledger.read_event_rows(1, 1) == rows[1:2]
    assert ledger.read_event_rows(3, 10) == []


def test_rows_refuse_a_non_positive_limit_and_a_closed_ledger(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="limit"):
        ledger.read_event_rows(0, 0)
    ledger.close()
    with pytest.raises(StorageError, match="closed"):
        ledger.read_event_rows(0, 1)
