"""Which plan each tenant is on: the management API's word, else the configuration's.

Assignments made through the API are written to the ledger (``tenant_plans``), which
every replica shares, and win over the configuration's until changed again, also over a
file reloaded on SIGHUP: the API is where a tenant's move is recorded as it happens, the
file only says where tenants start. A replica
reads them all again at most every ``refresh_s`` seconds, on the next lookup after that
time; the replica that made a change sees it at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from tollmeter.collector.errors import UnknownPlan
from tollmeter.collector.limits._plans import PlansConfig
from tollmeter.semconv.errors import TollmeterError

__all__ = ["PlanBook", "UnknownPlan"]

logger = logging.getLogger(__name__)


class _Assignments(Protocol):
    def set_tenant_plan(self, tenant: str, plan: str, now_ns: int) -> None: ...
    def clear_tenant_plan(self, tenant: str) -> bool: ...
    def tenant_plans(self) -> dict[str, str]: ...


class PlanBook:
    def __init__(
        self,
        plans: PlansConfig,
        store: _Assignments | None = None,
        *,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plans = plans
        self._store = store
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._assigned: dict[str, str] = {}
        self._next_read = 0.0

    def plan_of(self, tenant: str) -> str | None:
        """The plan in force for ``tenant`` (``None``: no plan)."""
        if not self.plans.limits:
            return None
        if self._store is not None and self._clock() >= self._next_read:
            self._read()
        assigned = self._assigned.get(tenant)
        # An assignment to a plan the configuration no longer has falls back to the file.
        if assigned is not None and assigned in self.plans.limits:
            return assigned
        return self.plans.plan_of(tenant)

    def replace(self, plans: PlansConfig) -> None:
        """Use ``plans`` (a reloaded file) from now on; the API's assignments stay."""
        self.plans = plans

    def assign(self, tenant: str, plan: str) -> None:
        """Put ``tenant`` on ``plan`` for every replica; raises ``UnknownPlan``."""
        if plan not in self.plans.limits:
            known = ", ".join(sorted(self.plans.limits)) or "none configured"
            raise UnknownPlan(f"unknown plan {plan!r} (plans: {known})")
        if self._store is None:
            raise TollmeterError("plan assignments need a ledger")
        self._store.set_tenant_plan(tenant, plan, time.time_ns())
        with self._lock:
            self._assigned = {**self._assigned, tenant: plan}

    def unassign(self, tenant: str) -> bool:
        """Remove the API's assignment of ``tenant`` for every replica, so that the
        configuration's plan applies again; whether there was one."""
        if self._store is None:
            raise TollmeterError("plan assignments need a ledger")
        removed = self._store.clear_tenant_plan(tenant)
        with self._lock:
            self._assigned = {t: p for t, p in self._assigned.items() if t != tenant}
        return removed

    def _read(self) -> None:
        with self._lock:
            if self._clock() < self._next_read or self._store is None:
                return
            self._next_read = self._clock() + self._refresh_s
            try:
                self._assigned = self._store.tenant_plans()
            except TollmeterError:
                logger.exception("plan assignments not read; keeping the last ones")
