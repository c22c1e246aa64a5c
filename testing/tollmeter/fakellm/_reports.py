"""The providers' usage and cost reports, built from what this server actually served.

OpenAI's organisation Usage API (``/v1/organization/usage/completions``) and Costs API
(``/v1/organization/costs``), Anthropic's Admin usage report
(``/v1/organizations/usage_report/messages``) and cost report
(``/v1/organizations/cost_report``): daily buckets over the journal's successful
exchanges, grouped as asked, paged with ``page`` / ``next_page``.

``PUT /_fake/reports`` sets what the real providers would decide: prices per model (a
model without one is left out of the cost reports), drift (the report counts +N% of a
model's tokens of one type, as a provider whose bill disagrees with what it answered) and a
page size that forces paging. ``GET`` shows the settings, ``DELETE`` resets them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollmeter.fakellm._journal import Exchange, Journal

__all__ = ["TOKEN_TYPES", "ReportSettings", "key_id", "report_routes"]

TOKEN_TYPES = (
    "uncached_input_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
)
_DAY = 86_400
_MAX_DAYS = 366
_MILLION = Decimal(1_000_000)


def key_id(provider: str, headers: Mapping[str, str]) -> str | None:
    """The id a usage report names a client's key by: a digest, so no key is ever kept."""
    scheme, _, bearer = headers.get("authorization", "").partition(" ")
    key = headers.get("x-api-key") or (bearer.strip() if scheme.lower() == "bearer" else "")
    prefix = "apikey_" if provider == "anthropic" else "key_"
    if not key:
        return None
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class ReportSettings:
    """Prices (per million tokens, by model and token type), drift (percent, by model and
    token type) and a page size; thread-safe to replace."""

    prices: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    drift: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    page_size: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reset(self) -> None:
        with self._lock:
            self.prices, self.drift, self.page_size = {}, {}, None

    def replace(self, body: object) -> None:
        """Take settings from a JSON body; raises ``ValueError`` naming the bad field."""
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        prices: dict[str, dict[str, Decimal]] = {}
        for model, table in _mapping(body.get("prices", {}), "prices").items():
            table = _mapping(table, f"prices.{model}")
            prices[model] = {
                kind: _decimal(table.get(kind, "0"), f"prices.{model}.{kind}")
                for kind in TOKEN_TYPES
            }
        drift: dict[tuple[str, str], Decimal] = {}
        entries = body.get("drift", [])
        if not isinstance(entries, list):
            raise ValueError("drift: expected a list")
        for index, entry in enumerate(entries):
            entry = _mapping(entry, f"drift[{index}]")
            named, kind = entry.get("model"), entry.get("token_type", "output_tokens")
            if not isinstance(named, str) or kind not in TOKEN_TYPES:
                raise ValueError(f"drift[{index}]: needs a model and a token_type in {TOKEN_TYPES}")
            drift[(named, kind)] = _decimal(entry.get("percent"), f"drift[{index}].percent")
        page_size = body.get("page_size")
        if page_size is not None and (type(page_size) is not int or not 1 <= page_size <= 31):
            raise ValueError("page_size: expected an integer from 1 to 31")
        with self._lock:
            self.prices, self.drift, self.page_size = prices, drift, page_size

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "prices": {
                    m: {k: str(v) for k, v in table.items()} for m, table in self.prices.items()
                },
                "drift": [
                    {"model": m, "token_type": k, "percent": str(p)}
                    for (m, k), p in self.drift.items()
                ],
                "page_size": self.page_size,
            }

    def tokens(self, model: str, counts: Mapping[str, int]) -> dict[str, int]:
        """``counts`` as the report states them: with this model's drift applied."""
        with self._lock:
            drift = dict(self.drift)
        out = {}
        for kind in TOKEN_TYPES:
            factor = 1 + drift.get((model, kind), Decimal(0)) / 100
            out[kind] = int((counts[kind] * factor).to_integral_value(ROUND_HALF_UP))
        return out

    def cost(self, model: str, kind: str, tokens: int) -> Decimal | None:
        with self._lock:
            table = self.prices.get(model)
        return None if table is None else tokens * table[kind] / _MILLION


