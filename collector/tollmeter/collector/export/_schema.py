"""The Parquet schema of the billing export, and usage events turned into Arrow tables.

Events come either as ``UsageEvent`` objects or as the ledger's plain rows (laid out by
``storage._codec``, the cost as decimal text); both give the same table.

The schema only ever grows: a new column is appended and ``SCHEMA_VERSION`` goes
up, so readers of older files keep working. docs/parquet.md describes each column.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.pricing import COST_PRECISION, COST_SCALE
from tollmeter.collector.storage._codec import ROW_COLUMNS

__all__ = ["DICTIONARY_COLUMNS", "SCHEMA", "SCHEMA_VERSION", "events_to_table", "rows_to_table"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 5
"""1: the first columns; 2: hidden_input_tokens, time_to_first_token_s and
decode_s_per_output_token appended; 3: org_id and policy appended; 4: plan appended;
5: internal appended."""

_STRING = pa.string()
_COST = pa.decimal128(COST_PRECISION, COST_SCALE)
_QUANTUM = Decimal(1).scaleb(-COST_SCALE)
_MAX_COST = Decimal(10) ** (COST_PRECISION - COST_SCALE)
_COUNT = pa.int64()

# Microseconds, not nanoseconds: Spark and BigQuery read TIMESTAMP(MICROS) natively.
_TIME = pa.timestamp("us", tz="UTC")

SCHEMA = pa.schema(
    [
        pa.field("event_id", _STRING, nullable=False),
        pa.field("event_time", _TIME, nullable=False),
        pa.field("tenant_id", _STRING, nullable=False),
        pa.field("project_id", _STRING),
        pa.field("user_id", _STRING),
        pa.field("api_key_id", _STRING),
        pa.field("feature", _STRING),
        pa.field("environment", _STRING),
        pa.field("service_name", _STRING),
        pa.field("request_id", _STRING),
        pa.field("workflow_id", _STRING),
        pa.field("trace_id", _STRING),
        pa.field("span_id", _STRING),
        pa.field("provider", _STRING, nullable=False),
        pa.field("operation", _STRING, nullable=False),
        pa.field("request_model", _STRING),
        pa.field("response_model", _STRING),
        pa.field("response_id", _STRING),
        pa.field("input_tokens", _COUNT, nullable=False),
        pa.field("uncached_input_tokens", _COUNT, nullable=False),
        pa.field("cache_read_input_tokens", _COUNT, nullable=False),
        pa.field("cache_write_input_tokens", _COUNT, nullable=False),
        pa.field("output_tokens", _COUNT, nullable=False),
        pa.field("reasoning_output_tokens", _COUNT, nullable=False),
        pa.field("total_tokens", _COUNT, nullable=False),
        pa.field("usage_source", _STRING, nullable=False),
        pa.field("cost", _COST),
        pa.field("currency", _STRING),
        pa.field("price_source", _STRING),
        pa.field("duration_s", pa.float64()),
        pa.field("status", _STRING, nullable=False),
        pa.field("error_type", _STRING),
        pa.field("attempt", pa.int32()),
        pa.field("reservation_id", _STRING),
        pa.field("collector_id", _STRING),
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("sequence", _COUNT, nullable=False),
        pa.field("hidden_input_tokens", _COUNT),
        pa.field("time_to_first_token_s", pa.float64()),
        pa.field("decode_s_per_output_token", pa.float64()),
        pa.field("org_id", _STRING),
        pa.field("policy", _STRING),
        pa.field("plan", _STRING),
        pa.field("internal", pa.bool_(), nullable=False),
    ],
    metadata={"tollmeter.schema_version": str(SCHEMA_VERSION)},
)

DICTIONARY_COLUMNS: tuple[str, ...] = (
    "tenant_id",
    "org_id",
    "plan",
    "project_id",
    "user_id",
    "api_key_id",
    "feature",
    "environment",
    "service_name",
    "provider",
    "operation",
    "request_model",
    "response_model",
    "usage_source",
    "currency",
    "price_source",
    "status",
    "error_type",
    "collector_id",
)
"""Low-cardinality strings, dictionary-encoded in the file; identifiers are not."""

# Columns copied from the event attribute of the same name, in schema order.
_COPIED = tuple(
    (name, operator.attrgetter(name), SCHEMA.field(name).type)
    for name in SCHEMA.names
    if name not in {"event_time", "uncached_input_tokens", "schema_version", "collector_id", "cost"}
)
_GET_TIME = operator.attrgetter("event_time_ns")
_GET_UNCACHED = operator.attrgetter("uncached_input_tokens")
_GET_COLLECTOR = operator.attrgetter("collector_id")
_NS = pa.timestamp("ns", tz="UTC")

# A ledger row as one Arrow struct: pyarrow converts the row tuples in C, column by
# column, without a Python object per value beyond those sqlite3 already made.
_ROW_FIELDS = ROW_COLUMNS
_ROW_TYPE = pa.struct(
    [
        # internal: stored as 0 or 1, made a boolean below
        (name, _COUNT if name in ("event_time_ns", "internal") else SCHEMA.field(name).type)
        if name != "cost"
        else (name, _STRING)
        for name in _ROW_FIELDS
    ]
)
_COPIED_ROW = tuple(name for name, _, _ in _COPIED)


def events_to_table(events: Sequence[UsageEvent], *, collector_id: str | None) -> pa.Table:
    """Build the Arrow table of ``events``, in their order.

    ``collector_id`` fills the column for events that do not name their collector.
    """
    count = len(events)
    columns: dict[str, pa.Array] = {}
    if count:
        # One C-level pass per column over existing objects: no per-row dict or
        # tuple, which also keeps the garbage collector out of the way.
        for name, get, arrow_type in _COPIED:
            columns[name] = pa.array(list(map(get, events)), type=arrow_type)
        columns["cost"] = _costs(events)
        times = pa.array(list(map(_GET_TIME, events)), type=_NS)
        columns["event_time"] = times.cast(_TIME, safe=False)
        columns["uncached_input_tokens"] = pa.array(list(map(_GET_UNCACHED, events)), _COUNT)
        own = [value or collector_id for value in map(_GET_COLLECTOR, events)]
        columns["collector_id"] = pa.array(own, _STRING)
    else:
        columns = {name: pa.array([], type=SCHEMA.field(name).type) for name in SCHEMA.names}
    columns["schema_version"] = pa.array([SCHEMA_VERSION] * count, pa.int32())
    return pa.Table.from_arrays([columns[name] for name in SCHEMA.names], schema=SCHEMA)


def rows_to_table(rows: Sequence[tuple[Any, ...]], *, collector_id: str | None) -> pa.Table:
    """Build the Arrow table of ledger rows, equal to ``events_to_table`` of their events.

    A row holds the codec's ``ROW_COLUMNS``, text as ``str`` or UTF-8 ``bytes`` (checked
    here), the cost as decimal text.
    """
    if not rows:
        return events_to_table((), collector_id=collector_id)
    values = dict(zip(_ROW_FIELDS, pa.array(rows, type=_ROW_TYPE).flatten(), strict=True))
    columns = {name: values[name] for name in _COPIED_ROW}
    columns["event_time"] = values["event_time_ns"].cast(_NS).cast(_TIME, safe=False)
    columns["internal"] = values["internal"].cast(pa.bool_())
    columns["uncached_input_tokens"] = pc.subtract_checked(
        pc.subtract_checked(values["input_tokens"], values["cache_read_input_tokens"]),
        values["cache_write_input_tokens"],
    )
    columns["cost"] = _text_costs(values["cost"])
    own = values["collector_id"]
    # As in events_to_table: an empty id counts as absent.
    absent = pc.or_kleene(pc.is_null(own), pc.equal(own, ""))
    columns["collector_id"] = pc.if_else(absent, pa.scalar(collector_id, _STRING), own)
    columns["schema_version"] = pa.array([SCHEMA_VERSION] * len(rows), pa.int32())
    return pa.Table.from_arrays([columns[name] for name in SCHEMA.names], schema=SCHEMA)


def _text_costs(texts: pa.Array) -> pa.Array:
    try:
        # Arrow parses decimal text exactly and refuses digits the scale would drop.
        return texts.cast(_COST)
    except pa.ArrowInvalid:
        return _decimal_costs(
            [None if text is None else Decimal(text) for text in texts.to_pylist()]
        )


def _costs(events: Sequence[UsageEvent]) -> pa.Array:
    return _decimal_costs([event.cost for event in events])


def _decimal_costs(costs: list[Decimal | None]) -> pa.Array:
    try:
        return pa.array(costs, type=_COST)
    except (pa.ArrowInvalid, ArithmeticError):
        pass
    # A cost the column cannot hold as is (never produced by tollmeter's Pricer) must
    # not block the export forever: round it half-even, as the Pricer would have, and
    # leave out one too large for decimal(38, 12).
    logger.warning("costs do not fit decimal(%d, %d): rounding them", COST_PRECISION, COST_SCALE)
    rounded: list[Decimal | None] = []
    with localcontext(Context(prec=2 * COST_PRECISION, rounding=ROUND_HALF_EVEN)):
        for cost in costs:
            if cost is not None and cost.is_finite() and abs(cost) < _MAX_COST:
                rounded.append(cost.quantize(_QUANTUM))
            else:
                rounded.append(None)
    return pa.array(rounded, type=_COST)
