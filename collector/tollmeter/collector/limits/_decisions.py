"""The recent checks each tenant was denied, kept in memory for the API and the console.

A tenant's history is the last ``per_tenant`` denials, newest first; at most ``tenants``
tenants are remembered, those denied least recently forgotten first, so that a flood of
hostile tenant ids costs bounded memory. Nothing here survives a restart: the hooks
(``request_denied``) are the durable record for whoever needs one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable

from tollmeter.collector.limits._model import Notice

__all__ = ["RecentDecisions"]


class RecentDecisions:
    def __init__(self, *, per_tenant: int = 50, tenants: int = 10_000) -> None:
        self._per_tenant = per_tenant
        self._tenants = tenants
        self._lock = threading.Lock()
        self._by_tenant: OrderedDict[str, deque[Notice]] = OrderedDict()

    def record(self, notices: Iterable[Notice]) -> None:
        """Remember the ``request_denied`` notices among ``notices``."""
        denied = [
            (n.tenant, n) for n in notices if n.kind == "request_denied" and n.tenant is not None
        ]
        if not denied:
            return
        with self._lock:
            for tenant, notice in denied:
                history = self._by_tenant.get(tenant)
                if history is None:
                    history = self._by_tenant[tenant] = deque(maxlen=self._per_tenant)
                    while len(self._by_tenant) > self._tenants:
                        self._by_tenant.popitem(last=False)
                else:
                    self._by_tenant.move_to_end(tenant)
                history.append(notice)

    def of(self, tenant: str) -> list[Notice]:
        """``tenant``'s remembered denials, newest first."""
        with self._lock:
            history = self._by_tenant.get(tenant)
            return [] if history is None else list(reversed(history))
