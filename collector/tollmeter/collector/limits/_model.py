"""Values exchanged with the limit engine: check requests and answers, reservations, notices."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from tollmeter.collector.limits._rules import INTERNAL, Estimate

__all__ = [
    "Changes",
    "Charge",
    "ChargeRow",
    "CheckRequest",
    "CheckResult",
    "CounterKey",
    "Decision",
    "LimitStatus",
    "Notice",
    "NoticeKind",
    "Reservation",
    "iso_time",
]

Decision = Literal["allow", "block", "throttle", "alert", "downgrade"]
NoticeKind = Literal[
    "threshold_crossed",
    "limit_exceeded",
    "request_denied",
    "reservation_expired",
    "forecast_exceeded",
    "reconciliation_drift",
    "grant_low_balance",
    "grant_expired",
]


@lru_cache(maxsize=1024)
def iso_time(ts: float) -> str:
    # Cached: a calendar limit resets at the same instant for every check of its period,
    # and formatting that instant again was a good part of building a check's answer.
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


CounterKey = tuple[str, tuple[str, ...]]
"""(limit name, key values in ``group_by`` order)."""


@dataclass(slots=True)
class Changes:
    """State written since the last ``drain_changes`` (for write-behind persistence)."""

    counters: dict[CounterKey, tuple[float, float, str]] = field(default_factory=dict)
    dropped_counters: set[CounterKey] = field(default_factory=set)
    reservations: dict[str, tuple[Reservation, bool]] = field(default_factory=dict)
    """Open (``False``) or expired and kept aside for late spans (``True``)."""
    dropped_reservations: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(
            self.counters or self.dropped_counters or self.reservations or self.dropped_reservations
        )


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """A model call about to happen, as described by the app or gateway."""

    tenant: str
    project: str | None = None
    model: str | None = None
    api_key_id: str | None = None
    feature: str | None = None
    estimated_input_tokens: int = 0
    max_output_tokens: int = 0
    request_id: str | None = None
    org: str | None = None
    """The tenant's organisation, from the configuration: never taken from the caller."""
    plan: str | None = None
    """The tenant's plan, from the plan assignments: never taken from the caller."""
    internal: bool = False
    """The operator's own call: only rules with ``include_internal`` count it. The check
    API accepts it from callers that are not bound to a tenant only."""

    def owned_by(self, org: str | None, plan: str | None) -> CheckRequest:
        """This request for a tenant of ``org`` on ``plan``. Positional, not
        ``dataclasses.replace`` (which takes more than twice as long): every check of a
        tenant with an organisation or a plan makes one."""
        return CheckRequest(
            self.tenant,
            self.project,
            self.model,
            self.api_key_id,
            self.feature,
            self.estimated_input_tokens,
            self.max_output_tokens,
            self.request_id,
            org,
            plan,
            self.internal,
        )

    def attributes(self) -> dict[str, str | None]:
        return {
            "tenant": self.tenant,
            "project": self.project,
            "model": self.model,
            "api_key": self.api_key_id,
            "feature": self.feature,
            "org": self.org,
            "plan": self.plan,
            INTERNAL: "true" if self.internal else None,
        }


class LimitStatus(NamedTuple):
    """Where one matching limit stands for the request's key."""

    name: str
    key: Mapping[str, str]
    measure: str
    action: str
    limit: float
    remaining: float
    reset_at: float
    allowed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": dict(self.key),
            "measure": self.measure,
            "action": self.action,
            "limit": self.limit,
            "remaining": max(0.0, self.remaining),
            "reset_at": iso_time(self.reset_at),
            "allowed": self.allowed,
        }


