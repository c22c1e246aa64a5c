"""``GET /api/v1/tenants``: every tenant in the ledger, a page at a time, with its usage
totals and the state of its limits.

The totals are the usage API's rows grouped by tenant (``ledger.query_usage``), so the
two answers agree; the limit state is the limits service's tenant status. Tenants are
sorted by name or, largest first, by tokens, cost or requests, then paged by
``offset``/``limit``. ``contains`` keeps the tenants whose id contains that text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Literal, Protocol, get_args

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tollmeter.collector._http_errors import error_response
from tollmeter.collector.errors import BadRequest
from tollmeter.collector.storage import InvalidQuery, Ledger, StorageError, UsageQuery, UsageRow

__all__ = ["MAX_TENANTS_PAGE", "TenantPage", "TenantSort", "read_tenants", "tenants_routes"]

MAX_TENANTS_PAGE = 500
_MAX_TENANTS = 1_000_000
_MAX_TEXT = 256
_PARAMS = frozenset({"start", "end", "sort", "contains", "offset", "limit"})

TenantSort = Literal["tenant", "total_tokens", "cost", "requests"]
_SORTS: tuple[TenantSort, ...] = get_args(TenantSort)


class LimitStatus(Protocol):
    """What the tenants API reads from the limits service."""

    def status(self, tenant: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class TenantPage:
    """One page of tenants: their usage rows, limit states and the number of matches."""

    rows: list[UsageRow]
    limits: list[dict[str, Any] | None]
    total: int
    offset: int

    def to_json(self) -> dict[str, object]:
        next_offset = self.offset + len(self.rows)
        return {
            "tenants": [
                {"tenant": row.tenant, "usage": row.to_json(), "limits": limits}
                for row, limits in zip(self.rows, self.limits, strict=True)
            ],
            "total": self.total,
            "offset": self.offset,
            "next_offset": next_offset if next_offset < self.total else None,
        }


def _sort_key(sort: TenantSort) -> Any:
    if sort == "total_tokens":
        return lambda row: (-row.total_tokens, row.tenant or "")
    if sort == "requests":
        return lambda row: (-row.requests, row.tenant or "")
    if sort == "cost":
        return lambda row: (-(row.cost or Decimal(0)), row.tenant or "")
    return lambda row: row.tenant or ""


def read_tenants(
    ledger: Ledger,
    limits: LimitStatus | None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    sort: TenantSort = "tenant",
    contains: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> TenantPage:
    """A page of tenants with usage in ``[start, end)``; blocking (reads the ledger)."""
    rows = ledger.query_usage(
        UsageQuery(start=start, end=end, group_by=("tenant",), limit=_MAX_TENANTS)
    )
    if contains:
        needle = contains.casefold()
        rows = [row for row in rows if needle in (row.tenant or "").casefold()]
    rows.sort(key=_sort_key(sort))
    page = rows[offset : offset + limit]
    states = [
        None if limits is None or row.tenant is None else _limit_state(limits, row.tenant)
        for row in page
    ]
    return TenantPage(rows=page, limits=states, total=len(rows), offset=offset)


def _limit_state(limits: LimitStatus, tenant: str) -> dict[str, Any]:
    state = limits.status(tenant)
    state.pop("tenant", None)
    return state


def _moment(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _number(params: Mapping[str, str], name: str, default: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not text.isdigit() or not 0 <= int(text) <= high:
        raise BadRequest(f"{name} must be an integer from 0 to {high}")
    return int(text)


def _page_arguments(params: Mapping[str, str]) -> dict[str, Any]:
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise BadRequest(f"unknown parameter; expected {', '.join(sorted(_PARAMS))}")
    sort = params.get("sort", "tenant")
    if sort not in _SORTS:
        raise BadRequest(f"sort must be one of {', '.join(_SORTS)}")
    contains = params.get("contains") or None
    if contains is not None and len(contains) > _MAX_TEXT:
        raise BadRequest(f"contains must be at most {_MAX_TEXT} characters")
    limit = _number(params, "limit", 100, MAX_TENANTS_PAGE)
    if limit < 1:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_TENANTS_PAGE}")
    return {
        "start": _moment("start", params.get("start")),
        "end": _moment("end", params.get("end")),
        "sort": sort,
        "contains": contains,
        "offset": _number(params, "offset", 0, _MAX_TENANTS),
        "limit": limit,
    }


def tenants_routes(ledger: Ledger, limits: LimitStatus | None) -> list[Route]:
    """The tenants API over ``ledger`` and the limits service (``None``: no limit state)."""

    async def tenants(request: Request) -> JSONResponse:
        """Tenants with their usage totals and limit state, one page at a time.
        ---
        parameters:
          - {name: start, in: query, description: ISO 8601, inclusive, schema: {type: string}}
          - {name: end, in: query, description: ISO 8601, exclusive, schema: {type: string}}
          - name: sort
            in: query
            description: by name, or largest first by tokens, cost or requests
            schema: {type: string, enum: [tenant, total_tokens, cost, requests]}
          - {name: contains, in: query, description: text in the tenant id, schema: {type: string}}
          - {name: offset, in: query, schema: {type: integer, minimum: 0}}
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 500}}
        responses:
          "200": {description: "tenants (usage row and limit state each), total, next_offset"}
          "400": {description: a parameter is invalid}
          "503": {description: the ledger cannot be read}
        """
        try:
            arguments = _page_arguments(request.query_params)
            page = await run_in_threadpool(read_tenants, ledger, limits, **arguments)
        except (BadRequest, InvalidQuery) as exc:
            return error_response(400, str(exc))
        except StorageError as exc:
            return error_response(503, f"ledger unavailable: {exc}")
        return JSONResponse(page.to_json())

    return [Route("/api/v1/tenants", tenants, methods=["GET"], name="tenants")]
