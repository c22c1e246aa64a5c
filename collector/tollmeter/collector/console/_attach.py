"""Serve the console and the tenants API on a started collector's management port."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from starlette.routing import BaseRoute

from tollmeter.collector._auth import KeyRing
from tollmeter.collector._tenants_api import tenants_routes
from tollmeter.collector.console._pages import Console, ConsoleHost
from tollmeter.collector.console._session import Sessions

__all__ = ["attach_console"]


class _Host(ConsoleHost, Protocol):
    def add_management_routes(self, routes: Sequence[BaseRoute]) -> None: ...


def attach_console(
    collector: _Host, *, keys: KeyRing, readiness: Callable[[], dict[str, str | None]]
) -> Console:
    """Add ``GET /api/v1/tenants`` and the console pages (``/`` and ``/console/*``).

    Call once the ledger, limits, export and metrics are set up. The console signs in
    with the same admin keys as the management API (``keys``, replaced on reload).
    """
    collector.add_management_routes(tenants_routes(collector.ledger, collector.limits))
    console = Console(collector, Sessions(keys), readiness)
    collector.add_management_routes(console.routes())
    return console
