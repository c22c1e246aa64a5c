"""Avoided usage in the ledger: cache hits stored once, and their totals.

Both backends store avoided calls in ``avoided_usage`` (schema version 11), keyed by
(tenant, avoided id): a report whose key is there already stores nothing. The table is
apart from ``usage_events`` on purpose: nothing that bills, limits or exports usage reads
it. Costs travel as decimal text, summed exactly.

The summary groups calls in a time range by any of tenant, feature and model, and always
by currency, so that saved costs in different currencies are never added together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final, Protocol

from tollmeter.collector._avoided import AvoidedCall
from tollmeter.collector.storage._outcomes import OutcomeSql

__all__ = ["AVOIDED_COLUMNS", "AVOIDED_GROUPS", "store_avoided", "summarize_avoided"]

AVOIDED_COLUMNS: Final = (
    "avoided_id",
    "tenant_id",
    "feature",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cost",
    "currency",
    "time_ns",
)
AVOIDED_GROUPS: Final = {"tenant": "tenant_id", "feature": "feature", "model": "model"}
"""The ``group_by`` names the summary takes, and their columns."""


class _Connection(Protocol):
    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...


def store_avoided(
    conn: _Connection, sql: OutcomeSql, calls: Sequence[AvoidedCall]
) -> list[AvoidedCall]:
    """Insert the calls whose key is new; the stored ones, with their sequences.

    The caller holds the transaction and the writers' lock, so sequences grow in order.
    """
    p = sql.param
    insert = (
        f"INSERT INTO avoided_usage (sequence, {', '.join(AVOIDED_COLUMNS)}) "
        f"VALUES ({', '.join([p] * (len(AVOIDED_COLUMNS) + 1))}) "
        "ON CONFLICT (tenant_id, avoided_id) DO NOTHING"
    )
    row = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM avoided_usage").fetchone()
    sequence = int(row[0]) if row else 0
    stored: list[AvoidedCall] = []
    for call in calls:
        values = (
            call.avoided_id,
            call.tenant_id,
            call.feature,
            call.provider,
            call.model,
            call.input_tokens,
            call.output_tokens,
            None if call.cost is None else str(call.cost),
            call.currency,
            call.time_ns,
        )
        if conn.execute(insert, (sequence + 1, *values)).rowcount == 1:
            sequence += 1
            stored.append(dataclasses.replace(call, sequence=sequence))
    return stored


def summarize_avoided(
    conn: _Connection,
    sql: OutcomeSql,
    *,
    start_ns: int,
    end_ns: int,
    tenant: str | None,
    group_by: Sequence[str],
) -> list[dict[str, object]]:
    """Avoided calls, tokens and saved cost in ``[start_ns, end_ns)`` per group."""
    unknown = [name for name in group_by if name not in AVOIDED_GROUPS]
    if unknown:
        raise ValueError(f"cannot group avoided usage by {unknown[0]!r}")
    p = sql.param
    where = [f"time_ns >= {p}", f"time_ns < {p}"]
    params: list[object] = [start_ns, end_ns]
    if tenant is not None:
        where.append(f"tenant_id = {p}")
        params.append(tenant)
    keys = [AVOIDED_GROUPS[name] for name in group_by]
    grouping = ", ".join([*keys, "currency"])
    rows = conn.execute(
        f"SELECT {grouping}, COUNT(*), {sql.integer_sum.format('input_tokens')}, "
        f"{sql.integer_sum.format('output_tokens')}, {sql.decimal_sum.format('cost')}, "
        f"COUNT(cost) FROM avoided_usage WHERE {' AND '.join(where)} "
        f"GROUP BY {grouping} ORDER BY {grouping}",
        params,
    ).fetchall()
    groups: list[dict[str, object]] = []
    for row in rows:
        labels = dict(zip(group_by, row[: len(keys)], strict=True))
        currency, calls, input_tokens, output_tokens, cost, priced = row[len(keys) :]
        input_tokens, output_tokens = int(input_tokens or 0), int(output_tokens or 0)
        groups.append(
            {
                **labels,
                "calls": int(calls),
                "avoided_input_tokens": input_tokens,
                "avoided_output_tokens": output_tokens,
                "avoided_total_tokens": input_tokens + output_tokens,
                "saved_cost": None if cost is None else str(Decimal(str(cost))),
                "currency": currency,
                "unpriced_calls": int(calls) - int(priced),
            }
        )
    return groups
