"""Import provider reports into the report store, then compare the store with the ledger."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from tollmeter.collector.billing._compare import Grain, Reconciliation, reconcile
from tollmeter.collector.billing._csv import read_csv_report
from tollmeter.collector.billing._fetch import ReportSource, fetch_report
from tollmeter.collector.billing._providers import KINDS, ReportKind
from tollmeter.collector.billing._report import Provider, ReportError
from tollmeter.collector.billing._store import ReportStore
from tollmeter.collector.storage import Ledger

__all__ = ["import_api_reports", "import_csv_report", "reconcile_stored"]


def import_api_reports(
    store: ReportStore, source: ReportSource, start: date, end: date, *, timeout_s: float
) -> int:
    """Fetch the provider's usage and cost reports for ``[start, end)`` and store both.

    Both are fetched in full before either is stored; returns the number of rows."""
    if end <= start:
        raise ReportError("the range must end after it starts")
    deadline = time.monotonic() + timeout_s
    reports = {kind: fetch_report(source, kind, start, end, deadline=deadline) for kind in KINDS}
    for kind, rows in reports.items():
        store.replace(source.provider, kind, start, end, rows, source=source.url)
    return sum(len(rows) for rows in reports.values())


def import_csv_report(
    store: ReportStore, provider: Provider, kind: ReportKind, path: Path, start: date, end: date
) -> int:
    """Read a CSV download and make it the provider's ``kind`` report for ``[start, end)``."""
    if end <= start:
        raise ReportError("the range must end after it starts")
    rows = read_csv_report(provider, kind, path)
    store.replace(provider, kind, start, end, rows, source=path.name)
    return len(rows)


def reconcile_stored(
    store: ReportStore,
    ledger: Ledger,
    providers: Sequence[Provider],
    start: date,
    end: date,
    *,
    by: Grain = "model",
) -> Reconciliation:
    """Compare the stored reports of ``providers`` with the ledger over ``[start, end)``.

    A provider with no import covering the range is left out: with no report, every
    metered token would look like drift."""
    chosen = [provider for provider in providers if store.imported(provider, start, end)]
    usage = [row for p in chosen for row in store.rows(p, "usage", start, end)]
    costs = [row for p in chosen for row in store.rows(p, "cost", start, end)]
    return reconcile(ledger, usage, costs, providers=chosen, start=start, end=end, by=by)
