"""Fetch a provider's usage or cost report over HTTP with an admin key, every page of it.

Nothing is returned until every page has been read and checked: a page that fails, a
body that is not JSON (or holds NaN or Infinity), a page token seen twice (a loop), more
than ``max_pages`` pages or a body over ``MAX_PAGE_BYTES`` raise :class:`ReportError`,
and the caller keeps nothing of the report. The admin key is sent, never logged: errors
name the key by :func:`key_label` only.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from datetime import time as day_time
from decimal import Decimal
from typing import Any

import httpx

from tollmeter.collector.billing._providers import ReportKind, read_page
from tollmeter.collector.billing._report import Provider, ReportError, ReportRow

__all__ = ["BASE_URLS", "MAX_PAGE_BYTES", "ReportSource", "fetch_report", "key_label"]

BASE_URLS: dict[Provider, str] = {
    "openai": "https://api.openai.com",
    "anthropic": "https://api.anthropic.com",
}
MAX_PAGE_BYTES = 32 * 1024 * 1024
_PATHS: dict[tuple[Provider, ReportKind], str] = {
    ("openai", "usage"): "/v1/organization/usage/completions",
    ("openai", "cost"): "/v1/organization/costs",
    ("anthropic", "usage"): "/v1/organizations/usage_report/messages",
    ("anthropic", "cost"): "/v1/organizations/cost_report",
}
_GROUPS: dict[tuple[Provider, ReportKind], list[str]] = {
    ("openai", "usage"): ["model", "project_id", "api_key_id"],
    ("openai", "cost"): ["project_id", "line_item"],
    ("anthropic", "usage"): ["model", "api_key_id", "workspace_id"],
    ("anthropic", "cost"): ["workspace_id", "description"],
}
_ANTHROPIC_VERSION = "2023-06-01"


def key_label(key: str) -> str:
    """How logs and errors name an admin key: a short digest, never the key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class ReportSource:
    """Where one provider's reports come from. ``repr`` leaves the key out."""

    provider: Provider
    admin_key: str
    base_url: str = ""
    timeout_s: float = 30.0
    max_pages: int = 1000

    def __repr__(self) -> str:
        return (
            f"ReportSource(provider={self.provider!r}, admin_key={key_label(self.admin_key)!r}, "
            f"base_url={self.url!r})"
        )

    @property
    def url(self) -> str:
        return (self.base_url or BASE_URLS[self.provider]).rstrip("/")


def fetch_report(
    source: ReportSource, kind: ReportKind, start: date, end: date, *, deadline: float
) -> list[ReportRow]:
    """Every row of ``kind`` for the days ``[start, end)``, daily buckets, all pages.

    ``deadline`` is on the ``time.monotonic()`` clock: the whole fetch gives up there.
    """
    provider = source.provider
    params = _params(provider, kind, start, end)
    headers = {"Accept": "application/json", "User-Agent": "tollmeter-reconcile"}
    if provider == "anthropic":
        headers["x-api-key"] = source.admin_key
        headers["anthropic-version"] = _ANTHROPIC_VERSION
    else:
        headers["Authorization"] = f"Bearer {source.admin_key}"
    url = source.url + _PATHS[(provider, kind)]
    rows: list[ReportRow] = []
    seen: set[str] = set()
    token: str | None = None
    with httpx.Client(headers=headers, follow_redirects=False) as client:
        for page_number in range(source.max_pages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReportError(f"{provider} {kind} report: timed out after {page_number} pages")
            query = params if token is None else [*params, ("page", token)]
            body = _get(client, url, query, min(left, source.timeout_s), source, kind)
            page_rows, token = _read(provider, kind, body, page_number)
            rows.extend(page_rows)
            if token is None:
                return rows
            if token in seen:
                raise ReportError(
                    f"{provider} {kind} report: page {page_number + 1} points back to a page "
                    "already read (a paging loop)"
                )
            seen.add(token)
    raise ReportError(f"{provider} {kind} report: more than {source.max_pages} pages")


def _params(provider: Provider, kind: ReportKind, start: date, end: date) -> list[tuple[str, str]]:
    first = datetime.combine(start, day_time(), tzinfo=timezone.utc)
    last = datetime.combine(end, day_time(), tzinfo=timezone.utc)
    groups = _GROUPS[(provider, kind)]
    if provider == "openai":
        params = [
            ("start_time", str(int(first.timestamp()))),
            ("end_time", str(int(last.timestamp()))),
        ]
        params += [("group_by", name) for name in groups]
    else:
        params = [
            ("starting_at", first.strftime("%Y-%m-%dT%H:%M:%SZ")),
            ("ending_at", last.strftime("%Y-%m-%dT%H:%M:%SZ")),
        ]
        params += [("group_by[]", name) for name in groups]
    return [*params, ("bucket_width", "1d"), ("limit", "31")]


def _get(
    client: httpx.Client,
    url: str,
    params: list[tuple[str, str]],
    timeout: float,
    source: ReportSource,
    kind: ReportKind,
) -> bytes:
    what = f"{source.provider} {kind} report"
    try:
        with client.stream("GET", url, params=tuple(params), timeout=timeout) as response:
            if response.status_code != 200:
                detail = response.read()[:300].decode("utf-8", "replace").strip()
                raise ReportError(
                    f"{what}: HTTP {response.status_code} from {source.url} "
                    f"(admin key {key_label(source.admin_key)}): {detail}"
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_PAGE_BYTES:
                    raise ReportError(f"{what}: a page is larger than {MAX_PAGE_BYTES} bytes")
            return bytes(body)
    except httpx.HTTPError as exc:
        raise ReportError(f"{what}: cannot read from {source.url}: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise ReportError(f"the report holds {name}, which is not a number")


def _read(
    provider: Provider, kind: ReportKind, body: bytes, page_number: int
) -> tuple[list[ReportRow], str | None]:
    try:
        page = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ReportError(
            f"{provider} {kind} report: page {page_number + 1} is not JSON (truncated?)"
        ) from None
    try:
        return read_page(provider, kind, page)
    except ReportError as exc:
        raise ReportError(f"{provider} {kind} report, page {page_number + 1}: {exc}") from None
