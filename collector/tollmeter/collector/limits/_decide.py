"""The answer to a check from where each matching limit stands: shared by both engines.

A plan lists, for every matching limit, its counter (brought up to ``now``), the amount
the request would put on it and whether that amount fits. Pure functions: the engines
call them with their counters, under their lock or after their script.
"""

from __future__ import annotations

from collections.abc import Sequence

from tollmeter.collector.limits._model import CheckRequest, CheckResult, Decision, Notice
from tollmeter.collector.limits._rules import Counter, Rule
from tollmeter.collector.limits._status import counter_status

__all__ = ["EPSILON", "PlanEntry", "allowance", "denial"]

EPSILON = 1e-9
SOFT_ACTIONS = ("alert", "downgrade")
"""Actions that let a request pass its limit."""

PlanEntry = tuple[Rule, tuple[str, ...], Counter, float, bool]
"""(rule, key, counter, amount, fits)."""


def denial(
    request: CheckRequest, plan: Sequence[PlanEntry], now: float
) -> tuple[CheckResult, Notice] | None:
    """The denial when a blocking limit cannot take its amount, else ``None``."""
    denied_by: Rule | None = None
    waits: list[float | None] = []
    for rule, _, counter, amount, fits in plan:
        action = rule.config.action
        if fits or action in SOFT_ACTIONS:
            continue
        if action == "throttle":
            waits.append(rule.window.wait_for(counter, amount, now))
        else:
            fit = rule.window.wait_for(counter, amount, now)
            waits.append(None if fit is None else rule.window.reset_at(counter, now) - now)
        denied_by = denied_by or rule
    if denied_by is None:
        return None
    retry = None if any(w is None for w in waits) else max(w for w in waits if w is not None)
    statuses = tuple(
        counter_status(r, k, c, now, allowed=ok or r.config.action in SOFT_ACTIONS)
        for r, k, c, _, ok in plan
    )
    attrs = request.attributes()
    notice = Notice(
        kind="request_denied",
        time=now,
        limit=denied_by.name,
        key=dict(zip(denied_by.config.group_by, denied_by.key(attrs), strict=True)),
        tenant=request.tenant,
        request_id=request.request_id,
    )
    result = CheckResult(
        allowed=False,
        action="throttle" if denied_by.config.action == "throttle" else "block",
        retry_after_s=None if retry is None else round(retry, 3),
        denied_by=denied_by.name,
        limits=statuses,
    )
    return result, notice


def allowance(plan: Sequence[PlanEntry], now: float, reservation_id: str | None) -> CheckResult:
    """The answer of an allowed check, from the counters after its charges."""
    downgrade: str | None = None
    over_alert = False
    for rule, _, _, _, fits in plan:
        if fits:
            continue
        if rule.config.action == "downgrade":
            downgrade = downgrade or rule.config.downgrade_model
        else:
            over_alert = True
    statuses = tuple([counter_status(r, k, c, now, allowed=True) for r, k, c, _, _ in plan])
    decision: Decision = "downgrade" if downgrade else ("alert" if over_alert else "allow")
    return CheckResult(
        allowed=True,
        action=decision,
        reservation_id=reservation_id,
        downgrade_model=downgrade,
        limits=statuses,
    )