def _mapping(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected an object")
    return value


def _decimal(value: object, name: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name}: expected a decimal number") from None
    if not number.is_finite() or isinstance(value, bool):
        raise ValueError(f"{name}: expected a decimal number")
    return number


class _BadQuery(Exception):
    pass


@dataclass(frozen=True)
class _Group:
    day: int
    model: str
    project: str | None
    api_key: str | None


def _served(journal: Journal, provider: str, start: int, end: int) -> dict[_Group, dict[str, int]]:
    """True token counts per day, model, project and key of the successful exchanges."""
    groups: dict[_Group, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TOKEN_TYPES, 0))
    for exchange in journal.snapshot():
        usage, model = exchange.usage, exchange.model
        if usage is None or model is None or not _billed(exchange, provider):
            continue
        if not start <= exchange.time < end:
            continue
        day = int(exchange.time) - int(exchange.time) % _DAY
        counts = groups[_Group(day, model, exchange.project, exchange.api_key_id)]
        counts["uncached_input_tokens"] += (
            usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        )
        counts["cache_read_input_tokens"] += usage.cache_read_tokens
        counts["cache_write_input_tokens"] += usage.cache_write_tokens
        counts["output_tokens"] += usage.output_tokens
        counts["requests"] = counts.get("requests", 0) + 1
    return groups


def _billed(exchange: Exchange, provider: str) -> bool:
    """Providers bill a call they answered, whether or not its usage reached the client."""
    return exchange.provider == provider and exchange.status == 200


def _grouped(
    groups: Mapping[_Group, Mapping[str, int]], keep: Iterable[str]
) -> dict[tuple[int, tuple[tuple[str, str | None], ...]], dict[str, int]]:
    """Sum ``groups`` per day and the kept dimensions (model, project_id, api_key_id)."""
    keep = set(keep)
    out: dict[tuple[int, tuple[tuple[str, str | None], ...]], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys((*TOKEN_TYPES, "requests"), 0)
    )
    for group, counts in groups.items():
        values = {"model": group.model, "project_id": group.project, "api_key_id": group.api_key}
        key = tuple((name, values[name]) for name in sorted(keep))
        target = out[(group.day, key)]
        for name, count in counts.items():
            target[name] += count
    return out


def _page(
    request: Request, settings: ReportSettings, days: Sequence[int]
) -> tuple[Sequence[int], str | None]:
    raw_limit = request.query_params.get("limit", "7")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 31:
        raise _BadQuery("limit must be an integer from 1 to 31")
    size = settings.page_size or int(raw_limit)
    offset = 0
    token = request.query_params.get("page")
    if token:
        try:
            offset = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("day:"))
        except ValueError:
            raise _BadQuery("page is not a token this server gave") from None
    chosen = days[offset : offset + size]
    more = offset + size < len(days)
    next_token = base64.urlsafe_b64encode(f"day:{offset + size}".encode()).decode()
    return chosen, next_token if more else None


def _days(start: int, end: int) -> list[int]:
    first = start - start % _DAY
    if end <= start or (end - first) // _DAY > _MAX_DAYS:
        raise _BadQuery("the range must end after it starts and span at most a year")
    return list(range(first, end, _DAY))


def _group_by(request: Request, allowed: Sequence[str]) -> list[str]:
    names = request.query_params.getlist("group_by") + request.query_params.getlist("group_by[]")
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise _BadQuery(f"cannot group by {', '.join(unknown)}")
    return names


