"""Plug prepaid grants into a running collector: the service, its gate in front of the
limits' checks, its pipeline subscription, its routes and its schedule."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tollmeter.collector.grants._api import grant_routes
from tollmeter.collector.grants._service import GrantsService

if TYPE_CHECKING:
    from tollmeter.collector._server import Collector

__all__ = ["Grants"]


class Grants:
    """The collector component; starts after the limits, whose hooks and checks it uses."""

    name = "grants"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._collector: Collector | None = None

    async def start(self, collector: Collector) -> None:
        limits = collector.limits
        service = await asyncio.to_thread(
            GrantsService,
            collector.config.grants,
            collector.ledger,
            notify=None if limits is None else limits.hooks.emit,
            org_of_tenant=collector.config.organisations.org_of_tenant,
        )
        if limits is not None:
            limits.gate = service.gate
        collector.pipeline.subscribe(service.on_committed)
        collector.add_management_routes(grant_routes(service))
        self._collector = collector
        self._task = asyncio.get_running_loop().create_task(
            self._every(service, collector.config.grants.interval), name="grants"
        )

    @staticmethod
    async def _every(service: GrantsService, interval: float) -> None:
        while True:
            await asyncio.to_thread(service.tick)
            await asyncio.sleep(interval)

    async def stop(self, deadline: float) -> None:
        del deadline  # nothing to flush: every change is in the ledger when made
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        collector, self._collector = self._collector, None
        if collector is not None and collector.limits is not None:
            collector.limits.gate = None