class CheckResult(NamedTuple):
    """A check's answer. Named tuples, not frozen dataclasses, for the values built on
    every check: they are as immutable and several times cheaper to construct."""

    allowed: bool
    action: Decision
    reservation_id: str | None = None
    retry_after_s: float | None = None
    downgrade_model: str | None = None
    denied_by: str | None = None
    limits: tuple[LimitStatus, ...] = ()
    reason: str | None = None
    """Why the answer did not come from the limits (their shared storage unreachable)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "action": self.action,
            "reservation_id": self.reservation_id,
            "retry_after_s": self.retry_after_s,
            "downgrade_model": self.downgrade_model,
            "denied_by": self.denied_by,
            "limits": [s.to_json() for s in self.limits],
            "reason": self.reason,
        }


class Charge(NamedTuple):
    """The amount a reservation put on one counter (``period`` for calendar windows)."""

    limit: str
    key: tuple[str, ...]
    amount: float
    period: float | None


ChargeRow = tuple[str, tuple[str, ...], float, float | None]
"""A ``Charge`` as a plain tuple: the form an open reservation keeps its charges in."""


class Reservation:
    """An open (or expired and kept aside) reservation.

    Open reservations pile up, and every full garbage collection walks each object they
    hold, a cost the check path pays. So a reservation is two tracked objects, itself
    and its request: the estimate is the request's plus a cost, the charges are plain
    tuples of strings and numbers (which the collector stops tracking), and of the
    check's answer only what the policy path and a replay after a restart read is kept.
    """

    __slots__ = (
        "_charges",
        "action",
        "cost",
        "created_at",
        "downgrade_model",
        "expires_at",
        "id",
        "request",
    )

    def __init__(
        self,
        id: str,
        request: CheckRequest,
        cost: float | None,
        created_at: float,
        expires_at: float,
        charges: Iterable[ChargeRow] = (),
        action: Decision | None = None,
        downgrade_model: str | None = None,
    ) -> None:
        self.id = id
        self.request = request
        self.cost = cost
        self.created_at = created_at
        self.expires_at = expires_at
        # Plain tuples even when given ``Charge``s, which the collector would keep tracking.
        self._charges: tuple[ChargeRow, ...] = tuple([(c[0], c[1], c[2], c[3]) for c in charges])
        self.action = action
        self.downgrade_model = downgrade_model

    @property
    def estimate(self) -> Estimate:
        q = self.request
        return Estimate(q.estimated_input_tokens, q.max_output_tokens, self.cost)

    @property
    def charges(self) -> tuple[Charge, ...]:
        return tuple([Charge._make(c) for c in self._charges])

    @property
    def result(self) -> CheckResult | None:
        """The allowed answer a replay of the same request id gets, where it was kept."""
        if self.action is None:
            return None
        return CheckResult(True, self.action, self.id, None, self.downgrade_model)

    def with_charges(self, charges: Iterable[ChargeRow]) -> Reservation:
        return Reservation(
            self.id,
            self.request,
            self.cost,
            self.created_at,
            self.expires_at,
            charges,
            self.action,
            self.downgrade_model,
        )

    def to_row(self) -> list[Any]:
        """A flat JSON-able list: reservations are written behind, many a second.

        Only what a replayed answer needs of the result is kept (no per-limit part).
        """
        q = self.request
        return [
            self.id,
            q.tenant,
            q.project,
            q.model,
            q.api_key_id,
            q.feature,
            q.estimated_input_tokens,
            q.max_output_tokens,
            q.request_id,
            self.cost,
            self.created_at,
            self.expires_at,
            [[limit, list(key), amount, period] for limit, key, amount, period in self._charges],
            self.action,
            self.downgrade_model,
            q.org,
            q.plan,
            q.internal,
        ]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Reservation:
        (rid, tenant, project, model, api_key_id, feature, inp, out, request_id) = row[:9]
        cost, created, expires, charges, action, downgrade = row[9:15]
        # Rows written before organisations existed end at the downgrade.
        org = row[15] if len(row) > 15 else None
        plan = row[16] if len(row) > 16 else None
        internal = bool(row[17]) if len(row) > 17 else False
        request = CheckRequest(
            tenant,
            project,
            model,
            api_key_id,
            feature,
            int(inp),
            int(out),
            request_id,
            org,
            plan,
            internal,
        )
        return cls(
            rid,
            request,
            cost,
            float(created),
            float(expires),
            [(c[0], tuple(c[1]), float(c[2]), c[3]) for c in charges],
            action,
            None if action is None else downgrade,
        )


@dataclass(frozen=True, slots=True)
class Notice:
    """Something hooks are told about. ``mark`` (when set) must fire only once, ever."""

    kind: NoticeKind
    time: float
    limit: str | None = None
    key: Mapping[str, str] = field(default_factory=dict)
    tenant: str | None = None
    threshold: float | None = None
    used: float | None = None
    limit_value: float | None = None
    window: str | None = None
    request_id: str | None = None
    reservation_id: str | None = None
    mark: str | None = None
    projected: float | None = None
    """``forecast_exceeded``: the usage projected at the end of the window..."""
    projected_at: float | None = None
    """...and when it is projected to reach the limit."""
    detail: Mapping[str, Any] | None = None
    """A notice not about a limit (``reconciliation_drift``): its fields, sent as they are."""

    def to_json(self) -> dict[str, Any]:
        if self.detail is not None:
            return {"event": self.kind, "time": iso_time(self.time), **self.detail}
        forecast = {}
        if self.kind == "forecast_exceeded":
            at = self.projected_at
            forecast = {
                "projected": self.projected,
                "projected_at": None if at is None else iso_time(at),
            }
        return {
            "event": self.kind,
            "time": iso_time(self.time),
            "limit": self.limit,
            "key": dict(self.key),
            "tenant": self.tenant,
            "threshold": self.threshold,
            "used": self.used,
            "limit_value": self.limit_value,
            "window": self.window,
            "request_id": self.request_id,
            "reservation_id": self.reservation_id,
            **forecast,
        }
