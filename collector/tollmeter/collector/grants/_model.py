"""Prepaid grants as values, and the pure rules that burn, expire and roll them over.

A grant's balance is never stored: it is the sum of its movements (``granted`` +,
``consumed`` -, ``expired`` -, ``rolled_over`` - on the grant that ends and + on the one it
carries into, ``voided`` -). Usage beyond every active grant is an ``overage`` movement of
the tenant (no grant, ``grant_id`` ``""``), so grant balances never go below zero.

Usage burns its tenant's grants and its organisation's (the event's ``org_id``) of one unit
active at the event's time, as one pool: earliest expiry first (grants without expiry last),
then the highest priority, then the oldest. What a tenant burns of its organisation's grant
is recorded under the tenant, so each tenant's history shows it.

Expiry is a wall-clock time in the grant's IANA zone, turned into one instant when the grant
is made: the grant covers usage at ``t`` when ``effective_ns <= t < expires_ns``. A local time
that happens twice (clocks set back) means its first occurrence; one that never happens
(clocks set forward) means the instant that many minutes after the last time before the gap,
which is after the gap (``zoneinfo``'s ``fold=0`` rule).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tollmeter.collector.errors import GrantError

__all__ = [
    "MOVEMENT_KINDS",
    "OVERAGE",
    "Grant",
    "GrantError",
    "Movement",
    "MovementKind",
    "allocate",
    "burn_order",
    "local_instant_ns",
    "parse_rollover",
    "rollover_split",
    "successor",
    "usage_amount",
]

MovementKind = Literal["granted", "consumed", "expired", "rolled_over", "voided", "overage"]
MOVEMENT_KINDS: tuple[MovementKind, ...] = (
    "granted",
    "consumed",
    "expired",
    "rolled_over",
    "voided",
    "overage",
)
OVERAGE = ""
"""The ``grant_id`` of an overage movement: usage no grant covered."""

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Grant:
    grant_id: str
    tenant_id: str
    """The tenant it was granted to; ``""`` for a grant to an organisation."""
    amount: Decimal
    unit: str
    """``tokens`` (burnt by total tokens) or an ISO 4217 code (burnt by cost in it)."""
    effective_ns: int
    expires_ns: int | None
    time_zone: str
    priority: int = 0
    rollover: str = "none"
    """``none``, ``all`` or a decimal cap (the most carried into the next period)."""
    created_ns: int = 0
    voided_ns: int | None = None
    org_id: str | None = None
    """The organisation it was granted to, whose tenants' usage burns it."""

    @property
    def holder(self) -> str:
        return f"org:{self.org_id}" if self.org_id else f"tenant:{self.tenant_id}"

    def covers(self, time_ns: int) -> bool:
        """Whether usage at ``time_ns`` may burn this grant."""
        if self.voided_ns is not None or time_ns < self.effective_ns:
            return False
        return self.expires_ns is None or time_ns < self.expires_ns

    def check(self) -> Grant:
        """The grant itself when its fields are usable; raises ``GrantError`` otherwise."""
        if not _ID.match(self.grant_id):
            raise GrantError("grant_id must be 1-128 letters, digits, '_', '.', ':' or '-'")
        if bool(self.tenant_id) == bool(self.org_id):
            raise GrantError("a grant goes to one tenant or to one organisation")
        if not self.amount.is_finite() or self.amount <= 0:
            raise GrantError("amount must be a positive number")
        if self.unit != "tokens" and not _CURRENCY.match(self.unit):
            raise GrantError("unit must be 'tokens' or a currency code such as 'USD'")
        if self.unit == "tokens" and self.amount != self.amount.to_integral_value():
            raise GrantError("a grant of tokens must be a whole number")
        if self.expires_ns is not None and self.expires_ns <= self.effective_ns:
            raise GrantError("expires_at must be after effective_from")
        parse_rollover(self.rollover)
        return self


@dataclass(frozen=True, slots=True)
class Movement:
    tenant_id: str
    grant_id: str
    kind: MovementKind
    amount: Decimal
    """Signed: what the movement adds to the grant's balance."""
    unit: str
    source_id: str
    """What caused it (an event id, ``granted:<id>``...): unique with the grant id, so the
    same cause never moves the same grant twice."""
    time_ns: int


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise GrantError(f"unknown time zone {name!r}") from None


