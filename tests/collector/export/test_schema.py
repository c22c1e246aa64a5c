from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.export import SCHEMA, SCHEMA_VERSION, events_to_table

# Changing this list is a schema change: only appending columns is allowed, with a
# new SCHEMA_VERSION and a line in docs/parquet.md.
PINNED = [
    ("event_id", "string", False),
    ("event_time", "timestamp[us, tz=UTC]", False),
    ("tenant_id", "string", False),
    ("project_id", "string", True),
    ("user_id", "string", True),
    ("api_key_id", "string", True),
    ("feature", "string", True),
    ("environment", "string", True),
    ("service_name", "string", True),
    ("request_id", "string", True),
    ("workflow_id", "string", True),
    ("trace_id", "string", True),
    ("span_id", "string", True),
    ("provider", "string", False),
    ("operation", "string", False),
    ("request_model", "string", True),
    ("response_model", "string", True),
    ("response_id", "string", True),
    ("input_tokens", "int64", False),
    ("uncached_input_tokens", "int64", False),
    ("cache_read_input_tokens", "int64", False),
    ("cache_write_input_tokens", "int64", False),
    ("output_tokens", "int64", False),
    ("reasoning_output_tokens", "int64", False),
    ("total_tokens", "int64", False),
    ("usage_source", "string", False),
    ("cost", "decimal128(38, 12)", True),
    ("currency", "string", True),
    ("price_source", "string", True),
    ("duration_s", "double", True),
    ("status", "string", False),
    ("error_type", "string", True),
    ("attempt", "int32", True),
    ("reservation_id", "string", True),
    ("collector_id", "string", True),
    ("schema_version", "int32", False),
    ("sequence", "int64", False),
    ("hidden_input_tokens", "int64", True),
    ("time_to_first_token_s", "double", True),
    ("decode_s_per_output_token", "double", True),
    ("org_id", "string", True),
    ("policy", "string", True),
    ("plan", "string", True),
    ("internal", "bool", False),
]


def test_schema_is_pinned() -> None:
    assert [(f.name, str(f.type), f.nullable) for f in SCHEMA] == PINNED
    assert SCHEMA_VERSION == 5
    assert SCHEMA.metadata == {b"tollmeter.schema_version": b"5"}


def test_every_event_field_but_the_nanosecond_time_is_a_column() -> None:
    fields = set(UsageEvent.__dataclass_fields__) - {"event_time_ns"}
    assert fields <= set(SCHEMA.names)


def test_events_become_rows_with_exact_values() -> None:
    event = UsageEvent(
        event_id="e1",
        event_time_ns=1_793_577_600_123_456_789,
        provider="openai",
        operation="chat",
        tenant_id="acme",
        input_tokens=1000,
        cache_read_input_tokens=200,
        cache_write_input_tokens=50,
        output_tokens=300,
        reasoning_output_tokens=100,
        total_tokens=1300,
        cost=Decimal("0.000000000001"),
        currency="USD",
        attempt=2,
        sequence=7,
    )
    (row,) = events_to_table([event], collector_id="c-1").to_pylist()
    assert row["event_time"] == dt.datetime(2026, 11, 2, 0, 0, 0, 123456, tzinfo=dt.timezone.utc)
    assert row["uncached_input_tokens"] == 750
    assert row["cost"] == Decimal("0.000000000001")
    assert (row["collector_id"], row["schema_version"], row["sequence"]) == ("c-1", 5, 7)
    assert row["attempt"] == 2
    assert (row["hidden_input_tokens"], row["time_to_first_token_s"]) == (None, None)


def test_event_collector_id_wins_and_empty_batches_keep_the_schema(make_events) -> None:
    events = [e.with_sequence(i + 1) for i, e in enumerate(make_events(3))]
    events[1] = UsageEvent(**{**_fields(events[1]), "collector_id": "other"})
    table = events_to_table(events, collector_id="mine")
    assert table.column("collector_id").to_pylist() == ["mine", "other", "mine"]
    empty = events_to_table([], collector_id=None)
    assert empty.num_rows == 0
    assert empty.schema.equals(SCHEMA)
    assert isinstance(table.column("cost").type, pa.Decimal128Type)


def _fields(event: UsageEvent) -> dict[str, object]:
    return {name: getattr(event, name) for name in UsageEvent.__dataclass_fields__}


def test_costs_the_column_cannot_hold_do_not_block_the_export(caplog) -> None:
    def event(sequence: int, cost: Decimal | None) -> UsageEvent:
        return UsageEvent(
            event_id=f"e{sequence}",
            event_time_ns=1,
            provider="p",
            operation="chat",
            tenant_id="t",
            cost=cost,
            sequence=sequence,
        )

    events = [
        event(1, Decimal("0.1234567890125")),
        event(2, None),
        event(3, Decimal("1E+30")),
        event(4, Decimal("NaN")),
        event(5, Decimal("2.5")),
    ]
    costs = events_to_table(events, collector_id=None).column("cost").to_pylist()
    assert costs == [Decimal("0.123456789012"), None, None, None, Decimal("2.5")]
    assert "rounding" in caplog.text
