"""Noticing one provider response id reported for two tenants.

Dedupe is scoped to the tenant, so such calls are both billed, which is right when two
tenants really share nothing but a reused or forged id, and worth a look either way: a
gateway that mixes up tenants, or a tenant replaying another's ids, shows up here. The
memory is bounded (the most recent ``capacity`` response ids of this process), so a
repeat far apart in time, or across a restart, may go unnoticed; billing never depends
on it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from tollmeter.collector._records import UsageEvent

__all__ = ["SharedResponseIds"]

logger = logging.getLogger(__name__)


class SharedResponseIds:
    """Counts committed events whose (provider, response id) an other tenant used before.

    Logs at most one warning per ``log_interval_s`` (with the number seen since the last
    one), so a flood of such events cannot flood the log. Not thread-safe: one writer calls
    ``observe``.
    """

    def __init__(
        self,
        *,
        capacity: int = 65_536,
        log_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._log_interval_s = log_interval_s
        self._clock = clock
        # Keyed by a hash of (provider, response id): a few bytes per id instead of its text.
        self._owners: OrderedDict[int, str] = OrderedDict()
        self._unlogged = 0
        self._next_log = 0.0
        self.count = 0

    def observe(self, events: Iterable[UsageEvent]) -> int:
        """Remember the events' response ids; returns how many were another tenant's."""
        found = 0
        example: UsageEvent | None = None
        owners = self._owners
        for event in events:
            if event.response_id is None:
                continue
            key = hash((event.provider, event.response_id))
            owner = owners.get(key)
            if owner is None:
                owners[key] = event.tenant_id
                if len(owners) > self._capacity:
                    owners.popitem(last=False)
            elif owner != event.tenant_id:
                found += 1
                example = example or event
        if found:
            self.count += found
            self._unlogged += found
            self._maybe_log(example)
        return found

    def _maybe_log(self, example: UsageEvent | None) -> None:
        now = self._clock()
        if example is None or now < self._next_log:
            return
        self._next_log = now + self._log_interval_s
        logger.warning(
            "%d usage event(s) carried a provider response id already reported for another "
            "tenant; each is billed to its own tenant (latest: provider %r, tenant %r)",
            self._unlogged,
            example.provider,
            example.tenant_id,
        )
        self._unlogged = 0
