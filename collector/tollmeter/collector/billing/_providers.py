"""The providers' report pages, read into :class:`ReportRow` values.

Shapes, as the providers document them:

- OpenAI Usage API, completions: ``{"data": [bucket], "has_more", "next_page"}``, each
  bucket ``{"start_time", "end_time", "results": [...]}`` whose results carry
  ``input_tokens`` (cache reads included), ``input_cached_tokens``, ``output_tokens``,
  ``num_model_requests`` and, when grouped by them, ``model``, ``project_id``, ``api_key_id``.
- OpenAI Costs API: the same paging; results carry ``amount: {"value", "currency"}`` and,
  when grouped, ``project_id`` and ``line_item`` (``"<model>, <kind>"``).
- Anthropic usage report (messages): buckets ``{"starting_at", "ending_at", "results"}``;
  results carry ``uncached_input_tokens``, ``cache_read_input_tokens``,
  ``cache_creation: {"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"}``,
  ``output_tokens`` and, when grouped, ``model``, ``api_key_id``, ``workspace_id``.
- Anthropic cost report: results carry ``amount`` (a decimal string in cents),
  ``currency`` and, grouped by description, ``model``.

Anthropic's workspace is compared as the project.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal

from tollmeter.collector.billing._report import (
    Provider,
    ReportError,
    ReportRow,
    read_cost,
    read_count,
    read_day,
    read_text,
)

__all__ = ["KINDS", "ReportKind", "read_page", "read_result"]

ReportKind = Literal["usage", "cost"]
KINDS: tuple[ReportKind, ...] = ("usage", "cost")

_CENTS = Decimal("0.01")


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ReportError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def read_page(
    provider: Provider, kind: ReportKind, page: object
) -> tuple[list[ReportRow], str | None]:
    """The rows of one page and its ``next_page`` token (``None`` on the last page)."""
    body = _mapping(page, "page")
    buckets = body.get("data")
    if not isinstance(buckets, list):
        raise ReportError("page.data: expected a list of buckets")
    start_key = "start_time" if provider == "openai" else "starting_at"
    rows: list[ReportRow] = []
    for index, raw_bucket in enumerate(buckets):
        where = f"page.data[{index}]"
        bucket = _mapping(raw_bucket, where)
        day = read_day(bucket.get(start_key), f"{where}.{start_key}")
        results = bucket.get("results")
        if not isinstance(results, list):
            raise ReportError(f"{where}.results: expected a list")
        for position, result in enumerate(results):
            rows.append(read_result(provider, kind, day, result, f"{where}.results[{position}]"))
    has_more = body.get("has_more", False)
    if not isinstance(has_more, bool):
        raise ReportError("page.has_more: expected true or false")
    token = read_text(body.get("next_page"), "page.next_page")
    if has_more and not token:
        raise ReportError("page: has_more is true but next_page is empty")
    return rows, token if has_more else None


def read_result(
    provider: Provider, kind: ReportKind, day: Any, raw: object, where: str
) -> ReportRow:
    """One result of a bucket (or one CSV line, as a mapping) as a row."""
    result = _mapping(raw, where)
    return _READERS[(provider, kind)](result, day, where)


def _openai_usage(result: Mapping[str, Any], day: Any, where: str) -> ReportRow:
    total_input = read_count(result.get("input_tokens"), f"{where}.input_tokens")
    cached = read_count(result.get("input_cached_tokens") or 0, f"{where}.input_cached_tokens")
    if cached > total_input:
        raise ReportError(f"{where}: input_cached_tokens exceeds input_tokens")
    requests = result.get("num_model_requests")
    return ReportRow(
        provider="openai",
        day=day,
        model=read_text(result.get("model"), f"{where}.model"),
        project=read_text(result.get("project_id"), f"{where}.project_id"),
        api_key=read_text(result.get("api_key_id"), f"{where}.api_key_id"),
        uncached_input_tokens=total_input - cached,
        cache_read_input_tokens=cached,
        output_tokens=read_count(result.get("output_tokens"), f"{where}.output_tokens"),
        requests=None if requests is None else read_count(requests, f"{where}.num_model_requests"),
    )


def _openai_cost(result: Mapping[str, Any], day: Any, where: str) -> ReportRow:
    amount = _mapping(result.get("amount"), f"{where}.amount")
    line = read_text(result.get("line_item"), f"{where}.line_item")
    currency = read_text(amount.get("currency"), f"{where}.amount.currency", optional=False)
    return ReportRow(
        provider="openai",
        day=day,
        # "gpt-4o-mini-2024-07-18, cached input": the model is before the last comma.
        model=None if line is None else line.rpartition(",")[0].strip() or line,
        project=read_text(result.get("project_id"), f"{where}.project_id"),
        cost=read_cost(amount.get("value"), f"{where}.amount.value"),
        currency=(currency or "").upper(),
    )


def _anthropic_usage(result: Mapping[str, Any], day: Any, where: str) -> ReportRow:
    creation = result.get("cache_creation") or {}
    creation = _mapping(creation, f"{where}.cache_creation")
    writes = sum(
        read_count(creation.get(name) or 0, f"{where}.cache_creation.{name}")
        for name in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
    )
    return ReportRow(
        provider="anthropic",
        day=day,
        model=read_text(result.get("model"), f"{where}.model"),
        project=read_text(result.get("workspace_id"), f"{where}.workspace_id"),
        api_key=read_text(result.get("api_key_id"), f"{where}.api_key_id"),
        uncached_input_tokens=read_count(
            result.get("uncached_input_tokens"), f"{where}.uncached_input_tokens"
        ),
        cache_read_input_tokens=read_count(
            result.get("cache_read_input_tokens") or 0, f"{where}.cache_read_input_tokens"
        ),
        cache_write_input_tokens=writes,
        output_tokens=read_count(result.get("output_tokens"), f"{where}.output_tokens"),
    )


def _anthropic_cost(result: Mapping[str, Any], day: Any, where: str) -> ReportRow:
    currency = read_text(result.get("currency"), f"{where}.currency", optional=False)
    return ReportRow(
        provider="anthropic",
        day=day,
        model=read_text(result.get("model"), f"{where}.model"),
        project=read_text(result.get("workspace_id"), f"{where}.workspace_id"),
        # Amounts are in cents (the currency's lowest unit).
        cost=read_cost(result.get("amount"), f"{where}.amount", scale=_CENTS),
        currency=(currency or "").upper(),
    )


_READERS: dict[tuple[Provider, ReportKind], Callable[[Mapping[str, Any], Any, str], ReportRow]] = {
    ("openai", "usage"): _openai_usage,
    ("openai", "cost"): _openai_cost,
    ("anthropic", "usage"): _anthropic_usage,
    ("anthropic", "cost"): _anthropic_cost,
}
