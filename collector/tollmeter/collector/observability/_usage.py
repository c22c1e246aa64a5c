"""Usage meters for Prometheus: tokens, requests and cost per tenant.

The counters are fed by the pipeline's commit subscription and start from the
ledger's all-time totals, so a collector restart does not reset them (Prometheus
still copes with resets through ``rate()``; this only keeps ``increase()`` over
a restart honest). Token types are the five exclusive buckets, so that stacking
them sums to the total: ``input`` (uncached input), ``cache_read``,
``cache_write``, ``output`` (non-reasoning output) and ``reasoning``.

Each ``tollmeter_requests_total`` series carries the trace id of its latest
call as an OpenMetrics exemplar, so that Grafana can jump from a spike to the
trace in Tempo or Jaeger.

Tenants beyond ``max_tenants`` are counted under ``tenant="_other"`` so that a
flood of tenant ids cannot blow up Prometheus; a warning is logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import Ledger, UsageQuery
from tollmeter.collector.storage._query import MAX_ROWS
from tollmeter.collector.storage._rollups import MinuteSums, minute_sums

__all__ = ["OTHER_TENANT", "TOKEN_TYPES", "UsageMetrics"]

logger = logging.getLogger(__name__)

OTHER_TENANT = "_other"
TOKEN_TYPES = ("input", "cache_read", "cache_write", "output", "reasoning")
_DEFAULT_CURRENCY = "USD"

_TokenKey = tuple[str, str, str, str, str]
"""tenant, project, model, token type, usage source."""
_RequestKey = tuple[str, str, str]
_CostKey = tuple[str, str]


class UsageMetrics:
    """A Prometheus collector of usage counters; ``apply`` is a pipeline subscriber."""

    def __init__(self, *, max_tenants: int) -> None:
        self._max_tenants = max_tenants
        self._lock = threading.Lock()
        self._tenants: set[str] = set()
        self._warned = False
        self._tokens: dict[_TokenKey, int] = {}
        self._requests: dict[_RequestKey, int] = {}
        self._cost: dict[_CostKey, Decimal] = {}
        self._exemplars: dict[_RequestKey, tuple[str, float]] = {}

    def restore(self, ledger: Ledger) -> None:
        """Start from the ledger's totals (call before the first commit is applied).

        Tenants are admitted largest first, so the cap keeps the heaviest ones."""
        rows = ledger.query_usage(
            UsageQuery(group_by=("tenant", "project", "model", "usage_source"), limit=MAX_ROWS)
        )
        rows.sort(key=lambda row: -row.total_tokens)
        with self._lock:
            for row in rows:
                tenant = self._tenant(row.tenant or "")
                project, model = row.project or "", row.model or ""
                source = row.usage_source or ""
                buckets = _buckets(
                    row.input_tokens,
                    row.cache_read_input_tokens,
                    row.cache_write_input_tokens,
                    row.output_tokens,
                    row.reasoning_output_tokens,
                )
                self._add(tenant, project, model, source, buckets, row.requests)
                if row.cost is not None:
                    key = (tenant, row.currency or _DEFAULT_CURRENCY)
                    self._cost[key] = self._cost.get(key, Decimal(0)) + row.cost

    def apply(self, events: Sequence[UsageEvent]) -> None:
        """Count newly committed events."""
        self.apply_commit(events, minute_sums(events))

    def apply_commit(self, events: Sequence[UsageEvent], minutes: MinuteSums) -> None:
        """Count a commit (runs on the ledger writer thread): tokens and requests from
        its per-minute sums; costs per currency and exemplars from its events."""
        now = time.time()
        with self._lock:
            for (_, tenant_id, project, model, _, _, source), sums in minutes.items():
                buckets = _buckets(sums[0], sums[1], sums[2], sums[3], sums[4])
                self._add(self._tenant(tenant_id), project, model, source, buckets, sums[6])
            for event in events:
                tenant = self._tenant(event.tenant_id)
                if event.cost is not None:
                    key = (tenant, event.currency or _DEFAULT_CURRENCY)
                    self._cost[key] = self._cost.get(key, Decimal(0)) + event.cost
                if event.trace_id:
                    self._exemplars[(tenant, event.project_id or "", event.model)] = (
                        event.trace_id,
                        now,
                    )

    def collect(self) -> Iterator[Metric]:
        tokens = CounterMetricFamily(
            "tollmeter_tokens",
            "Tokens metered, by exclusive token type and usage source "
            "(provider-reported, estimate, reservation).",
            labels=("tenant", "project", "model", "token_type", "usage_source"),
        )
        requests = CounterMetricFamily(
            "tollmeter_requests",
            "Model calls metered.",
            labels=("tenant", "project", "model"),
        )
        cost = CounterMetricFamily(
            "tollmeter_cost",
            "Cost of the metered calls that could be priced.",
            labels=("tenant", "currency"),
        )
        with self._lock:
            for token_key, value in self._tokens.items():
                tokens.add_metric(token_key, value)
            for request_key, count in self._requests.items():
                latest = self._exemplars.get(request_key)
                exemplar = (
                    None if latest is None else Exemplar({"trace_id": latest[0]}, 1.0, latest[1])
                )
                requests.add_metric(request_key, count, exemplar=exemplar)
            for cost_key, amount in self._cost.items():
                cost.add_metric(cost_key, float(amount))
        yield tokens
        yield requests
        yield cost

    def _tenant(self, tenant: str) -> str:
        if tenant in self._tenants:
            return tenant
        if len(self._tenants) < self._max_tenants:
            self._tenants.add(tenant)
            return tenant
        if not self._warned:
            self._warned = True
            logger.warning(
                "more than %d tenants: further tenants are counted as tenant=%r in /metrics "
                "(raise metrics.max_tenants to see them; the ledger keeps them all)",
                self._max_tenants,
                OTHER_TENANT,
            )
        return OTHER_TENANT

    def _add(
        self,
        tenant: str,
        project: str,
        model: str,
        source: str,
        buckets: tuple[int, ...],
        requests: int,
    ) -> None:
        for token_type, amount in zip(TOKEN_TYPES, buckets, strict=True):
            if amount:
                key = (tenant, project, model, token_type, source)
                self._tokens[key] = self._tokens.get(key, 0) + amount
        request_key = (tenant, project, model)
        self._requests[request_key] = self._requests.get(request_key, 0) + requests


def _buckets(
    input_tokens: int, cache_read: int, cache_write: int, output_tokens: int, reasoning: int
) -> tuple[int, int, int, int, int]:
    return (
        input_tokens - cache_read - cache_write,
        cache_read,
        cache_write,
        output_tokens - reasoning,
        reasoning,
    )
