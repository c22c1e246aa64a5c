"""The limits service: engine + durable state + hooks + ledger, with one background thread.

The thread writes changed state behind (every ``state_flush_interval``) and expires
reservations past their TTL, charging them to the ledger as ``reservation`` usage so a
client that never reports cannot dodge a quota.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tollmeter.collector._organisations import OrganisationsConfig
from tollmeter.collector._records import UsageEvent, fill_in
from tollmeter.collector.errors import LimitStateError
from tollmeter.collector.limits._config import HooksConfig, LimitsConfig
from tollmeter.collector.limits._decisions import RecentDecisions
from tollmeter.collector.limits._engine import LimitEngine
from tollmeter.collector.limits._forecaster import Forecaster, KeyForecast, UsageSource
from tollmeter.collector.limits._hooks import HookDispatcher, HookStats
from tollmeter.collector.limits._model import CheckRequest, CheckResult, Notice, Reservation
from tollmeter.collector.limits._plan_book import PlanBook
from tollmeter.collector.limits._plans import PlansConfig, with_plan_rules
from tollmeter.collector.limits._policy import policy_text
from tollmeter.collector.limits._rules import CostEstimator, Rule
from tollmeter.collector.limits._state import LimitStateStore
from tollmeter.semconv import Usage
from tollmeter.semconv.errors import ConfigurationError, TollmeterError

if TYPE_CHECKING:
    from tollmeter.collector.limits._redis_engine import RedisLimitEngine

__all__ = ["LimitsService", "reservation_event_id"]

logger = logging.getLogger(__name__)


class _Appended(Protocol):
    @property
    def committed(self) -> list[UsageEvent]: ...


class _Ledger(Protocol):
    def append(self, events: Sequence[UsageEvent]) -> _Appended: ...


def reservation_event_id(reservation_id: str, kind: str) -> str:
    """Event id of usage the limits service writes itself: the same reservation always
    yields the same id, so a retry after a crash is dropped by the ledger's dedupe."""
    return hashlib.sha256(f"tollmeter.reservation:{kind}:{reservation_id}".encode()).hexdigest()[
        :32
    ]


