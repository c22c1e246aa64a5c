"""``tollmeter tenants`` and ``tollmeter status``: tenants and their limits, from a
running collector.

``tenants`` lists the tenants with usage (``GET /api/v1/tenants``, every page up to
``--limit``), with their totals and the state of their limits. ``status TENANT`` shows
one tenant's limits (``GET /api/v1/tenants/{id}/status``): how much is used (open
reservations included), what remains and when the window resets.

Exit codes: 0 success; 1 the management API could not be queried; 2 invalid arguments.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from tollmeter.collector._cli_format import MONEY_RULE, Column, duration, money, table, tokens
from tollmeter.collector._cli_http import api_options, get_json
from tollmeter.collector._cli_usage import TABLE_WIDTH, moment

__all__ = ["status_command", "tenants_command"]

_PAGE = 500
_SORTS = ("tenant", "total_tokens", "cost", "requests")


@click.command("tenants", epilog=MONEY_RULE)
@api_options
@click.option(
    "--sort",
    type=click.Choice(_SORTS),
    default="tenant",
    show_default=True,
    help="By name, or largest first.",
)
@click.option("--contains", help="Only tenants whose id contains this text.")
@click.option("--since", help="Usage from: an ISO 8601 time, or a duration ago such as 7d.")
@click.option("--until", help="Usage until (exclusive): an ISO 8601 time, or a duration ago.")
@click.option(
    "--limit",
    "most",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Show at most this many tenants.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the tenants as JSON.")
def tenants_command(
    url: str,
    admin_key: str | None,
    timeout: float,
    sort: str,
    contains: str | None,
    since: str | None,
    until: str | None,
    most: int,
    as_json: bool,
) -> None:
    """List tenants with their usage and the state of their limits."""
    query = {"sort": sort}
    if contains:
        query["contains"] = contains
    try:
        if since:
            query["start"] = moment(since)
        if until:
            query["end"] = moment(until)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    tenants: list[dict[str, Any]] = []
    offset: int | None = 0
    total = 0
    while offset is not None and len(tenants) < most:
        page = get_json(
            "tenants",
            url,
            "/api/v1/tenants",
            {**query, "offset": str(offset), "limit": str(min(_PAGE, most - len(tenants)))},
            admin_key=admin_key,
            timeout=timeout,
        )
        tenants.extend(page.get("tenants", []))
        total = page.get("total", len(tenants))
        offset = page.get("next_offset")
    if as_json:
        click.echo(json.dumps({"tenants": tenants, "total": total}, indent=2, sort_keys=True))
        return
    click.echo(format_tenants(tenants))
    if total > len(tenants):
        click.echo(f"({len(tenants)} of {total} tenants; --limit shows more)")


def format_tenants(tenants: Sequence[Mapping[str, Any]]) -> str:
    if not tenants:
        return "(no tenants)"
    columns = [
        Column("tenant"),
        Column("requests", numeric=True),
        Column("total tokens", numeric=True),
        Column("cost", numeric=True),
        Column("limits"),
    ]
    rows = []
    for entry in tenants:
        usage = entry.get("usage") or {}
        rows.append(
            [
                str(entry.get("tenant") or ""),
                tokens(usage.get("requests")),
                tokens(usage.get("total_tokens")),
                money(usage.get("cost"), usage.get("currency")),
                _limit_summary(entry.get("limits")),
            ]
        )
    return table(columns, rows, width=TABLE_WIDTH)


def _limit_summary(state: Mapping[str, Any] | None) -> str:
    """``blocked by daily``, ``83% of daily`` (the fullest limit), or ``-`` without limits."""
    limits = (state or {}).get("limits") or []
    if not limits:
        return "-"
    blocked = [status["name"] for status in limits if status.get("blocked")]
    if blocked:
        return "BLOCKED by " + ", ".join(blocked)
    fullest = max(limits, key=lambda status: status.get("used_fraction", 0.0))
    return f"{_percent(fullest.get('used_fraction'))} of {fullest['name']}"


@click.command("status", epilog=MONEY_RULE)
@api_options
@click.argument("tenant")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
def status_command(
    url: str, admin_key: str | None, timeout: float, tenant: str, as_json: bool
) -> None:
    """Show one TENANT's limits: used, remaining and when each resets."""
    path = f"/api/v1/tenants/{urllib.parse.quote(tenant, safe='')}/status"
    document = get_json("status", url, path, {}, admin_key=admin_key, timeout=timeout)
    if as_json:
        click.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    click.echo(format_status(document, now=time.time()))


def format_status(document: Mapping[str, Any], *, now: float) -> str:
    tenant = document.get("tenant", "")
    reservations = document.get("active_reservations", 0)
    state = "BLOCKED" if document.get("blocked") else "not blocked"
    head = f"tenant {tenant}: {state}, {reservations} open reservations (counted as used)"
    limits = document.get("limits") or []
    if not limits:
        return head + "\nno limit applies to this tenant"
    columns = [
        Column("limit"),
        Column("key"),
        Column("measure"),
        Column("used", numeric=True),
        Column("remaining", numeric=True),
        Column("of", numeric=True),
        Column("action"),
        Column("resets"),
    ]
    rows = []
    for status in limits:
        measure = str(status.get("measure", ""))
        rows.append(
            [
                str(status.get("name", "")),
                ",".join(f"{k}={v}" for k, v in (status.get("key") or {}).items()) or "-",
                measure,
                _percent(status.get("used_fraction")),
                _amount(status.get("remaining"), measure, status.get("currency")),
                _amount(status.get("limit"), measure, status.get("currency")),
                str(status.get("action", "")),
                _resets(status, now),
            ]
        )
    return head + "\n" + table(columns, rows, width=TABLE_WIDTH)


def _percent(fraction: object) -> str:
    return f"{fraction * 100:.0f}%" if isinstance(fraction, (int, float)) else ""


def _amount(value: object, measure: str, currency: object) -> str:
    if not isinstance(value, (int, float)):
        return ""
    if measure == "cost":
        return money(value, currency)
    return tokens(round(value))


def _resets(status: Mapping[str, Any], now: float) -> str:
    until = status.get("blocked_until") or status.get("reset_at")
    if not isinstance(until, str):
        return ""
    seconds = datetime.fromisoformat(until.replace("Z", "+00:00")).timestamp() - now
    prefix = "unblocks" if status.get("blocked_until") else "resets"
    return f"{prefix} in {duration(seconds)}" if seconds > 0 else "now"
