"""Checks the management API's read routes share on their query parameters: no name
they do not know, and times given in ISO 8601 (UTC when no offset is given)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

from tollmeter.collector.errors import BadRequest

__all__ = ["END_OF_TIME_NS", "refuse_unknown", "time_ns", "time_window"]

END_OF_TIME_NS = 2**63 - 1
_YEAR_2200_S = 7_258_118_400
_MAX_TIME_TEXT = 64


def refuse_unknown(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    """Raise :class:`BadRequest` naming the parameters not in ``allowed``."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown parameter {', '.join(unknown)[:64]!r}; expected {', '.join(sorted(allowed))}"
        )


def time_window(params: Mapping[str, str]) -> tuple[int, int]:
    """``from`` (inclusive, default: the epoch) and ``to`` (exclusive, default: no end),
    in nanoseconds since the epoch."""
    return time_ns("from", params.get("from"), 0), time_ns("to", params.get("to"), END_OF_TIME_NS)


def time_ns(field: str, text: object, default: int) -> int:
    """``text`` (ISO 8601) in nanoseconds since the epoch, ``default`` when absent."""
    if text is None:
        return default
    if not isinstance(text, str) or len(text) > _MAX_TIME_TEXT:
        raise BadRequest(f"{field}: expected an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{field}: {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    seconds = moment.timestamp()
    if not 0 <= seconds < _YEAR_2200_S:
        raise BadRequest(f"{field}: {text!r} is out of range")
    return int(seconds) * 1_000_000_000 + moment.microsecond * 1000
