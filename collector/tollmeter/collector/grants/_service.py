"""The grants service: the overage gate of checks, grant hooks, and ending due grants.

The gate answers from a per-tenant view of the grants (their dates and whether any balance
is left), read from the ledger at start and again for a tenant after each commit of its
usage here, after each grant change here, and for every tenant each ``interval`` (what
other replicas burnt). Under ``overage: block`` a check is denied with the reason
``grants exhausted`` once no grant covering now has a balance left.

How far usage can go past the grants under ``block``: a check admitted while a balance is
left is not held against it (the burn happens when its usage is committed), so the calls
in flight at the moment the grants run out (the open reservations, and on other replicas
until their next refresh, the calls they admit meanwhile) may still finish. Their usage
beyond the grants is recorded as ``overage``, never as a negative grant balance.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.grants._config import GrantsConfig
from tollmeter.collector.grants._model import Grant
from tollmeter.collector.limits._model import CheckRequest, CheckResult, Notice
from tollmeter.collector.storage import Ledger
from tollmeter.semconv.errors import TollmeterError

__all__ = ["EXHAUSTED", "GrantsService"]

logger = logging.getLogger(__name__)

EXHAUSTED = "grants exhausted"


class GrantsService:
    def __init__(
        self,
        config: GrantsConfig,
        ledger: Ledger,
        *,
        notify: Callable[[Notice], None] | None = None,
        clock: Callable[[], float] = time.time,
        org_of_tenant: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        # The organisations' configured tenants: whose grants a tenant's checks may count on.
        self.org_of_tenant: Mapping[str, str] = org_of_tenant or {}
        self.ledger = ledger
        self.clock = clock
        self._notify = notify
        self._lock = threading.Lock()
        # Per holder (``Grant.holder``): its grants and their balances as last read.
        self._held: dict[str, list[tuple[Grant, Decimal]]] = {}
        # Grants known low here; the notice itself is claimed in the ledger, once for all
        # replicas and restarts.
        self._low: set[str] = set()
        self.refresh()

    def gate(self, request: CheckRequest) -> CheckResult | None:
        """The denial of a check under ``block`` once the grants of the tenant and of its
        organisation are used up."""
        tenant = request.tenant
        if self.config.policy(tenant) != "block":
            return None
        held = list(self._held.get(f"tenant:{tenant}", ()))
        org = self.org_of_tenant.get(tenant)
        if org is not None:
            held += self._held.get(f"org:{org}", ())
        if not held:
            return None
        now_ns = int(self.clock() * 1e9)
        if any(balance > 0 and grant.covers(now_ns) for grant, balance in held):
            return None
        return CheckResult(allowed=False, action="block", denied_by="grants", reason=EXHAUSTED)

    def on_committed(self, events: Sequence[UsageEvent]) -> None:
        """Pipeline subscriber: re-read the grants of the tenants and organisations that used
        some."""
        held = set(self._held)
        tenants = {e.tenant_id for e in events if f"tenant:{e.tenant_id}" in held}
        orgs = {e.org_id for e in events if e.org_id and f"org:{e.org_id}" in held}
        for tenant in sorted(tenants):
            self._guarded(functools.partial(self.refresh, tenant))
        for org in sorted(orgs):
            self._guarded(functools.partial(self.refresh, org=org))

    def refresh(self, tenant: str | None = None, *, org: str | None = None) -> None:
        """Re-read the grants of ``tenant`` or ``org`` (all for neither) and fire
        ``grant_low_balance`` for each grant that fell below its threshold since it was
        last read."""
        grants = self.ledger.list_grants(tenant, org=org)
        by_holder: dict[str, list[tuple[Grant, Decimal]]] = {}
        for grant, balance in grants:
            by_holder.setdefault(grant.holder, []).append((grant, balance))
        now_ns = int(self.clock() * 1e9)
        newly_low: list[tuple[Grant, Decimal]] = []
        with self._lock:
            if tenant is None and org is None:
                self._held = by_holder
            else:
                key = f"org:{org}" if org is not None else f"tenant:{tenant}"
                self._held[key] = by_holder.get(key, [])
            for grant, balance in grants:
                if grant.grant_id in self._low or not self._is_low(grant, balance):
                    continue
                self._low.add(grant.grant_id)
                # A grant that ended or was voided is not running low: it is gone.
                if grant.voided_ns is None and (
                    grant.expires_ns is None or now_ns < grant.expires_ns
                ):
                    newly_low.append((grant, balance))
        self._emit(
            self._low_notice(grant, balance)
            for grant, balance in newly_low
            if self.ledger.claim_state(f"grants.low_balance.{grant.grant_id}", str(now_ns))
        )

    def end_due(self) -> int:
        """End the grants whose expiry has come; ``grant_expired`` for each. How many ended."""
        ended = self.ledger.end_grants(int(self.clock() * 1e9))
        notices = [
            Notice(
                kind="grant_expired",
                time=self.clock(),
                tenant=e.grant.tenant_id or None,
                detail={
                    "tenant": e.grant.tenant_id or None,
                    "org": e.grant.org_id,
                    "grant_id": e.grant.grant_id,
                    "unit": e.grant.unit,
                    "expired": str(e.expired),
                    "rolled_over": str(e.carried),
                    "next_grant_id": None if e.next_grant is None else e.next_grant.grant_id,
                },
            )
            for e in ended
        ]
        self._emit(notices)
        for grant in {e.grant.holder: e.grant for e in ended}.values():
            self._refresh_holder(grant)
        return len(ended)

    def create(self, grant: Grant) -> bool:
        created = self.ledger.create_grant(grant)
        self._refresh_holder(grant)
        return created

    def void(self, grant_id: str) -> Grant | None:
        voided = self.ledger.void_grant(grant_id, int(self.clock() * 1e9))
        if voided is not None:
            self._refresh_holder(voided)
        return voided

    def _refresh_holder(self, grant: Grant) -> None:
        if grant.org_id:
            self.refresh(org=grant.org_id)
        else:
            self.refresh(grant.tenant_id)

    def tick(self) -> None:
        """One round of the schedule: end due grants, then re-read every tenant."""
        self._guarded(self.end_due)
        self._guarded(self.refresh)

    def _is_low(self, grant: Grant, balance: Decimal) -> bool:
        threshold = grant.amount * Decimal(str(self.config.low_balance_fraction))
        return balance < threshold or balance <= 0

    def _low_notice(self, grant: Grant, balance: Decimal) -> Notice:
        return Notice(
            kind="grant_low_balance",
            time=self.clock(),
            tenant=grant.tenant_id or None,
            detail={
                "tenant": grant.tenant_id or None,
                "org": grant.org_id,
                "grant_id": grant.grant_id,
                "unit": grant.unit,
                "amount": str(grant.amount),
                "balance": str(balance),
                "threshold_fraction": self.config.low_balance_fraction,
            },
        )

    def _emit(self, notices: Iterable[Notice]) -> None:
        if self._notify is None:
            return
        for notice in notices:
            self._notify(notice)

    @staticmethod
    def _guarded(work: Callable[[], object]) -> None:
        # Commits and the schedule go on when the ledger cannot be read for a moment.
        try:
            work()
        except TollmeterError:
            logger.exception("grants not refreshed; retrying on the next commit or round")
