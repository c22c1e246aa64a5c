"""Reconciliation inside the collector: imports on a schedule, ``GET /api/v1/reconciliation``,
drift gauges on ``/metrics`` and a ``reconciliation_drift`` hook notice.

Each run imports the configured providers' reports (a provider that fails is logged
once per failure streak and keeps its previous import), compares the stored reports with
the ledger, replaces the gauges with the result, and tells the hooks about every measure
whose drift reaches ``threshold_percent``, once per provider, day, model, project, API
key and measure (the marks live in ``reports.db``, so a restart does not repeat them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tollmeter.collector.billing._compare import Grain, Reconciliation
from tollmeter.collector.billing._config import ReconciliationConfig
from tollmeter.collector.billing._fetch import ReportSource, key_label
from tollmeter.collector.billing._imports import import_api_reports, reconcile_stored
from tollmeter.collector.billing._report import PROVIDERS, Provider, ReportError
from tollmeter.collector.billing._store import ReportStore
from tollmeter.collector.limits._model import Notice
from tollmeter.collector.storage import Ledger

__all__ = ["DriftGauges", "ReconciliationService"]

logger = logging.getLogger(__name__)


class DriftGauges(Collector):
    """``tollmeter_reconciliation_drift_percent`` and ``..._difference`` per provider,
    model and measure, summed over the days of the last reconciliation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str, str], tuple[Decimal, Decimal]] = {}

    def update(self, result: Reconciliation) -> None:
        sums: dict[tuple[str, str, str], list[Decimal]] = defaultdict(
            lambda: [Decimal(0), Decimal(0)]
        )
        for row in result.rows:
            for drift in row.measures:
                pair = sums[(row.provider, row.model or "", drift.measure)]
                pair[0] += drift.ledger
                pair[1] += drift.report
        with self._lock:
            self._values = {key: (ledger, report) for key, (ledger, report) in sums.items()}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["provider", "model", "measure"]
        percent = GaugeMetricFamily(
            "tollmeter_reconciliation_drift_percent",
            "Provider report minus ledger, as a percentage of the ledger, over the days last "
            "reconciled (+Inf when the ledger has none).",
            labels=labels,
        )
        difference = GaugeMetricFamily(
            "tollmeter_reconciliation_difference",
            "Provider report minus ledger (tokens, or US dollars for cost), over the days last "
            "reconciled.",
            labels=labels,
        )
        with self._lock:
            values = dict(self._values)
        for key, (ledger, report) in sorted(values.items()):
            delta = report - ledger
            share = float(delta / ledger * 100) if ledger else (0.0 if not delta else float("inf"))
            percent.add_metric(list(key), share)
            difference.add_metric(list(key), float(delta))
        yield percent
        yield difference


class ReconciliationService:
    """Runs reconciliations for the collector; every method blocks (call from a thread)."""

    def __init__(
        self,
        config: ReconciliationConfig,
        *,
        store: ReportStore,
        ledger: Ledger,
        notify: Callable[[Notice], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.ledger = ledger
        self.gauges = DriftGauges()
        self._notify = notify
        self._failing: set[str] = set()
        self._lock = threading.Lock()

    def default_range(self) -> tuple[date, date]:
        today = datetime.now(timezone.utc).date()
        return today - timedelta(days=self.config.lookback_days), today + timedelta(days=1)

    def run(
        self,
        start: date | None = None,
        end: date | None = None,
        *,
        refresh: bool = True,
        providers: Sequence[Provider] = PROVIDERS,
        by: Grain | None = None,
    ) -> tuple[Reconciliation, list[str]]:
        """Import (when ``refresh``), compare and publish; returns the comparison and the
        import errors (one line per provider that failed)."""
        default_start, default_end = self.default_range()
        start, end = start or default_start, end or default_end
        errors: list[str] = []
        with self._lock:
            if refresh:
                for source in self.config.sources:
                    if source.provider in providers:
                        error = self._import(source, start, end)
                        if error:
                            errors.append(error)
            result = reconcile_stored(
                self.store, self.ledger, providers, start, end, by=by or self.config.by
            )
            self.gauges.update(result)
            self._tell_hooks(result)
        return result, errors

    def _import(self, source: ReportSource, start: date, end: date) -> str | None:
        provider, label = source.provider, key_label(source.admin_key)
        try:
            import_api_reports(self.store, source, start, end, timeout_s=self.config.timeout)
        except ReportError as exc:
            if provider not in self._failing:
                logger.warning(
                    "reconciliation: cannot import the %s reports (admin key %s): %s; "
                    "until they import again, only the count of failures changes",
                    provider,
                    label,
                    exc,
                )
                self._failing.add(provider)
            return f"{provider}: {exc}"
        if provider in self._failing:
            logger.warning("reconciliation: the %s reports import again", provider)
            self._failing.discard(provider)
        return None

    def _tell_hooks(self, result: Reconciliation) -> None:
        if self._notify is None:
            return
        threshold = self.config.threshold_percent
        for row in result.rows:
            for drift in row.drifted(threshold):
                mark = (
                    "|".join(
                        str(part)
                        for part in (row.provider, row.day, row.model, row.project, row.api_key)
                    )
                    + f"|{result.by}|{drift.measure}"
                )
                if not self.store.mark_once(mark):
                    continue
                self._notify(
                    Notice(
                        kind="reconciliation_drift",
                        time=time.time(),
                        detail={
                            **{k: v for k, v in row.to_json().items() if k != "measures"},
                            "by": result.by,
                            "measure": drift.measure,
                            "threshold_percent": float(threshold),
                            **drift.to_json(),
                        },
                    )
                )
