"""How a limit counter reads from outside: remaining, reset time, blocked until when."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tollmeter.collector.limits._model import LimitStatus, iso_time
from tollmeter.collector.limits._rules import Counter, InFlight, Rule

__all__ = ["counter_status", "tenant_status"]

_EPSILON = 1e-9


def counter_status(
    rule: Rule, key: tuple[str, ...], counter: Counter, now: float, *, allowed: bool
) -> LimitStatus:
    # Positional, each attribute looked up once: this runs for every matching limit of
    # every check.
    config = rule.config
    window = rule.window
    return LimitStatus(
        rule.name,
        dict(zip(config.group_by, key, strict=True)),
        config.measure,
        config.action,
        config.limit,
        window.available(counter),
        window.reset_at(counter, now),
        allowed,
    )


def tenant_status(
    tenant: str,
    entries: Iterable[tuple[Rule, tuple[str, ...], Counter]],
    now: float,
    active_reservations: int,
    reserved: Mapping[tuple[str, tuple[str, ...]], float],
) -> dict[str, Any]:
    """The answer of ``GET /api/v1/tenants/{id}/status`` for up-to-date counters.

    ``reserved`` is what open reservations hold on each (limit, key): part of the usage
    the counter already counts, shown apart so that a gauge can tell it from usage."""
    limits: list[dict[str, Any]] = []
    blocked_until: float | None = None
    for rule, key, counter in entries:
        status = counter_status(rule, key, counter, now, allowed=True).to_json()
        del status["allowed"]
        blocking = rule.config.action in ("block", "throttle")
        status["blocked"] = blocking and rule.window.available(counter) < 1.0 - _EPSILON
        status["used_fraction"] = round(rule.window.used_fraction(counter), 6)
        status["reserved"] = round(reserved.get((rule.name, key), 0.0), 6)
        if isinstance(rule.window, InFlight):
            status["in_flight"] = round(counter.level, 6)
        if status["blocked"]:
            wait = rule.window.wait_for(counter, 1.0, now)
            until = now + (wait if wait is not None else 0.0)
            status["blocked_until"] = iso_time(until)
            blocked_until = until if blocked_until is None else max(blocked_until, until)
        limits.append(status)
    return {
        "tenant": tenant,
        "blocked": blocked_until is not None,
        "limits": limits,
        "active_reservations": active_reservations,
    }