class LimitsService:
    """Everything the check API, the pipeline subscription and the CLI need.

    ``ledger`` receives the usage the service writes itself (expired reservations,
    gateway reconciles): a ``Ledger``, or an adapter that commits through the ingest
    pipeline (then ``ledger_notifies=True``: the pipeline reports the commit back
    through ``on_committed``).
    """

    def __init__(
        self,
        limits: LimitsConfig,
        hooks: HooksConfig | None = None,
        *,
        ledger: _Ledger | None = None,
        state_path: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        cost_estimator: CostEstimator | None = None,
        collector_id: str | None = None,
        expiry_interval_s: float = 1.0,
        ledger_notifies: bool = False,
        usage: UsageSource | None = None,
        organisations: OrganisationsConfig | None = None,
        plans: PlanBook | None = None,
    ) -> None:
        self.engine: LimitEngine | RedisLimitEngine
        self._store: LimitStateStore | None = None
        # The limits as configured; the engines enforce them with the plans' rules added.
        self.limits = limits
        self.plans = plans or PlanBook(PlansConfig())
        enforced = with_plan_rules(limits, self.plans.plans)
        if limits.storage == "memory":
            self.engine = LimitEngine(enforced, clock=clock, cost_estimator=cost_estimator)
            self._store = LimitStateStore(state_path)
        else:
            # Shared state: nothing to load, nothing written behind.
            self.engine = _redis_engine(enforced, clock=clock, cost_estimator=cost_estimator)
        self.hooks = HookDispatcher(hooks or HooksConfig())
        self.decisions = RecentDecisions()
        self._ledger = ledger
        # A pipeline calls ``on_committed`` itself for what it commits; a bare ledger does not.
        self._ledger_notifies = ledger_notifies
        self._collector_id = collector_id
        self._expiry_interval_s = expiry_interval_s
        self._clock = clock
        # Checked before the engine (the prepaid grants' overage gate); a denial is final.
        self.gate: Callable[[CheckRequest], CheckResult | None] | None = None
        self._org_of = (organisations or OrganisationsConfig()).org_of_tenant
        # Usage history for the forecasts: the ledger's query interface.
        self._forecaster = (
            None
            if usage is None
            else Forecaster(usage, org_of=self._org_of, plan_of=self.plans.plan_of)
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._forecast_thread: threading.Thread | None = None
        self._closed = False
        if self._store is not None:
            counters, reservations, marks = self._store.load()
            self.engine.restore(counters, reservations, marks)

    def start(self) -> None:
        if self._thread is not None:
            return
        self.hooks.start()
        self._thread = threading.Thread(target=self._run, name="tollmeter-limits", daemon=True)
        self._thread.start()
        if self._forecaster is not None:
            self._forecast_thread = threading.Thread(
                target=self._run_forecasts, name="tollmeter-forecasts", daemon=True
            )
            self._forecast_thread.start()

    def check(self, request: CheckRequest, *, dry_run: bool = False) -> CheckResult:
        org = self._org_of.get(request.tenant)
        plan = self.plans.plan_of(request.tenant)
        if org != request.org or plan != request.plan:
            request = request.owned_by(org, plan)
        gate = self.gate
        denied = None if gate is None else gate(request)
        if denied is not None:
            return denied
        result, notices = self.engine.check(request, dry_run=dry_run)
        self._notify(notices)
        return result

    def annotate(self, events: list[UsageEvent]) -> list[UsageEvent]:
        """Pipeline annotator, before the commit: each event that names a reservation of
        its own tenant gets that reservation's policy path (``_policy.py``), and every
        event its tenant's plan, filled in in place (``fill_in``)."""
        plans = self.plans if self.plans.plans.limits else None
        for event in events:
            if plans is not None and event.plan is None:
                fill_in(event, "plan", plans.plan_of(event.tenant_id))
            rid = event.reservation_id
            if rid is None or event.policy is not None:
                continue
            reservation = self.engine.reservation(rid)
            # A span naming another tenant's reservation learns nothing of that tenant.
            if reservation is None or reservation.request.tenant != event.tenant_id:
                continue
            fill_in(event, "policy", policy_text(reservation))
        return events

    def on_committed(self, events: Sequence[UsageEvent]) -> None:
        """Pipeline subscriber: count committed usage. Never raises into the pipeline."""
        try:
            self._notify(self.engine.record_usage(events))
        except Exception:
            logger.exception("limits could not count %d usage events", len(events))

    def reconcile(self, reservation_id: str, usage: dict[str, Any]) -> UsageEvent | None:
        """Record the actual usage of a reserved call reported by a gateway.

        Returns the usage event written to the ledger, or ``None`` when the reservation
        is unknown (already reconciled, released, or never made). Raises ``InvalidUsage``
        when the counts contradict each other (more cached tokens than input tokens...).
        """
        reservation = self.engine.reservation(reservation_id)
        if reservation is None:
            return None
        event = _usage_event(
            reservation,
            event_id=reservation_event_id(reservation_id, "reconcile"),
            source="provider",
            collector_id=self._collector_id,
            **usage,
        )
        # The parts must fit their totals, as for a span: raises InvalidUsage otherwise.
        Usage(
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            cache_read_input_tokens=event.cache_read_input_tokens,
            cache_write_input_tokens=event.cache_write_input_tokens,
            reasoning_output_tokens=event.reasoning_output_tokens,
        )
        if self._ledger is not None:
            committed = self._ledger.append([event]).committed
            if not committed:
                return None
            event = committed[0]
            if self._ledger_notifies:
                return event
        self.on_committed([event])
        return event

    def release(self, reservation_id: str) -> bool:
        return self.engine.release(reservation_id)

    def reload(self, limits: LimitsConfig, plans: PlansConfig | None = None) -> None:
        """Enforce ``limits`` (and ``plans``, when given: their templates and the tenants
        the file puts on them) from the next check on. Counters of every limit whose
        window is unchanged are kept, plan limits' too: a tenant moved to another plan by
        the file keeps what it used this period, as after a move through the API."""
        started = self.limits
        # Where the state lives is chosen at start; a reload changes the rules only.
        limits = dataclasses.replace(
            limits,
            storage=started.storage,
            redis_unavailable=started.redis_unavailable,
            redis_key_prefix=started.redis_key_prefix,
            redis_timeout_s=started.redis_timeout_s,
        )
        self.limits = limits
        if plans is None:
            self.engine.set_config(with_plan_rules(limits, self.plans.plans))
            logger.info("limits reloaded: %d rules", len(limits.rules))
            return
        # The rules first: a check in between meets the new templates under the old
        # assignments, never an assignment to a plan whose rules are not there yet.
        self.engine.set_config(with_plan_rules(limits, plans))
        self.plans.replace(plans)
        logger.info("limits reloaded: %d rules, %d plans", len(limits.rules), len(plans.limits))

    def status(self, tenant: str) -> dict[str, Any]:
        """The engine's view of the tenant, plan limits at its plan's values, each limit
        with its latest ``forecast`` (``null`` for limits without one: rolling windows,
        calls in flight)."""
        status = self.engine.status(tenant, self.plans.plan_of(tenant))
        forecaster = self._forecaster
        by_name = {r.name: r for r in self.engine.config.rules}
        for entry in status["limits"]:
            rule = by_name.get(entry["name"])
            forecast = None
            if forecaster is not None and rule is not None:
                key = tuple(entry["key"].get(d, "") for d in rule.group_by)
                forecast = forecaster.get(rule.name, key)
            entry["forecast"] = None if forecast is None else forecast.to_json()
        return status

    def refresh_forecasts(self) -> int:
        """Project every calendar limit now; returns how many keys are projected past
        their limit. Each fires ``forecast_exceeded`` once per window."""
        if self._forecaster is None:
            return 0
        rules = [Rule(c) for c in self.engine.config.rules]
        notices = self._forecaster.refresh(rules, self._clock())
        self._notify(self.engine.claim(notices))
        return len(notices)

    def forecasts(self) -> list[KeyForecast]:
        """The latest projections."""
        return [] if self._forecaster is None else self._forecaster.all()

    def gauges(self) -> dict[str, list[tuple[str, Mapping[str, str], float]]]:
        """Per limit and key, for the metrics: calls ``in_flight`` and the usage
        ``projected`` at the end of the window."""
        projected: list[tuple[str, Mapping[str, str], float]] = [
            (f.limit, f.keymap, f.forecast.projected) for f in self.forecasts()
        ]
        return {"in_flight": [*self.engine.in_flight()], "projected": projected}

    def hook_stats(self) -> dict[str, HookStats]:
        return self.hooks.stats()

    def flush(self) -> None:
        """Write changed state now (also done behind, every ``state_flush_interval``)."""
        if self._store is None:
            return
        try:
            self._store.save(self.engine.drain_changes())
        except LimitStateError:
            logger.exception("limit state not saved; retrying")

    def expire(self) -> int:
        """Expire due reservations now; returns how many expired.

        With ``expired_reservations: charge`` each becomes a ``reservation`` usage event
        in the ledger; when that write fails the reservations are put back and expire
        (and are billed) on a later round.
        """
        due, notices = self.engine.expire_due()
        if due and self._ledger is not None and self.engine.config.expired_reservations == "charge":
            events = [
                _usage_event(
                    r,
                    event_id=reservation_event_id(r.id, "expired"),
                    source="reservation",
                    collector_id=self._collector_id,
                )
                for r in due
            ]
            try:
                self._ledger.append(events)
            except TollmeterError:
                logger.exception("expired reservations not billed yet; retrying")
                self.engine.requeue(due)
                return 0
        self._notify(notices)
        return len(due)

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        self._stop.set()
        for thread in (self._thread, self._forecast_thread):
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        self.flush()
        self.hooks.close(max(0.0, deadline - time.monotonic()))
        if self._store is not None:
            self._store.close()
        if not isinstance(self.engine, LimitEngine):
            self.engine.close()

    def _notify(self, notices: list[Notice]) -> None:
        if not notices:
            return
        marks = [n.mark for n in notices if n.mark is not None]
        if marks and self._store is not None:
            try:
                self._store.add_marks(marks)
            except LimitStateError:
                logger.exception("threshold marks not saved; they may fire again after a restart")
        self.decisions.record(notices)
        for notice in notices:
            self.hooks.emit(notice)

    def _run(self) -> None:
        interval = self.engine.config.state_flush_interval_s
        next_expiry = time.monotonic()
        while not self._stop.wait(interval):
            self.flush()
            if time.monotonic() >= next_expiry:
                next_expiry = time.monotonic() + self._expiry_interval_s
                try:
                    self.expire()
                except Exception:
                    logger.exception("reservation expiry failed")

    def _run_forecasts(self) -> None:
        # A thread of its own: a slow ledger query must hold back neither the write-behind
        # of counters and reservations nor their expiry.
        while True:
            try:
                self.refresh_forecasts()
            except Exception:
                logger.exception("limit forecasts not refreshed")
            if self._stop.wait(self.engine.config.forecast_interval_s):
                return


def _usage_event(
    reservation: Reservation,
    *,
    event_id: str,
    source: str,
    collector_id: str | None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cache_read_input_tokens: int = 0,
    cache_write_input_tokens: int = 0,
    reasoning_output_tokens: int = 0,
    provider: str | None = None,
    operation: str = "chat",
    response_model: str | None = None,
    response_id: str | None = None,
    duration_s: float | None = None,
    status: str = "ok",
) -> UsageEvent:
    req = reservation.request
    inp = reservation.estimate.input_tokens if input_tokens is None else input_tokens
    out = reservation.estimate.output_tokens if output_tokens is None else output_tokens
    return UsageEvent(
        event_id=event_id,
        event_time_ns=int(reservation.created_at * 1e9),
        provider=provider or "unknown",
        operation=operation,
        tenant_id=req.tenant,
        input_tokens=inp,
        cache_read_input_tokens=cache_read_input_tokens,
        cache_write_input_tokens=cache_write_input_tokens,
        output_tokens=out,
        reasoning_output_tokens=reasoning_output_tokens,
        total_tokens=inp + out,
        usage_source="reservation" if source == "reservation" else "provider",
        project_id=req.project,
        api_key_id=req.api_key_id,
        feature=req.feature,
        request_id=req.request_id,
        request_model=req.model,
        response_model=response_model,
        response_id=response_id,
        duration_s=duration_s,
        status=status,
        reservation_id=reservation.id,
        collector_id=collector_id,
        org_id=req.org,
        policy=policy_text(reservation),
        plan=req.plan,
        internal=req.internal,
    )


def _redis_engine(limits: LimitsConfig, **options: Any) -> RedisLimitEngine:
    # Imported here: the redis client is the optional ``tollmeter[redis]`` extra.
    try:
        from tollmeter.collector.limits._redis_engine import RedisLimitEngine
    except ImportError as exc:
        raise ConfigurationError(
            f"limits.storage {limits.storage!r} needs the redis client: "
            f"pip install 'tollmeter[redis]' ({exc})"
        ) from None
    return RedisLimitEngine(limits, **options)
