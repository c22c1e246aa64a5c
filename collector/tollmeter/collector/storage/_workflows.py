"""Usage per workflow: calls, tokens, hidden and loop tokens and cost of each workflow run.

A workflow's *loop tokens* are the total tokens of its retries (``attempt`` > 0) and of
every model call after its first one: what the application's own loop (an agent, a
budgeted retry, a tool round trip) spent beyond a single call. *Hidden input tokens* sum
what the instrumentation counted in system/developer messages and tool definitions
(``None`` when no call of the workflow reported it).

Rollups carry no workflow id (one would make them as large as the events), so this is a
query over the raw events of the range: the events are read through the ``event_time_ns``
index, numbered per workflow in time order (a window function) and summed, one row per
(tenant, workflow). Its cost grows with the number of events in the range, not with the
ledger, which is why the range is required and at most ``MAX_RANGE`` long, and the rows
at most ``query.limit``. A workflow that started before ``start`` has its first call in
the range counted as its first.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from tollmeter.collector.errors import InvalidQuery
from tollmeter.collector.storage._query import MAX_RAW_RANGE, UsageQuery
from tollmeter.collector.storage._rollups import _EVENT_COLUMNS, SQLITE, Connection, Dialect

__all__ = ["MAX_RANGE", "WorkflowRow", "check_workflow_query", "select_workflows"]

MAX_RANGE: Final = MAX_RAW_RANGE
"""The longest range one workflow query reads."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowRow:
    """Totals of one workflow run of a tenant."""

    tenant: str
    workflow: str
    calls: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    hidden_input_tokens: int | None
    loop_tokens: int
    retries: int
    cost: Decimal | None
    currency: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "tenant": self.tenant,
            "workflow": self.workflow,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "hidden_input_tokens": self.hidden_input_tokens,
            "loop_tokens": self.loop_tokens,
            "retries": self.retries,
            "cost": None if self.cost is None else str(self.cost),
            "currency": self.currency,
        }


def check_workflow_query(query: UsageQuery) -> None:
    """Refuse a workflow query this module cannot answer within its bounds."""
    if query.group_by or query.window is not None:
        raise InvalidQuery("a workflow query takes no other group_by dimension and no window")
    if query.start is None or query.end is None:
        raise InvalidQuery("a workflow query needs start and end")
    if query.end - query.start > MAX_RANGE:
        raise InvalidQuery(f"a workflow query covers at most {MAX_RANGE.days} days")


def select_workflows(
    conn: Connection, query: UsageQuery, *, dialect: Dialect = SQLITE
) -> list[WorkflowRow]:
    """Run the workflow query on ``conn``, a DB-API connection to a ledger in ``dialect``."""
    check_workflow_query(query)
    mark = dialect.param
    where = ["workflow_id IS NOT NULL", f"event_time_ns >= {mark}", f"event_time_ns < {mark}"]
    params: list[object] = [query.start_ns(), query.end_ns()]
    for name, value in query.filters().items():
        where.append(f"{_EVENT_COLUMNS[name]} = {mark}")
        params.append(value)
    if query.internal is not None:
        where.append(f"internal = {mark}")
        params.append(int(query.internal))
    total = dialect.integer_sum
    looped = "(n > 1 OR COALESCE(attempt, 0) > 0)"
    sql = (
        "SELECT tenant_id, workflow_id, COUNT(*), "
        f"{total.format('input_tokens')}, {total.format('output_tokens')}, "
        f"{total.format('total_tokens')}, {total.format('hidden_input_tokens')}, "
        f"{total.format(f'CASE WHEN {looped} THEN total_tokens ELSE 0 END')}, "
        f"{total.format('CASE WHEN COALESCE(attempt, 0) > 0 THEN 1 ELSE 0 END')}, "
        f"{dialect.cost_sum}, MAX(currency) "
        "FROM (SELECT tenant_id, workflow_id, input_tokens, output_tokens, total_tokens, "
        "hidden_input_tokens, attempt, cost, currency, ROW_NUMBER() OVER ("
        "PARTITION BY tenant_id, workflow_id ORDER BY event_time_ns, sequence) AS n "
        f"FROM usage_events WHERE {' AND '.join(where)}) AS calls "
        f"GROUP BY tenant_id, workflow_id ORDER BY tenant_id, workflow_id LIMIT {mark}"
    )
    params.append(query.limit)
    return [_row(row) for row in conn.execute(sql, params).fetchall()]


def _row(row: tuple[Any, ...]) -> WorkflowRow:
    tenant, workflow, calls, inputs, outputs, totals, hidden, loop, retries, cost, currency = row
    return WorkflowRow(
        tenant=tenant,
        workflow=workflow,
        calls=int(calls),
        input_tokens=int(inputs),
        output_tokens=int(outputs),
        total_tokens=int(totals),
        hidden_input_tokens=None if hidden is None else int(hidden),
        loop_tokens=int(loop),
        retries=int(retries),
        cost=None if cost is None else Decimal(cost),
        currency=currency,
    )
