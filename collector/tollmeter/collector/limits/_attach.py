"""Plug the limits service into a running collector.

``attach_limits(collector)`` builds the service from the collector's config, counts
every committed usage event (pipeline subscription), serves the limits API on the
management port, writes expired reservations and gateway reconciles through the
ingest pipeline (so they are priced, metered and deduplicated like spans), and closes
with the collector. (SIGHUP reloads go through ``Collector.reload``, which swaps limits,
keys and TLS files together.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Protocol

from starlette.routing import BaseRoute

from tollmeter.collector._config import Config
from tollmeter.collector._pipeline import Pipeline
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.limits._api import limits_routes
from tollmeter.collector.limits._plan_book import PlanBook
from tollmeter.collector.limits._plans_api import plan_routes
from tollmeter.collector.limits._service import LimitsService
from tollmeter.collector.pricing import Pricer
from tollmeter.collector.storage import AppendResult, Ledger
from tollmeter.semconv.errors import TollmeterError

__all__ = ["attach_limits"]

logger = logging.getLogger(__name__)

_COMMIT_TIMEOUT_S = 30.0


class _Host(Protocol):
    """The parts of ``Collector`` the limits service needs."""

    @property
    def config(self) -> Config: ...

    @property
    def pipeline(self) -> Pipeline: ...

    @property
    def ledger(self) -> Ledger: ...

    def add_management_routes(self, routes: Sequence[BaseRoute]) -> None: ...


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


def attach_limits(collector: _Host, *, pricer: Pricer) -> LimitsService:
    """Start the limits service of a started collector (call from its event loop);
    the caller closes it. ``pricer`` estimates the cost of a check's tokens."""
    config = collector.config
    pipeline = collector.pipeline
    service = LimitsService(
        config.limits,
        config.hooks,
        ledger=_PipelineSink(pipeline, asyncio.get_running_loop()),
        ledger_notifies=True,
        state_path=config.data_dir / "limits.db",
        cost_estimator=_cost_estimator(pricer),
        collector_id=config.collector_id,
        usage=collector.ledger.query_usage,
        organisations=config.organisations,
        plans=PlanBook(config.plans, collector.ledger),
    )
    pipeline.subscribe(service.on_committed)
    pipeline.set_annotator(service.annotate)
    collector.add_management_routes([*limits_routes(service), *plan_routes(service.plans)])
    service.start()
    return service
