"""Outcomes in the ledger: their rows, and cost and tokens per outcome.

Both backends store outcomes in the ``outcomes`` table (schema version 5), keyed by
(tenant, outcome id): a report whose key is already there is a duplicate and stores
nothing. Rows are ``OUTCOME_COLUMNS`` with ``sequence`` last; the value travels as
decimal text.

The summary relates outcomes to usage through the workflow id, within a tenant:

- per outcome name, the outcomes reported in the time range: their count and total
  value, the distinct workflows they were reported for, and every usage event of
  those workflows (whenever it happened: a workflow's calls may start before the
  range that holds its outcome), each workflow counted once per name;
- apart, the workflows with usage in the range and no outcome reported at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from tollmeter.collector._outcomes import Outcome

__all__ = [
    "OUTCOME_COLUMNS",
    "POSTGRES_SQL",
    "SQLITE_SQL",
    "OutcomeSql",
    "OutcomeSummary",
    "OutcomeTotals",
    "UsageTotals",
    "outcome_from_row",
    "outcome_values",
    "select_outcome_rows",
    "store_outcomes",
    "summarize_outcomes",
]

OUTCOME_COLUMNS: tuple[str, ...] = (
    "outcome_id",
    "tenant_id",
    "workflow_id",
    "name",
    "value",
    "time_ns",
)
"""The columns ``outcomes`` stores for an outcome, in ``Outcome`` field order."""

OutcomeRow = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class OutcomeSql:
    """What the summary queries spell differently per database."""

    param: str
    integer_sum: str
    decimal_sum: str
    """The exact sum of the decimal column ``{}``, as decimal text."""
    value_text: str
    """The ``value`` column as decimal text."""


SQLITE_SQL = OutcomeSql(
    param="?", integer_sum="SUM({})", decimal_sum="tm_decimal_sum({})", value_text="value"
)
POSTGRES_SQL = OutcomeSql(
    param="%s",
    integer_sum="CAST(SUM({}) AS BIGINT)",
    decimal_sum="CAST(SUM({}) AS TEXT)",
    value_text="CAST(value AS TEXT)",
)


def outcome_values(outcome: Outcome) -> tuple[Any, ...]:
    return (
        outcome.outcome_id,
        outcome.tenant_id,
        outcome.workflow_id,
        outcome.name,
        str(outcome.value),
        outcome.time_ns,
    )


def outcome_from_row(row: OutcomeRow) -> Outcome:
    outcome_id, tenant, workflow, name, value, time_ns, sequence = row
    return Outcome(
        outcome_id=str(outcome_id),
        tenant_id=str(tenant),
        workflow_id=str(workflow),
        name=str(name),
        value=Decimal(str(value)),
        time_ns=int(time_ns),
        sequence=int(sequence),
    )


@dataclass(slots=True)
class UsageTotals:
    """Usage of a set of workflows: how many, their calls, tokens and cost."""

    workflows: int = 0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal | None = None
    currencies: set[str] = field(default_factory=set)

    def add(self, row: tuple[Any, ...]) -> None:
        calls, input_tokens, output_tokens, total_tokens, cost, currency = row
        self.workflows += 1
        self.calls += int(calls)
        self.input_tokens += int(input_tokens or 0)
        self.output_tokens += int(output_tokens or 0)
        self.total_tokens += int(total_tokens or 0)
        if cost is not None:
            self.cost = Decimal(str(cost)) + (self.cost or 0)
        if currency is not None:
            self.currencies.add(str(currency))

    def to_json(self) -> dict[str, object]:
        return {
            "workflows": self.workflows,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cost": None if self.cost is None else str(self.cost),
            # Costs in several currencies are not summed into one figure by anyone reading it.
            "currency": next(iter(self.currencies)) if len(self.currencies) == 1 else None,
        }


@dataclass(slots=True)
class OutcomeTotals:
    """One outcome name: its reports, and the usage of the workflows they were made for."""

    name: str
    count: int = 0
    value: Decimal = Decimal(0)
    usage: UsageTotals = field(default_factory=UsageTotals)

    def to_json(self) -> dict[str, object]:
        usage = self.usage.to_json()
        cost = self.usage.cost
        return {
            "name": self.name,
            "count": self.count,
            "value": str(self.value),
            **usage,
            "cost_per_outcome": None if cost is None else str(cost / self.count),
            "tokens_per_outcome": str(Decimal(self.usage.total_tokens) / self.count),
        }


@dataclass(frozen=True, slots=True)
class OutcomeSummary:
    outcomes: list[OutcomeTotals]
    without_outcome: UsageTotals

    def to_json(self) -> dict[str, object]:
        return {
            "outcomes": [totals.to_json() for totals in self.outcomes],
            "without_outcome": self.without_outcome.to_json(),
        }


class _Connection(Protocol):
    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...


def store_outcomes(
    conn: _Connection, sql: OutcomeSql, outcomes: Sequence[Outcome]
) -> list[Outcome]:
    """Insert the outcomes whose key is new; the stored ones, with their sequences.

    The caller holds the transaction and whatever serialises writers (SQLite's write
    lock, PostgreSQL's append lock), so sequences grow in commit order.
    """
    p = sql.param
    insert = (
        f"INSERT INTO outcomes (sequence, {', '.join(OUTCOME_COLUMNS)}) "
        f"VALUES ({', '.join([p] * (len(OUTCOME_COLUMNS) + 1))}) "
        "ON CONFLICT (tenant_id, outcome_id) DO NOTHING"
    )
    row = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM outcomes").fetchone()
    sequence = int(row[0]) if row else 0
    stored: list[Outcome] = []
    for outcome in outcomes:
        if conn.execute(insert, (sequence + 1, *outcome_values(outcome))).rowcount == 1:
            sequence += 1
            stored.append(dataclasses.replace(outcome, sequence=sequence))
    return stored


def select_outcome_rows(
    conn: _Connection, sql: OutcomeSql, after_sequence: int, limit: int
) -> list[OutcomeRow]:
    """Up to ``limit`` rows with a sequence above ``after_sequence``, ascending."""
    if limit < 1:
        raise ValueError("limit must be positive")
    columns = ", ".join(sql.value_text if c == "value" else c for c in OUTCOME_COLUMNS)
    return list(
        conn.execute(
            f"SELECT {columns}, sequence FROM outcomes WHERE sequence > {sql.param} "
            f"ORDER BY sequence LIMIT {sql.param}",
            (after_sequence, limit),
        ).fetchall()
    )


def _usage_columns(sql: OutcomeSql) -> str:
    return ", ".join(
        (
            "COUNT(*)",
            *(sql.integer_sum.format(c) for c in ("input_tokens", "output_tokens", "total_tokens")),
            sql.decimal_sum.format("cost"),
            "MIN(currency)",
        )
    )


def summarize_outcomes(
    conn: _Connection,
    sql: OutcomeSql,
    *,
    tenant: str | None,
    start_ns: int,
    end_ns: int,
    name: str | None,
) -> OutcomeSummary:
    """Cost and tokens per outcome name in ``[start_ns, end_ns)`` (module docstring)."""
    p = sql.param
    where = [f"o.time_ns >= {p}", f"o.time_ns < {p}"]
    params: list[object] = [start_ns, end_ns]
    if tenant is not None:
        where.append(f"o.tenant_id = {p}")
        params.append(tenant)
    if name is not None:
        where.append(f"o.name = {p}")
        params.append(name)
    reported = " AND ".join(where)
    totals: dict[str, OutcomeTotals] = {}
    for row in conn.execute(
        f"SELECT o.name, COUNT(*), {sql.decimal_sum.format('o.value')} FROM outcomes AS o "
        f"WHERE {reported} GROUP BY o.name ORDER BY o.name",
        params,
    ).fetchall():
        totals[row[0]] = OutcomeTotals(name=row[0], count=int(row[1]), value=Decimal(str(row[2])))
    # One row per (name, workflow): a workflow is counted once per name, however many
    # outcomes of that name it reported.
    for row in conn.execute(
        f"SELECT w.name, {_usage_columns(sql)} FROM "
        f"(SELECT DISTINCT o.name, o.tenant_id, o.workflow_id FROM outcomes AS o "
        f"WHERE {reported}) AS w "
        "JOIN usage_events AS e ON e.tenant_id = w.tenant_id AND e.workflow_id = w.workflow_id "
        "GROUP BY w.name, w.tenant_id, w.workflow_id",
        params,
    ).fetchall():
        totals[row[0]].usage.add(row[1:])
    # The join saw only workflows with usage; count those without any as well.
    _count_workflows(conn, sql, reported, params, totals)
    usage_where = [f"e.event_time_ns >= {p}", f"e.event_time_ns < {p}", "e.workflow_id IS NOT NULL"]
    usage_params: list[object] = [start_ns, end_ns]
    if tenant is not None:
        usage_where.append(f"e.tenant_id = {p}")
        usage_params.append(tenant)
    without = UsageTotals()
    for row in conn.execute(
        f"SELECT {_usage_columns(sql)} FROM usage_events AS e "
        f"WHERE {' AND '.join(usage_where)} AND NOT EXISTS (SELECT 1 FROM outcomes AS o "
        "WHERE o.tenant_id = e.tenant_id AND o.workflow_id = e.workflow_id) "
        "GROUP BY e.tenant_id, e.workflow_id",
        usage_params,
    ).fetchall():
        without.add(row)
    return OutcomeSummary(outcomes=list(totals.values()), without_outcome=without)


def _count_workflows(
    conn: _Connection,
    sql: OutcomeSql,
    reported: str,
    params: Iterable[object],
    totals: dict[str, OutcomeTotals],
) -> None:
    """The workflows of each name, those without usage in the ledger too."""
    for name, workflows in conn.execute(
        "SELECT w.name, COUNT(*) FROM (SELECT DISTINCT o.name, o.tenant_id, o.workflow_id "
        f"FROM outcomes AS o WHERE {reported}) AS w GROUP BY w.name",
        list(params),
    ).fetchall():
        totals[name].usage.workflows = int(workflows)
