"""HTML pieces of the console. Every value from outside goes through :func:`text`.

Tenant ids, models and features are whatever applications reported, so they are
escaped (quotes too, for attributes) and wrapped in ``<bdi>`` so that right-to-left
text cannot reorder the page around it. Data for the charts travels as JSON in a
``<script type="application/json">`` block, which browsers never execute, with ``<``,
``>`` and ``&`` escaped so the block cannot be closed early.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from urllib.parse import urlencode

__all__ = [
    "Markup",
    "json_block",
    "layout",
    "link",
    "name",
    "number",
    "table",
    "text",
]

Markup = str
"""HTML that is already escaped."""

_NAV = (("/", "Overview"), ("/console/tenants", "Tenants"), ("/console/health", "Health"))


def text(value: object) -> Markup:
    """``value`` as escaped HTML text (``—`` for ``None``)."""
    return "\u2014" if value is None else html.escape(str(value), quote=True)


def name(value: str | None) -> Markup:
    """An externally chosen name (tenant, model, feature), isolated for bidi."""
    return f'<bdi class="name">{text(value or "(none)")}</bdi>'


def number(value: int | float | Decimal | None, currency: str | None = None) -> Markup:
    if value is None:
        return "\u2014"
    if isinstance(value, int):
        shown = f"{value:,}"
    elif isinstance(value, Decimal):
        shown = f"{value:,.4f}" if abs(value) < 100 else f"{value:,.2f}"
    else:
        shown = f"{value:,.2f}"
    return text(f"{shown} {currency}" if currency else shown)


def link(path: str, label: Markup, **query: str) -> Markup:
    href = f"{path}?{urlencode(query)}" if query else path
    return f'<a href="{text(href)}">{label}</a>'


def table(
    headers: Sequence[str], rows: Iterable[Sequence[Markup]], *, numeric_from: int = 1
) -> Markup:
    """A table of already escaped cells; columns from ``numeric_from`` on align right."""
    head = "".join(
        f"<th{' class=num' if index >= numeric_from else ''}>{text(header)}</th>"
        for index, header in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if index >= numeric_from else ''}>{cell}</td>"
            for index, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="empty">nothing yet</td></tr>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def json_block(element_id: str, data: object) -> Markup:
    payload = (
        json.dumps(data, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    return f'<script type="application/json" id="{text(element_id)}">{payload}</script>'


def layout(
    title: str,
    body: Markup,
    *,
    active: str | None = None,
    signed_in: bool = True,
    open_access: bool = False,
) -> Markup:
    """A whole page: head with the console's stylesheet and script, navigation, ``body``."""
    nav = ""
    if signed_in:
        items = "".join(
            f'<a href="{path}"{" aria-current=page" if path == active else ""}>{label}</a>'
            for path, label in _NAV
        )
        logout = (
            ""
            if open_access
            else '<form method="post" action="/console/logout" class="logout">'
            '<button type="submit">Log out</button></form>'
        )
        nav = f'<nav><span class="brand">tollmeter</span>{items}{logout}</nav>'
    warning = (
        '<p class="warning">No admin key is configured: like the management API, this '
        "console is open to anyone who can reach this port.</p>"
        if open_access
        else ""
    )
    return (
        "<!doctype html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{text(title)} \u00b7 tollmeter</title>"
        '<link rel="stylesheet" href="/console/static/uPlot.min.css">'
        '<link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/uPlot.iife.min.js" defer></script>'
        '<script src="/console/static/console.js" defer></script>'
        f"</head><body>{nav}<main>{warning}{body}</main></body></html>"
    )
