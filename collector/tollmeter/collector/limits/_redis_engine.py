"""The limit engine on Redis: one set of limits shared by every collector replica.

The same rules, windows and answers as :class:`LimitEngine`; the state (counters,
open reservations, fired-threshold marks, answers by request id) lives in Redis and
changes only inside the scripts of :mod:`._redis_scripts`, each atomic:

- a check reserves on every matching counter or on none, and records its answer under
  (tenant, request id) in the same script, so a retried check reserves once on any
  replica;
- a span or reconcile settles a reservation by deleting it in the script that charges
  the actual usage: only one replica can settle it;
- expiry is a sorted set of open reservations by expiry time; any replica claims a due
  reservation by removing it from the set, so the reservations of a replica that died
  expire all the same;
- a threshold fires on the replica whose ``SET NX`` of its mark succeeds.

Time is the replica's clock (keep replicas on NTP). When Redis cannot be reached a check
is answered by ``redis_unavailable`` (allowed, or denied) with a ``reason``; usage that
arrives meanwhile is in the ledger but not on the limits.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.errors import LimitStateError
from tollmeter.collector.limits import _redis_scripts as scripts
from tollmeter.collector.limits._config import LimitsConfig
from tollmeter.collector.limits._decide import EPSILON, PlanEntry, allowance, denial
from tollmeter.collector.limits._engine import _fingerprint
from tollmeter.collector.limits._marks import ThresholdMarks
from tollmeter.collector.limits._model import (
    Changes,
    Charge,
    CheckRequest,
    CheckResult,
    CounterKey,
    LimitStatus,
    Notice,
    Reservation,
)
from tollmeter.collector.limits._redis_link import KeySpace, RedisLink
from tollmeter.collector.limits._rules import (
    CostEstimator,
    Counter,
    Estimate,
    InFlight,
    Rule,
    TokenBucket,
    attributes_of_event,
    rules_by_name,
)
from tollmeter.collector.limits._status import tenant_status

__all__ = ["RedisLimitEngine"]

logger = logging.getLogger(__name__)

_EXPIRY_BATCH = 200
MAX_IN_FLIGHT_KEYS = 10_000
"""Keys of one concurrency limit listed for the metrics (bounds a scrape)."""
_CALENDAR_SLACK_S = 86400.0
"""A calendar counter outlives its period by this much (clock skew between replicas)."""


def _num(value: float) -> str:
    return repr(float(value))


def _encode(result: CheckResult) -> list[Any]:
    return [*result[:6], [list(s) for s in result.limits], result.reason]


def _decode(row: list[Any]) -> CheckResult:
    limits = tuple(LimitStatus(*s) for s in row[6])
    return CheckResult(row[0], row[1], row[2], row[3], row[4], row[5], limits, row[7])


class RedisLimitEngine:
    """The interface of :class:`LimitEngine`; thread-safe, state in Redis."""

    def __init__(
        self,
        config: LimitsConfig,
        *,
        clock: Callable[[], float] = time.time,
        cost_estimator: CostEstimator | None = None,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self._link = RedisLink(config.storage, timeout_s=config.redis_timeout_s)
        self._keys = KeySpace(config.redis_key_prefix)
        client = self._link.client
        self._check = client.register_script(scripts.CHECK)
        self._settle = client.register_script(scripts.SETTLE)
        self._drop = client.register_script(scripts.DROP)
        self._clock = clock
        self._cost_estimator = cost_estimator
        self._new_id = new_id or (lambda: os.urandom(16).hex())
        self._lock = threading.Lock()
        self._marks = ThresholdMarks()
        self._counts = {"allowed": 0, "denied": 0, "expired": 0}
        self._set_rules(config)

    def _set_rules(self, config: LimitsConfig) -> None:
        self._config = config
        self._rules = tuple(Rule(c) for c in config.rules)
        self._by_name = rules_by_name(self._rules)
        self._prices_needed = any(r.config.measure == "cost" for r in self._rules)

    @property
    def config(self) -> LimitsConfig:
        return self._config

    @property
    def unavailable(self) -> bool:
        return self._link.down

    def _params(self, rule: Rule, now: float) -> list[str]:
        """kind, capacity, rate, period start and fingerprint of a rule's counters."""
        window = rule.window
        if isinstance(window, TokenBucket):
            return ["r", _num(window.capacity), _num(window.rate), "0", _fingerprint(rule)]
        if isinstance(window, InFlight):
            return ["f", _num(window.capacity), "0", "0", _fingerprint(rule)]
        start = window.period_of(now) or 0.0
        return ["c", _num(window.capacity), "0", _num(start), _fingerprint(rule)]

    def _life_ms(self, rule: Rule, now: float) -> str:
        window = rule.window
        if isinstance(window, TokenBucket):
            return str(int(window.per_s * 2000) + 1000)
        if isinstance(window, InFlight):
            # Outlives every reservation holding a slot, as the reservations themselves do.
            return str(int(self._config.reservation_ttl_s * 2000) + 1000)
        end = window.reset_at(window.new_counter(now), now)
        return str(int((end - now + _CALENDAR_SLACK_S) * 1000))

    # -- checks -------------------------------------------------------------------------

    def check(
        self, request: CheckRequest, *, dry_run: bool = False
    ) -> tuple[CheckResult, list[Notice]]:
        """Reserve the request's estimate against every matching limit, all or nothing."""
        rules, config = self._rules, self._config
        now = self._clock()
        attrs = request.attributes()
        matched = [(r, r.key(attrs)) for r in rules if r.matches(attrs)]
        if not matched:
            self._count(True, dry_run)
            return allowance([], now, None), []
        if not self._link.usable():
            return self._unreachable(), []
        cost = None
        if self._prices_needed and self._cost_estimator is not None and request.model:
            cost = self._cost_estimator(
                request.model, request.estimated_input_tokens, request.max_output_tokens
            )
        estimate = Estimate(request.estimated_input_tokens, request.max_output_tokens, cost)
        amounts = [r.estimate_amount(estimate) for r, _ in matched]
        rid = self._new_id()
        ttl = config.reservation_ttl_s
        reservation = Reservation(
            id=rid,
            request=request,
            cost=cost,
            created_at=now,
            expires_at=now + ttl,
            charges=[
                Charge(r.name, k, a, r.window.period_of(now))
                for (r, k), a in zip(matched, amounts, strict=True)
            ],
        )
        tenant = request.tenant
        decision_key = self._keys.decision(tenant, request.request_id or "")
        pending = json.dumps({"until": now + ttl, "pending": rid})
        args = [
            _num(now),
            "1" if dry_run else "0",
            "1" if request.request_id is not None else "0",
            json.dumps(reservation.to_row()),
            _num(now + ttl),
            str(int(ttl * 2000) + 1000),
            str(int(ttl * 1000) + 1),
            tenant,
            pending,
            str(len(matched)),
        ]
        counter_keys = []
        for (rule, key), amount in zip(matched, amounts, strict=True):
            hard = "0" if rule.config.action in ("alert", "downgrade") else "1"
            args += [*self._params(rule, now), _num(amount), hard, self._life_ms(rule, now)]
            args.append(self._keys.counter_member(rule, key))
            counter_keys.append(self._keys.counter(rule, key))
        keys = [
            decision_key,
            self._keys.reservation(tenant, rid),
            self._keys.open(tenant),
            self._keys.expiry,
            self._keys.owner(rid),
            self._keys.counters(tenant),
            *counter_keys,
        ]
        try:
            with self._link.reach() as client:
                reply = self._check(keys=keys, args=args, client=client)
                if reply[0] == "dup":
                    return self._replay(client, decision_key, json.loads(reply[1])), []
                plan: list[PlanEntry] = []
                for i, ((rule, key), amount) in enumerate(zip(matched, amounts, strict=True)):
                    counter = Counter(float(reply[2 * i + 1]), float(reply[2 * i + 2]))
                    fits = amount <= rule.window.available(counter) + EPSILON
                    plan.append((rule, key, counter, amount, fits))
                denied = denial(request, plan, now)
                if denied is not None:
                    result, notices = denied[0], [denied[1]]
                else:
                    notices = []
                    for rule, key, counter, amount, _ in plan:
                        if not dry_run:
                            rule.window.charge(counter, amount)
                            notices += self._crossed(rule, key, counter, now)
                    result = allowance(plan, now, None if dry_run else rid)
                if request.request_id is not None and not dry_run:
                    life = ttl
                    if not result.allowed and result.retry_after_s is not None:
                        life = min(ttl, result.retry_after_s)
                    stored = json.dumps({"until": now + life, "result": _encode(result)})
                    client.set(decision_key, stored, px=max(1, int(life * 1000)))
                notices = self._claim(client, notices, plan)
        except LimitStateError as exc:
            if self._link.down:
                return self._unreachable(), []
            raise exc
        self._count(result.allowed, dry_run)
        return result, notices

    def _replay(self, client: Any, key: str, stored: dict[str, Any]) -> CheckResult:
        """The answer already given to this request id (on any replica)."""
        for _ in range(50):
            if "result" in stored:
                return _decode(stored["result"])
            # The replica that reserved is still writing its full answer.
            time.sleep(0.01)
            raw = client.get(key)
            if raw is None:
                break
            stored = json.loads(raw)
        return CheckResult(True, "allow", reservation_id=stored.get("pending"))

    def _unreachable(self) -> CheckResult:
        if self._config.redis_unavailable == "closed":
            return CheckResult(
                False, "block", retry_after_s=1.0, reason="limits storage unavailable"
            )
        return CheckResult(True, "allow", reason="limits storage unavailable")

    def _count(self, allowed: bool, dry_run: bool) -> None:
        if not dry_run:
            with self._lock:
                self._counts["allowed" if allowed else "denied"] += 1

    def _crossed(
        self, rule: Rule, key: tuple[str, ...], counter: Counter, now: float
    ) -> list[Notice]:
        with self._lock:
            return self._marks.crossed(rule, key, counter, now)

    def _claim(self, client: Any, notices: list[Notice], plan: Sequence[PlanEntry]) -> list[Notice]:
        """Keep the threshold notices whose mark this replica set first (``SET NX``)."""
        marked = [n for n in notices if n.mark is not None]
        if not marked:
            return notices
        by_name = {rule.name: (rule, key) for rule, key, *_ in plan}
        pipe = client.pipeline(transaction=False)
        for n in marked:
            rule, key = by_name[n.limit or ""]
            life = int(rule.window.retention_s * 1000) + 1000
            pipe.set(self._keys.mark(rule, key, n.mark or ""), "1", nx=True, px=life)
        won = {n.mark for n, ok in zip(marked, pipe.execute(), strict=True) if ok}
        return [n for n in notices if n.mark is None or n.mark in won]

    def claim(self, notices: Iterable[Notice]) -> list[Notice]:
        """The notices whose mark this call set first in Redis (``SET NX``), across
        replicas and restarts; none while Redis is unreachable (they fire later)."""
        marked: list[tuple[Notice, str, int]] = []
        free: list[Notice] = []
        for n in notices:
            rule = self._by_name.get(n.limit or "")
            if n.mark is None or rule is None:
                free.append(n)
                continue
            key = tuple(n.key.get(d, "") for d in rule.config.group_by)
            life = int(rule.window.retention_s * 1000) + 1000
            marked.append((n, self._keys.mark(rule, key, n.mark), life))
        if not marked:
            return free
        try:
            with self._link.reach() as client:
                pipe = client.pipeline(transaction=False)
                for _, mark_key, life in marked:
                    pipe.set(mark_key, "1", nx=True, px=life)
                won = pipe.execute()
        except LimitStateError:
            return free
        return free + [n for (n, _, _), ok in zip(marked, won, strict=True) if ok]

    # -- usage --------------------------------------------------------------------------

    def record_usage(self, events: Iterable[UsageEvent]) -> list[Notice]:
        """Count committed usage: replace reservations by actual usage, charge the rest."""
        work = [e for e in events if e.usage_source != "reservation"]
        if not work or not self._link.usable():
            return []
        now = self._clock()
        by_name = self._by_name
        notices: list[Notice] = []
        try:
            with self._link.reach() as client:
                named = [e for e in work if e.reservation_id is not None]
                pipe = client.pipeline(transaction=False)
                for e in named:
                    pipe.hget(self._keys.reservation(e.tenant_id, e.reservation_id or ""), "d")
                rows = dict(zip((id(e) for e in named), pipe.execute(), strict=True))
                pipe = client.pipeline(transaction=False)
                plans: list[list[tuple[Rule, tuple[str, ...]]]] = []
                for event in work:
                    row = rows.get(id(event))
                    reserved = Reservation.from_row(json.loads(row)) if row else None
                    keys, args, targets = self._settle_call(event, reserved, now, by_name)
                    self._settle(keys=keys, args=args, client=pipe)
                    plans.append(targets)
                for targets, reply in zip(plans, pipe.execute(), strict=True):
                    for i, (rule, key) in enumerate(targets):
                        if reply[2 * i + 1] != "":
                            counter = Counter(float(reply[2 * i + 1]), float(reply[2 * i + 2]))
                            notices += self._crossed(rule, key, counter, now)
                plan = [(r, k, Counter(0, 0), 0.0, True) for t in plans for r, k in t]
                return self._claim(client, notices, plan)
        except LimitStateError:
            logger.debug("usage of %d events not counted on the limits", len(work))
            return []

    def _settle_call(
        self,
        event: UsageEvent,
        reserved: Reservation | None,
        now: float,
        by_name: dict[str, Rule],
    ) -> tuple[list[str], list[str], list[tuple[Rule, tuple[str, ...]]]]:
        attrs = attributes_of_event(event)
        event_time = event.event_time_ns / 1e9
        targets: dict[CounterKey, Charge | None] = {}
        # The rules the event matches are those of its tenant's plan: they settle their
        # counters, the others by name.
        matched: dict[CounterKey, Rule] = {}
        for candidate in self._rules:
            if candidate.matches(attrs):
                ck = (candidate.name, candidate.key(attrs))
                targets[ck] = None
                matched[ck] = candidate
        for c in reserved.charges if reserved is not None else ():
            targets[(c.limit, c.key)] = c
        tenant = event.tenant_id
        rid = event.reservation_id or ""
        keys = [
            self._keys.reservation(tenant, rid) if reserved else self._keys.nothing,
            self._keys.open(tenant),
            self._keys.expiry,
            self._keys.owner(rid) if reserved else self._keys.nothing,
            self._keys.counters(tenant),
        ]
        args = [_num(now), "0"]
        chosen: list[tuple[Rule, tuple[str, ...]]] = []
        for (name, key), charge in targets.items():
            rule = matched.get((name, key)) or by_name.get(name)
            if rule is None:
                continue
            actual = rule.actual_amount(event)
            current = rule.window.period_of(now)
            in_period = current is None or rule.window.period_of(event_time) == current
            if current is None or (charge is not None and charge.period == current):
                if_settled = _num(actual - (charge.amount if charge is not None else 0.0))
            else:
                if_settled = _num(actual) if in_period else ""
            if_not = _num(actual) if (name, key) in matched and in_period else ""
            args += [*self._params(rule, now), if_settled, if_not, self._life_ms(rule, now)]
            args.append(self._keys.counter_member(rule, key))
            keys.append(self._keys.counter(rule, key))
            chosen.append((rule, key))
        args[1] = str(len(chosen))
        return keys, args, chosen

    # -- reservations -------------------------------------------------------------------

    def _load(self, client: Any, reservation_id: str) -> tuple[str, Reservation, bool] | None:
        """(key, reservation, expired) of a reservation named by id alone."""
        tenant = client.get(self._keys.owner(reservation_id))
        if tenant is None:
            return None
        key = self._keys.reservation(tenant, reservation_id)
        data, expired = client.hmget(key, "d", "x")
        if data is None:
            return None
        return key, Reservation.from_row(json.loads(data)), expired == "1"

    def reservation(self, reservation_id: str) -> Reservation | None:
        try:
            with self._link.reach() as client:
                found = self._load(client, reservation_id)
        except LimitStateError:
            return None
        return None if found is None or found[2] else found[1]

    def release(self, reservation_id: str) -> bool:
        """Give a reservation's estimate back (the call never happened)."""
        try:
            with self._link.reach() as client:
                found = self._load(client, reservation_id)
                if found is None or found[2]:
                    return False
                return self._drop_one(client, found[0], found[1], "release") == 1
        except LimitStateError:
            return False

    def _drop_one(self, client: Any, key: str, r: Reservation, mode: str) -> int:
        counter_keys = json.loads(client.hget(key, "k") or "[]")
        args = [mode, str(int(self._config.reservation_ttl_s * 1000) + 1000)]
        for c in r.charges:
            args += ["" if c.period is None else _num(c.period), _num(c.amount)]
        keys = [key, self._keys.expiry, self._keys.open(r.request.tenant)]
        keys += [self._keys.owner(r.id), *counter_keys]
        return int(self._drop(keys=keys, args=args, client=client))

    # -- expiry -------------------------------------------------------------------------

    def expire_due(self) -> tuple[list[Reservation], list[Notice]]:
        """Claim reservations past their TTL, whichever replica made them.

        With ``charge`` the estimate stays on the counters, the reservation is kept aside
        for a late span, and the caller appends a ``reservation`` usage event for each.
        """
        now = self._clock()
        with self._lock:
            self._marks.prune(self._by_name, now)
        mode = "charge" if self._config.expired_reservations == "charge" else "refund"
        due: list[Reservation] = []
        if not self._link.usable():
            return due, []
        try:
            with self._link.reach() as client:
                members = [
                    str(m)
                    for m in client.zrangebyscore(
                        self._keys.expiry, "-inf", _num(now), start=0, num=_EXPIRY_BATCH
                    )
                ]
                for key in members:
                    data = client.hget(key, "d")
                    if data is None:
                        client.zrem(self._keys.expiry, key)
                        continue
                    r = Reservation.from_row(json.loads(data))
                    if self._drop_one(client, key, r, mode) == 1:
                        due.append(r)
        except LimitStateError:
            logger.debug("reservation expiry postponed: limits storage unavailable")
        with self._lock:
            self._counts["expired"] += len(due)
        notices = [
            Notice(
                kind="reservation_expired",
                time=now,
                tenant=r.request.tenant,
                request_id=r.request.request_id,
                reservation_id=r.id,
            )
            for r in due
        ]
        return due, notices

    def requeue(self, reservations: Iterable[Reservation]) -> None:
        """Put expired reservations back (their billing failed); they expire again later."""
        with self._link.reach() as client:
            pipe = client.pipeline(transaction=True)
            for r in reservations:
                key = self._keys.reservation(r.request.tenant, r.id)
                pipe.hset(key, "x", "0")
                pipe.zadd(self._keys.expiry, {key: r.expires_at})
                pipe.zadd(self._keys.open(r.request.tenant), {key: r.expires_at})
                # Open again, so in flight again: the expiry gave its slots back.
                for c in r.charges:
                    rule = self._by_name.get(c.limit)
                    if rule is not None and isinstance(rule.window, InFlight):
                        pipe.hincrbyfloat(self._keys.counter(rule, c.key), "l", c.amount)
            pipe.execute()

    # -- configuration and status -------------------------------------------------------

    def set_config(self, config: LimitsConfig) -> None:
        """Swap the rules. Counters are carried over by the scripts when next written."""
        with self._lock:
            self._set_rules(config)

    def in_flight(self) -> list[tuple[str, dict[str, str], float]]:
        """(limit, key, calls in flight) of every concurrency counter not at rest, on
        every replica: a ``SCAN`` per concurrency limit, at most ``MAX_IN_FLIGHT_KEYS``
        keys each; empty while Redis is unreachable."""
        rules = [r for r in self._rules if isinstance(r.window, InFlight)]
        out: list[tuple[str, dict[str, str], float]] = []
        try:
            with self._link.reach() as client:
                for rule in rules:
                    names: list[str] = []
                    for name in client.scan_iter(self._keys.counter_pattern(rule), count=1000):
                        names.append(str(name))
                        if len(names) >= MAX_IN_FLIGHT_KEYS:
                            break
                    pipe = client.pipeline(transaction=False)
                    for name in names:
                        pipe.hget(name, "l")
                    for name, level in zip(names, pipe.execute(), strict=True):
                        key = self._keys.counter_key(rule, name)
                        if key is not None and level is not None and float(level) > 0:
                            keymap = dict(zip(rule.config.group_by, key, strict=True))
                            out.append((rule.name, keymap, float(level)))
        except LimitStateError:
            return []
        return out

    def counts(self) -> dict[str, int]:
        """Checks allowed and denied and reservations expired by this replica, since its
        start; reservations open on every replica (-1 while Redis is unreachable)."""
        try:
            with self._link.reach() as client:
                open_count = int(client.zcard(self._keys.expiry))
        except LimitStateError:
            open_count = -1
        with self._lock:
            return {
                "checks_allowed": self._counts["allowed"],
                "checks_denied": self._counts["denied"],
                "reservations_open": open_count,
                "reservations_expired": self._counts["expired"],
            }

    def status(self, tenant: str, plan: str | None = None) -> dict[str, Any]:
        """Every limit counter of ``tenant``: remaining, and what is blocked until when;
        plan limits at the value of ``plan``, the tenant's."""
        now = self._clock()
        by_name = self._by_name if plan is None else rules_by_name(self._rules, plan)
        with self._link.reach() as client:
            set_key = self._keys.counters(tenant)
            slots = []
            for member in client.smembers(set_key):
                name, values = json.loads(member)
                rule = by_name.get(name)
                if rule is not None and len(values) == len(rule.config.group_by):
                    slots.append((member, rule, tuple(values)))
            pipe = client.pipeline(transaction=False)
            for _, rule, key in slots:
                pipe.hmget(self._keys.counter(rule, key), "l", "s", "fp", "k")
            entries = []
            for (member, rule, key), fields in zip(slots, pipe.execute(), strict=True):
                if fields[0] is None:
                    client.srem(set_key, member)  # gone at rest, as idle counters are
                    continue
                entries.append((rule, key, _current(rule, fields, now)))
            keys = [str(k) for k in client.zrange(self._keys.open(tenant), 0, -1)]
            rows = [client.hget(k, "d") for k in keys]
        mine = [Reservation.from_row(json.loads(row)) for row in rows if row is not None]
        reserved: dict[tuple[str, tuple[str, ...]], float] = {}
        for r in mine:
            for charge in r.charges:
                slot = (charge.limit, charge.key)
                reserved[slot] = reserved.get(slot, 0.0) + charge.amount
        entries.sort(key=lambda e: (e[0].name, e[1]))
        return tenant_status(tenant, entries, now, len(mine), reserved)

    # -- persistence: nothing kept in the replica ---------------------------------------

    def drain_changes(self) -> Changes:
        return Changes()

    def restore(
        self,
        counters: Iterable[tuple[CounterKey, float, float, str]],
        reservations: Iterable[tuple[Reservation, bool]],
        marks: Iterable[str],
    ) -> None:
        """Nothing to load: the state is in Redis."""

    def close(self) -> None:
        self._link.close()


def _current(rule: Rule, fields: Sequence[str | None], now: float) -> Counter:
    """A stored counter brought up to ``now``, read as the scripts would carry it over."""
    level, stamp, fingerprint, kind = fields
    counter = Counter(float(level or 0.0), float(stamp or 0.0))
    bucket = isinstance(rule.window, TokenBucket)
    changed = fingerprint != _fingerprint(rule)
    if changed and kind != _kind(rule):
        return rule.window.new_counter(now)
    rule.window.advance(counter, now)
    if changed and bucket:
        counter.level = min(counter.level, rule.window.capacity)
    return counter


def _kind(rule: Rule) -> str:
    """How the scripts name a rule's counter kind."""
    if isinstance(rule.window, TokenBucket):
        return "r"
    return "f" if isinstance(rule.window, InFlight) else "c"