def local_instant_ns(text: str, time_zone: str) -> int:
    """The instant of a local ISO date-time (or date, meaning its midnight) in ``time_zone``;
    a time written with an offset is taken as written."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise GrantError(f"{text!r} is not an ISO 8601 date or date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(time_zone), fold=0)
    whole = moment.astimezone(timezone.utc).replace(microsecond=0)
    seconds = int((whole - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds())
    return seconds * 1_000_000_000 + moment.microsecond * 1000


def parse_rollover(text: str) -> Decimal | None:
    """The cap of a rollover policy: ``None`` for ``all``, ``0`` for ``none``."""
    if text == "all":
        return None
    if text == "none":
        return Decimal(0)
    try:
        cap = Decimal(text)
    except ArithmeticError:
        cap = Decimal(-1)
    if not cap.is_finite() or cap < 0:
        raise GrantError("rollover must be 'none', 'all' or a cap (a number at least 0)")
    return cap


def usage_amount(
    unit: str, total_tokens: int, cost: Decimal | None, currency: str | None
) -> Decimal:
    """What one usage event burns from grants of ``unit``: its tokens, or its cost when
    priced in that currency (unpriced usage burns no money)."""
    if unit == "tokens":
        return Decimal(total_tokens)
    if cost is None or currency != unit:
        return Decimal(0)
    return Decimal(cost)


def burn_order(grant: Grant) -> tuple[int, int, int, int, str]:
    expires = grant.expires_ns
    return (
        expires is None,
        expires or 0,
        -grant.priority,
        grant.created_ns,
        grant.grant_id,
    )


def allocate(
    balances: Iterable[tuple[Grant, Decimal]], amount: Decimal
) -> tuple[list[tuple[Grant, Decimal]], Decimal]:
    """Split ``amount`` over grants in burn order; (what each grant takes, the overage)."""
    left = amount
    taken: list[tuple[Grant, Decimal]] = []
    for grant, balance in sorted(balances, key=lambda gb: burn_order(gb[0])):
        if left <= 0:
            break
        part = min(balance, left)
        if part > 0:
            taken.append((grant, part))
            left -= part
    return taken, max(left, Decimal(0))


def rollover_split(grant: Grant, balance: Decimal) -> tuple[Decimal, Decimal]:
    """What an ending grant's ``balance`` becomes: (carried into its successor, expired)."""
    cap = parse_rollover(grant.rollover)
    carried = balance if cap is None else min(balance, cap)
    carried = max(carried, Decimal(0))
    return carried, balance - carried


def successor(grant: Grant, amount: Decimal) -> Grant:
    """The grant an ending one rolls ``amount`` into: the next period of the same length
    in local time (a month-long grant in Europe/Paris stays midnight to midnight)."""
    if grant.expires_ns is None:
        raise GrantError(f"grant {grant.grant_id!r} never ends, so it has no next period")
    tz = zone(grant.time_zone)
    start = _local(grant.effective_ns, tz)
    end = _local(grant.expires_ns, tz)
    wall_end = end.replace(tzinfo=None)
    following = wall_end + (wall_end - start.replace(tzinfo=None))
    return Grant(
        grant_id=f"{grant.grant_id[:120]}.next",
        tenant_id=grant.tenant_id,
        amount=amount,
        unit=grant.unit,
        effective_ns=grant.expires_ns,
        expires_ns=local_instant_ns(following.isoformat(), grant.time_zone),
        time_zone=grant.time_zone,
        priority=grant.priority,
        rollover=grant.rollover,
        created_ns=grant.expires_ns,
        org_id=grant.org_id,
    )


def _local(time_ns: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(time_ns // 1_000_000_000, tz)


def balances_of(grants: Sequence[Grant], movements: Iterable[Movement]) -> dict[str, Decimal]:
    """Each grant's balance: the sum of its movements."""
    totals = {g.grant_id: Decimal(0) for g in grants}
    for movement in movements:
        if movement.grant_id in totals:
            totals[movement.grant_id] += movement.amount
    return totals