def _epoch_param(request: Request, name: str, default: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise _BadQuery(f"{name} is required")
        return default
    if not raw.isdigit():
        raise _BadQuery(f"{name} must be Unix seconds")
    return int(raw)


def _rfc3339_param(request: Request, name: str, default: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise _BadQuery(f"{name} is required")
        return default
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _BadQuery(f"{name} must be an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise _BadQuery(f"{name} must carry a time zone")
    return int(moment.timestamp())


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _openai_usage(journal: Journal, settings: ReportSettings, request: Request) -> dict[str, Any]:
    start = _epoch_param(request, "start_time")
    end = _epoch_param(request, "end_time", start + 7 * _DAY)
    keep = _group_by(request, ("model", "project_id", "api_key_id", "user_id", "batch"))
    days, next_page = _page(request, settings, _days(start, end))
    sums = _grouped(
        _served(journal, "openai", start, end), set(keep) & {"model", "project_id", "api_key_id"}
    )
    buckets = []
    for day in days:
        results = []
        for (group_day, key), counts in sorted(sums.items(), key=lambda item: str(item[0])):
            if group_day != day:
                continue
            named = dict(key)
            model = named.get("model")
            tokens = settings.tokens(model, counts) if model else dict(counts)
            cached = tokens["cache_read_input_tokens"]
            results.append(
                {
                    "object": "organization.usage.completions.result",
                    "input_tokens": tokens["uncached_input_tokens"]
                    + cached
                    + tokens["cache_write_input_tokens"],
                    "input_cached_tokens": cached,
                    "output_tokens": tokens["output_tokens"],
                    "input_audio_tokens": 0,
                    "output_audio_tokens": 0,
                    "num_model_requests": counts["requests"],
                    "project_id": named.get("project_id"),
                    "user_id": None,
                    "api_key_id": named.get("api_key_id"),
                    "model": model,
                    "batch": False if "batch" in keep else None,
                }
            )
        buckets.append(
            {"object": "bucket", "start_time": day, "end_time": day + _DAY, "results": results}
        )
    return {
        "object": "page",
        "data": buckets,
        "has_more": next_page is not None,
        "next_page": next_page,
    }


_OPENAI_LINE = {
    "uncached_input_tokens": "input",
    "cache_read_input_tokens": "cached input",
    "cache_write_input_tokens": "cache write",
    "output_tokens": "output",
}


def _openai_costs(journal: Journal, settings: ReportSettings, request: Request) -> dict[str, Any]:
    start = _epoch_param(request, "start_time")
    end = _epoch_param(request, "end_time", start + 7 * _DAY)
    keep = _group_by(request, ("project_id", "line_item"))
    days, next_page = _page(request, settings, _days(start, end))
    sums = _grouped(
        _served(journal, "openai", start, end), {"model", *(set(keep) & {"project_id"})}
    )
    buckets = []
    for day in days:
        lines: dict[tuple[str | None, str | None], Decimal] = defaultdict(Decimal)
        for (group_day, key), counts in sums.items():
            named = dict(key)
            model = named["model"]
            if group_day != day or model is None:
                continue
            tokens = settings.tokens(model, counts)
            for kind in TOKEN_TYPES:
                cost = settings.cost(model, kind, tokens[kind])
                if cost is None or not tokens[kind]:
                    continue
                line = f"{model}, {_OPENAI_LINE[kind]}" if "line_item" in keep else None
                lines[(line, named.get("project_id"))] += cost
        results = [
            {
                "object": "organization.costs.result",
                # A JSON number as OpenAI sends it: a float, exact to 15 significant digits.
                "amount": {"value": float(value), "currency": "usd"},
                "line_item": line,
                "project_id": project,
            }
            for (line, project), value in sorted(lines.items(), key=str)
        ]
        buckets.append(
            {"object": "bucket", "start_time": day, "end_time": day + _DAY, "results": results}
        )
    return {
        "object": "page",
        "data": buckets,
        "has_more": next_page is not None,
        "next_page": next_page,
    }


def _anthropic_usage(
    journal: Journal, settings: ReportSettings, request: Request
) -> dict[str, Any]:
    start = _rfc3339_param(request, "starting_at")
    end = _rfc3339_param(request, "ending_at", start + 7 * _DAY)
    keep = _group_by(
        request, ("model", "api_key_id", "workspace_id", "service_tier", "context_window")
    )
    days, next_page = _page(request, settings, _days(start, end))
    sums = _grouped(_served(journal, "anthropic", start, end), set(keep) & {"model", "api_key_id"})
    buckets = []
    for day in days:
        results = []
        for (group_day, key), counts in sorted(sums.items(), key=lambda item: str(item[0])):
            if group_day != day:
                continue
            named = dict(key)
            model = named.get("model")
            tokens = settings.tokens(model, counts) if model else dict(counts)
            results.append(
                {
                    "uncached_input_tokens": tokens["uncached_input_tokens"],
                    "cache_creation": {
                        "ephemeral_1h_input_tokens": 0,
                        "ephemeral_5m_input_tokens": tokens["cache_write_input_tokens"],
                    },
                    "cache_read_input_tokens": tokens["cache_read_input_tokens"],
                    "output_tokens": tokens["output_tokens"],
                    "server_tool_use": {"web_search_requests": 0},
                    "api_key_id": named.get("api_key_id"),
                    "workspace_id": None,
                    "model": model,
                    "service_tier": "standard" if "service_tier" in keep else None,
                    "context_window": "0-200k" if "context_window" in keep else None,
                }
            )
        buckets.append(
            {"starting_at": _iso(day), "ending_at": _iso(day + _DAY), "results": results}
        )
    return {"data": buckets, "has_more": next_page is not None, "next_page": next_page}


_ANTHROPIC_TOKEN_TYPE = {
    "uncached_input_tokens": "uncached_input_tokens",
    "cache_read_input_tokens": "cache_read_input_tokens",
    "cache_write_input_tokens": "cache_creation.ephemeral_5m_input_tokens",
    "output_tokens": "output_tokens",
}


def _anthropic_costs(
    journal: Journal, settings: ReportSettings, request: Request
) -> dict[str, Any]:
    start = _rfc3339_param(request, "starting_at")
    end = _rfc3339_param(request, "ending_at", start + 7 * _DAY)
    keep = _group_by(request, ("workspace_id", "description"))
    days, next_page = _page(request, settings, _days(start, end))
    sums = _grouped(_served(journal, "anthropic", start, end), {"model"})
    buckets = []
    for day in days:
        lines: dict[tuple[str | None, str | None], Decimal] = defaultdict(Decimal)
        for (group_day, key), counts in sums.items():
            model = dict(key)["model"]
            if group_day != day or model is None:
                continue
            tokens = settings.tokens(model, counts)
            for kind in TOKEN_TYPES:
                cost = settings.cost(model, kind, tokens[kind])
                if cost is None or not tokens[kind]:
                    continue
                by_line = "description" in keep
                lines[(model, kind) if by_line else (None, None)] += cost
        results = [
            {
                "currency": "USD",
                # In cents, as a decimal string.
                "amount": str(value * 100),
                "workspace_id": None,
                "description": None if model is None else f"{model} {kind}",
                "cost_type": None if model is None else "tokens",
                "context_window": None if model is None else "0-200k",
                "model": model,
                "service_tier": None if model is None else "standard",
                "token_type": None if kind is None else _ANTHROPIC_TOKEN_TYPE[kind],
            }
            for (model, kind), value in sorted(lines.items(), key=str)
        ]
        buckets.append(
            {"starting_at": _iso(day), "ending_at": _iso(day + _DAY), "results": results}
        )
    return {"data": buckets, "has_more": next_page is not None, "next_page": next_page}


Builder = Callable[[Journal, ReportSettings, Request], dict[str, Any]]
_REPORTS: dict[str, tuple[str, Builder]] = {
    "/v1/organization/usage/completions": ("openai", _openai_usage),
    "/v1/organization/costs": ("openai", _openai_costs),
    "/v1/organizations/usage_report/messages": ("anthropic", _anthropic_usage),
    "/v1/organizations/cost_report": ("anthropic", _anthropic_costs),
}


def _error(provider: str, status: int, message: str) -> Response:
    if provider == "anthropic":
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": message},
        }
    else:
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    return JSONResponse(body, status_code=status)


def report_routes(journal: Journal, settings: ReportSettings) -> list[Route]:
    def report(path: str) -> Callable[[Request], Any]:
        provider, build = _REPORTS[path]

        async def endpoint(request: Request) -> Response:
            if key_id(provider, request.headers) is None:
                return _error(provider, 401, "an admin key is required")
            try:
                body = build(journal, settings, request)
            except _BadQuery as exc:
                return _error(provider, 400, str(exc))
            return Response(_dumps(body), media_type="application/json")

        return endpoint

    async def show(request: Request) -> Response:
        return JSONResponse(settings.as_json())

    async def change(request: Request) -> Response:
        try:
            settings.replace(json.loads(await request.body()))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(settings.as_json())

    async def reset(request: Request) -> Response:
        settings.reset()
        return Response(status_code=204)

    return [
        *(Route(path, report(path), methods=["GET"]) for path in _REPORTS),
        Route("/_fake/reports", show, methods=["GET"]),
        Route("/_fake/reports", change, methods=["PUT"]),
        Route("/_fake/reports", reset, methods=["DELETE"]),
    ]


def _dumps(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, default=str).encode()
