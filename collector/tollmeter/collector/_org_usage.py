"""Usage per organisation, from usage per tenant and the configured mapping.

The rollups are kept per tenant, not per organisation, so an ``org`` filter or grouping
of ``GET /api/v1/usage`` is answered at query time: the ledger is asked for the same
query grouped by tenant as well, each row is given its tenant's organisation from the
``organisations`` configuration, and rows are summed again over what was asked for. A
tenant the configuration does not map counts under organisation ``null`` here, even when
its events carry an ``org_id`` claimed by a span (see docs/limits.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from tollmeter.collector.storage import QUERY_DIMENSIONS, UsageRow

__all__ = ["ORG", "OrgRows", "by_org"]

ORG = "org"

OrgRows = list[tuple[str | None, UsageRow]]
"""(organisation when grouped by it, else ``None``; totals) per group."""

_Key = tuple[datetime | None, str | None, tuple[str | None, ...], str | None]


def by_org(
    rows: Sequence[UsageRow],
    *,
    group_by: Sequence[str],
    org: str | None,
    org_of: Mapping[str, str],
) -> OrgRows:
    """``rows`` (grouped by tenant and ``group_by``) kept for ``org`` when given, and summed
    over ``group_by`` plus the organisation when ``group_by`` names it."""
    grouped = ORG in group_by
    kept = tuple(name for name in QUERY_DIMENSIONS if name in group_by)
    sums: dict[_Key, UsageRow] = {}
    for row in rows:
        owner = org_of.get(row.tenant or "")
        if org is not None and owner != org:
            continue
        values = tuple(getattr(row, name) for name in kept)
        key = (row.window_start, owner if grouped else None, values, row.currency)
        previous = sums.get(key)
        sums[key] = row if previous is None else _add(previous, row)
    return [
        (key[1], _only(total, kept))
        for key, total in sorted(sums.items(), key=lambda item: _order(item[0]))
    ]


def _add(a: UsageRow, b: UsageRow) -> UsageRow:
    cost: Decimal | None = a.cost if b.cost is None else (b.cost + (a.cost or Decimal(0)))
    return UsageRow(
        window_start=a.window_start,
        tenant=a.tenant,
        project=a.project,
        model=a.model,
        feature=a.feature,
        api_key=a.api_key,
        usage_source=a.usage_source,
        plan=a.plan,
        input_tokens=a.input_tokens + b.input_tokens,
        cache_read_input_tokens=a.cache_read_input_tokens + b.cache_read_input_tokens,
        cache_write_input_tokens=a.cache_write_input_tokens + b.cache_write_input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        reasoning_output_tokens=a.reasoning_output_tokens + b.reasoning_output_tokens,
        total_tokens=a.total_tokens + b.total_tokens,
        requests=a.requests + b.requests,
        cost=cost,
        currency=a.currency,
    )


def _only(row: UsageRow, kept: tuple[str, ...]) -> UsageRow:
    """``row`` with the dimensions not asked for blanked (the tenant added for the
    mapping, in particular)."""
    values = {name: getattr(row, name) if name in kept else None for name in QUERY_DIMENSIONS}
    return UsageRow(
        window_start=row.window_start,
        input_tokens=row.input_tokens,
        cache_read_input_tokens=row.cache_read_input_tokens,
        cache_write_input_tokens=row.cache_write_input_tokens,
        output_tokens=row.output_tokens,
        reasoning_output_tokens=row.reasoning_output_tokens,
        total_tokens=row.total_tokens,
        requests=row.requests,
        cost=row.cost,
        currency=row.currency,
        **values,
    )


def _order(key: _Key) -> tuple[object, ...]:
    start, owner, values, currency = key
    return (
        start.timestamp() if start is not None else 0.0,
        owner or "",
        tuple(v or "" for v in values),
        currency or "",
    )
