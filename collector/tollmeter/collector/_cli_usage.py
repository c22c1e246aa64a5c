"""``tollmeter usage``: token usage from a running collector, as a table or JSON.

The table fits 100 columns: the grouped dimensions, requests, input, output,
cached input, total and cost (``--wide``: every token bucket, nothing shortened).

Exit codes: 0 success; 1 the management API could not be queried; 2 invalid arguments.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone

import click

from tollmeter.collector._cli_format import MONEY_RULE, Column, money, table, tokens
from tollmeter.collector._cli_http import api_options, get_json
from tollmeter.collector._config_values import parse_duration

__all__ = ["TABLE_WIDTH", "format_table", "usage_command"]

TABLE_WIDTH = 100

_DIMENSIONS = ("tenant", "project", "model", "feature", "api_key", "usage_source", "plan")
_WINDOWS = ("minute", "hour", "day", "week", "month")
# (JSON field, header) of the token columns, narrow then wide.
_NARROW = (
    ("requests", "requests"),
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_input_tokens", "cached"),
    ("total_tokens", "total"),
)
_WIDE = (
    ("requests", "requests"),
    ("input_tokens", "input"),
    ("uncached_input_tokens", "uncached"),
    ("cache_read_input_tokens", "cache read"),
    ("cache_write_input_tokens", "cache write"),
    ("output_tokens", "output"),
    ("reasoning_output_tokens", "reasoning"),
    ("total_tokens", "total"),
)
_WINDOW_FORMATS = {
    "minute": "%Y-%m-%d %H:%M",
    "hour": "%Y-%m-%d %H:%M",
    "day": "%Y-%m-%d",
    "week": "%Y-%m-%d",
    "month": "%Y-%m",
}


@click.command("usage", epilog=MONEY_RULE + " Times are UTC; weeks start on Monday.")
@api_options
@click.option("--tenant", help="Only this tenant.")
@click.option("--project", help="Only this project.")
@click.option("--model", help="Only this model.")
@click.option("--feature", help="Only this feature.")
@click.option(
    "--plan", help="Only usage metered under this plan (with --since and --until, 31 days at most)."
)
@click.option(
    "--group-by",
    default="tenant",
    show_default=True,
    help="Comma-separated dimensions: tenant, project, model, feature, api_key, usage_source, "
    "plan (with --since and --until, 31 days at most).",
)
@click.option("--window", type=click.Choice(_WINDOWS), help="Also split by calendar window.")
@click.option("--since", help="Start: an ISO 8601 time, or a duration ago such as 24h or 7d.")
@click.option("--until", help="End (exclusive): an ISO 8601 time, or a duration ago.")
@click.option("--wide", is_flag=True, help="Every token bucket; long names not shortened.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
def usage_command(
    url: str,
    admin_key: str | None,
    timeout: float,
    since: str | None,
    until: str | None,
    wide: bool,
    as_json: bool,
    **filters: str | None,
) -> None:
    """Show token usage from a running collector as a table."""
    query = {name: value for name, value in filters.items() if value}
    try:
        if since:
            query["start"] = moment(since)
        if until:
            query["end"] = moment(until)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    document = get_json("usage", url, "/api/v1/usage", query, admin_key=admin_key, timeout=timeout)
    if as_json:
        click.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    click.echo(format_table(document.get("rows", []), window=document.get("window"), wide=wide))


def moment(text: str) -> str:
    """An ISO 8601 time as given, or ``now - duration`` for ``24h``, ``7d``..."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        try:
            datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"expected an ISO 8601 time or a duration, got {text!r}") from None
        return text
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).isoformat()


def format_table(
    rows: Sequence[Mapping[str, object]], *, window: object = None, wide: bool = False
) -> str:
    """Usage rows (the API's JSON) as a table; dimensions null in every row left out."""
    if not rows:
        return "(no usage)"
    dimensions = [name for name in _DIMENSIONS if any(row.get(name) is not None for row in rows)]
    columns = [Column(window)] if isinstance(window, str) else []
    columns += [Column(name) for name in dimensions]
    counts = _WIDE if wide else _NARROW
    columns += [Column(header, numeric=True) for _, header in counts]
    columns.append(Column("cost", numeric=True))
    cells = []
    for row in rows:
        line = [_window_cell(row.get("window_start"), window)] if isinstance(window, str) else []
        line += [str(row.get(name) or "") for name in dimensions]
        line += [tokens(row.get(field)) for field, _ in counts]
        line.append(money(row.get("cost"), row.get("currency")))
        cells.append(line)
    return table(columns, cells, width=None if wide else TABLE_WIDTH)


def _window_cell(start: object, window: str) -> str:
    if not isinstance(start, str):
        return ""
    moment = datetime.fromisoformat(start).astimezone(timezone.utc)
    return moment.strftime(_WINDOW_FORMATS.get(window, "%Y-%m-%d %H:%M"))
