"""Plug the limits service into a running collector.

``attach_limits(collector)`` builds the service from the collector's config, counts
every committed usage event (pipeline subscription), serves the limits API on the
management port, writes expired reservations and gateway reconciles through the
ingest pipeline (so they are priced, metered and deduplicated like spans), and closes
with the collector. ``reload_on_sighup`` re-reads the limits when the process gets
SIGHUP, keeping the state of unchanged limits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Protocol

from starlette.routing import BaseRoute

from tollmeter.collector._config import Config
from tollmeter.collector._pipeline import Pipeline
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.limits._api import limits_routes
from tollmeter.collector.limits._config import LimitsConfig
from tollmeter.collector.limits._service import LimitsService
from tollmeter.collector.pricing import Pricer
from tollmeter.collector.storage import AppendResult
from tollmeter.semconv.errors import TollmeterError

__all__ = ["attach_limits", "reload_on_sighup"]

logger = logging.getLogger(__name__)

_COMMIT_TIMEOUT_S = 30.0


class _Host(Protocol):
    """The parts of ``Collector`` the limits service needs."""

    @property
    def config(self) -> Config: ...

    @property
    def pipeline(self) -> Pipeline: ...

    def add_management_routes(self, routes: Sequence[BaseRoute]) -> None: ...

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None: ...


class _PipelineSink:
    """``append`` from any thread but the event loop's: commits through the pipeline."""

    def __init__(self, pipeline: Pipeline, loop: asyncio.AbstractEventLoop) -> None:
        self._pipeline = pipeline
        self._loop = loop

    def append(self, events: Sequence[UsageEvent]) -> AppendResult:
        try:
            future = asyncio.run_coroutine_threadsafe(
                self._pipeline.append_events(events), self._loop
            )
            return future.result(_COMMIT_TIMEOUT_S)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            raise TollmeterError(f"the pipeline did not commit: {exc!r}") from exc


def _cost_estimator(pricer: Pricer) -> Callable[[str, int, int], float | None]:
    def estimate(model: str, input_tokens: int, output_tokens: int) -> float | None:
        quote = pricer.quote(
            UsageEvent(
                event_id="estimate",
                event_time_ns=0,
                provider="",
                operation="chat",
                tenant_id="",
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                total_tokens=input_tokens + output_tokens,
                request_model=model,
            )
        )
        return None if quote.cost is None else float(Decimal(quote.cost))

    return estimate


def attach_limits(collector: _Host) -> LimitsService:
    """Start the limits service of a started collector (call from its event loop)."""
    config = collector.config
    pipeline = collector.pipeline
    service = LimitsService(
        config.limits,
        config.hooks,
        ledger=_PipelineSink(pipeline, asyncio.get_running_loop()),
        ledger_notifies=True,
        state_path=config.data_dir / "limits.db",
        cost_estimator=_cost_estimator(Pricer(config.pricing)),
        collector_id=config.collector_id,
    )
    pipeline.subscribe(service.on_committed)
    collector.add_management_routes(limits_routes(service))
    service.start()

    async def close() -> None:
        await asyncio.to_thread(service.close)

    collector.on_shutdown(close)
    return service


def reload_on_sighup(
    service: LimitsService, load: Callable[[], LimitsConfig]
) -> Callable[[], None]:
    """On SIGHUP, ``load()`` the limits again and swap them in; returns the undo.

    An invalid file is logged and the limits in force stay. Only the main thread
    can install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()

    def reload() -> None:
        try:
            limits = load()
        except TollmeterError as exc:
            logger.error("SIGHUP: limits not reloaded, keeping the current ones: %s", exc)
            return
        service.reload(limits)

    loop.add_signal_handler(signal.SIGHUP, reload)

    def restore() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return restore
