"""The body of each console page, from data already read (see ``_data``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from tollmeter.collector._records import UsageEvent
from tollmeter.collector._tenants_api import TenantPage
from tollmeter.collector.console._data import (
    PERIODS,
    RECENT_CALLS_SCAN,
    SERIES_BUCKETS,
    Period,
    Series,
    Usage,
    top,
)
from tollmeter.collector.console._html import (
    Markup,
    json_block,
    link,
    name,
    number,
    table,
    text,
)
from tollmeter.collector.limits._model import Notice, iso_time
from tollmeter.collector.storage import UsageRow

__all__ = ["login_body", "overview_body", "tenant_body", "tenants_body"]

_TOP = 10


def _tabs(path: str, current: Period, **query: str) -> Markup:
    labels = {"hour": "Last hour", "day": "Last day", "month": "Last 30 days"}
    items = "".join(
        f"<li>{link(path, text(labels[p]), **query, period=p)}</li>"
        if p != current.name
        else f'<li aria-current="true">{text(labels[p])}</li>'
        for p in PERIODS
    )
    return f'<ul class="tabs">{items}</ul>'


def _range(span: Period) -> Markup:
    return (
        f'<p class="range" data-start="{text(span.start.isoformat())}" '
        f'data-end="{text(span.end.isoformat())}">{text(span.label)}: '
        f"{text(_clock(span.start))} to {text(_clock(span.end))} UTC</p>"
    )


def _clock(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


def _totals(row: UsageRow) -> Markup:
    fields: list[tuple[str, str, Markup]] = [
        ("total_tokens", "Tokens", number(row.total_tokens)),
        ("requests", "Calls", number(row.requests)),
        ("cost", "Cost", number(row.cost, row.currency)),
    ]
    fields += [(field, label, number(getattr(row, field))) for field, label in SERIES_BUCKETS]
    cells = "".join(
        f'<div><dt>{text(label)}</dt><dd data-field="{field}">{value}</dd></div>'
        for field, label, value in fields
    )
    return f'<dl class="totals">{cells}</dl>'


def _chart(element_id: str, series: Series, title: str) -> Markup:
    return (
        f'<figure class="chart" data-chart="{text(element_id)}">'
        f"<figcaption>{text(title)}</figcaption></figure>"
        + json_block(element_id, series.to_json())
    )


def _tenant_link(tenant: str | None) -> Markup:
    return link("/console/tenant", name(tenant), id=tenant or "")


def _cost_key(row: UsageRow) -> Decimal:
    return row.cost or Decimal(0)


def _rows_table(rows: Sequence[UsageRow], dimension: str, *, linked: bool = False) -> Markup:
    return table(
        [dimension.capitalize(), "Tokens", "Calls", "Cost"],
        (
            [
                _tenant_link(row.tenant) if linked else name(getattr(row, dimension)),
                number(row.total_tokens),
                number(row.requests),
                number(row.cost, row.currency),
            ]
            for row in rows
        ),
    )


def overview_body(span: Period, usage: Usage, series: Series) -> Markup:
    tenants, models = usage.by["tenant"], usage.by["model"]
    return (
        f"<h1>Overview</h1>{_tabs('/', span)}{_range(span)}{_totals(usage.total)}"
        + _chart("usage-chart", series, "Tokens by type, all tenants")
        + '<div class="grid">'
        f"<section><h2>Top tenants by tokens</h2>"
        f"{_rows_table(top(tenants, lambda r: r.total_tokens, _TOP), 'tenant', linked=True)}"
        "</section>"
        f"<section><h2>Top models by tokens</h2>"
        f"{_rows_table(top(models, lambda r: r.total_tokens, _TOP), 'model')}</section>"
        f"<section><h2>Cost per tenant</h2>"
        f"{_rows_table(top(tenants, _cost_key, _TOP), 'tenant', linked=True)}</section>"
        f"<section><h2>Cost per model</h2>"
        f"{_rows_table(top(models, _cost_key, _TOP), 'model')}</section>"
        f"<section><h2>Cost per feature</h2>"
        f"{_rows_table(top(usage.by['feature'], _cost_key, _TOP), 'feature')}</section>"
        "</div>"
    )


def tenants_body(page: TenantPage, *, sort: str, contains: str, limit: int) -> Markup:
    rows = []
    for row, state in zip(page.rows, page.limits, strict=True):
        blocked = state is not None and state.get("blocked")
        rows.append(
            [
                _tenant_link(row.tenant),
                number(row.total_tokens),
                number(row.requests),
                number(row.cost, row.currency),
                text("blocked" if blocked else "ok" if state and state["limits"] else "no limits"),
            ]
        )
    sorts = {"tenant": "name", "total_tokens": "tokens", "cost": "cost", "requests": "calls"}
    options = "".join(
        f'<option value="{key}"{" selected" if key == sort else ""}>{label}</option>'
        for key, label in sorts.items()
    )
    search = (
        '<form method="get" action="/console/tenants" class="filter">'
        f'<label>Tenant contains <input name="contains" value="{text(contains)}"></label>'
        f'<label>Sort by <select name="sort">{options}</select></label>'
        '<button type="submit">Show</button></form>'
    )
    pager = ""
    if page.offset > 0:
        previous = str(max(0, page.offset - limit))
        pager += link("/console/tenants", "Previous", sort=sort, contains=contains, offset=previous)
    next_offset = page.to_json()["next_offset"]
    if next_offset is not None:
        pager += " " + link(
            "/console/tenants", "Next", sort=sort, contains=contains, offset=str(next_offset)
        )
    shown = f"{page.offset + 1}\u2013{page.offset + len(page.rows)}" if page.rows else "0"
    return (
        f"<h1>Tenants</h1>{search}"
        f'<p class="range">All time. Tenants {text(shown)} of '
        f'<span data-field="tenant_count">{text(page.total)}</span>.</p>'
        + table(["Tenant", "Tokens", "Calls", "Cost", "Limits"], rows)
        + f'<p class="pager">{pager}</p>'
    )


def _gauge(limit: Mapping[str, Any]) -> list[Markup]:
    total = float(limit["limit"])
    remaining = max(0.0, float(limit["remaining"]))
    # The remainder stops at zero; the fraction keeps counting past the limit.
    used = max(0.0, float(limit.get("used_fraction", 0.0)) * total)
    state = "blocked" if limit.get("blocked") else "ok"
    key = ", ".join(f"{k}={v}" for k, v in sorted(limit.get("key", {}).items()))
    meter = (
        f'<meter min="0" max="{total:g}" value="{min(used, total):g}" '
        f'high="{total * 0.8:g}" optimum="0">{text(round(used))}</meter>'
    )
    return [
        f"{name(limit['name'])}<br><small>{text(key)}</small>",
        text(f"{limit['measure']}, {limit['action']}"),
        meter,
        number(round(used, 2)),
        number(round(float(limit.get("reserved", 0.0)), 2)),
        number(round(remaining, 2)),
        number(total),
        text(limit.get("reset_at")),
        text(state if state == "ok" else f"blocked until {limit.get('blocked_until')}"),
    ]


def _seconds(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns // 10**9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _calls(calls: Sequence[UsageEvent], scanned: int) -> Markup:
    rows = [
        [
            text(_seconds(event.event_time_ns)),
            text(event.event_id),
            text(event.response_id),
            name(event.model),
            number(event.input_tokens),
            number(event.output_tokens),
            number(event.total_tokens),
            number(event.cost, event.currency),
            text(event.usage_source),
            text(event.status),
        ]
        for event in calls
    ]
    note = (
        f'<p class="note">The newest calls among the last {RECENT_CALLS_SCAN:,} events of the '
        f"ledger ({scanned:,} looked at). Prompts and replies are never stored.</p>"
    )
    headers = ["Time", "Event id", "Response id", "Model", "Input", "Output", "Total", "Cost"]
    return note + table([*headers, "Source", "Status"], rows, numeric_from=4)


def tenant_body(
    tenant: str,
    span: Period,
    usage: Usage,
    series: Series,
    status: Mapping[str, Any] | None,
    calls: tuple[list[UsageEvent], int],
    checks: Mapping[str, int] | None,
    denials: Sequence[Notice] = (),
) -> Markup:
    limits = [] if status is None else list(status["limits"])
    gauges = table(
        ["Limit", "Measure", "Gauge", "Used", "Reserved", "Remaining", "Limit", "Resets", "State"],
        (_gauge(limit) for limit in limits),
        numeric_from=3,
    )
    blocked = [limit for limit in limits if limit.get("blocked")]
    decisions = (
        "<p>Checks are denied now by "
        + ", ".join(
            f"{name(limit['name'])} until {text(limit['blocked_until'])}" for limit in blocked
        )
        + ".</p>"
        if blocked
        else "<p>No limit denies this tenant's checks now.</p>"
    )
    if denials:
        decisions += "<p>Recent checks denied (newest first):</p>" + table(
            ["Time", "Limit", "Request id", "Key"],
            numeric_from=4,
            rows=(
                [
                    text(iso_time(notice.time)),
                    name(notice.limit),
                    name(notice.request_id),
                    text(", ".join(f"{k}={v}" for k, v in sorted(notice.key.items()))),
                ]
                for notice in denials
            ),
        )
    if checks is not None:
        decisions += (
            f"<p>Collector-wide since start: {number(checks.get('checks_denied', 0))} checks "
            f"denied, {number(checks.get('checks_allowed', 0))} allowed; "
            f"{number(checks.get('reservations_expired', 0))} reservations expired.</p>"
        )
    reservations = 0 if status is None else status.get("active_reservations", 0)
    return (
        f"<h1>Tenant {name(tenant)}</h1>{_tabs('/console/tenant', span, id=tenant)}"
        f"{_range(span)}{_totals(usage.total)}"
        + _chart("usage-chart", series, "Tokens by type")
        + f"<section><h2>Limits</h2>{gauges}"
        f"<p>Open reservations: {number(reservations)}</p></section>"
        f"<section><h2>Policy decisions</h2>{decisions}</section>"
        f"<section><h2>Cost per model</h2>"
        f"{_rows_table(top(usage.by['model'], _cost_key, _TOP), 'model')}</section>"
        f"<section><h2>Recent calls</h2>{_calls(*calls)}</section>"
    )


def login_body(*, error: str | None, next_path: str, unusable: bool) -> Markup:
    if unusable:
        return (
            '<h1>tollmeter console</h1><p class="warning">Ingest keys are configured '
            "without an admin key, so nobody may read the management API or this console. "
            "Configure <code>management.admin_keys</code>.</p>"
        )
    message = f'<p class="error" role="alert">{text(error)}</p>' if error else ""
    return (
        '<h1>tollmeter console</h1><form method="post" action="/console/login" class="login">'
        f"{message}<label>Admin key "
        '<input type="password" name="key" autocomplete="current-password" required autofocus>'
        f'</label><input type="hidden" name="next" value="{text(next_path)}">'
        '<button type="submit">Log in</button></form>'
    )
