"""Billing truth: the providers' own usage and cost reports compared with the ledger.

Import a report over HTTP with an admin key (:func:`import_api_reports`) or from a CSV
download (:func:`import_csv_report`) into a :class:`ReportStore`, then
:func:`reconcile_stored` gives per day and model (and project or API key) the ledger's
tokens by type and cost beside the report's, with the difference and its percentage.
"""

from __future__ import annotations

from tollmeter.collector.billing._compare import (
    GRAINS,
    MEASURES,
    Drift,
    Grain,
    Reconciliation,
    ReconciliationRow,
    ledger_events,
    reconcile,
)
from tollmeter.collector.billing._fetch import ReportSource, fetch_report, key_label
from tollmeter.collector.billing._imports import (
    import_api_reports,
    import_csv_report,
    reconcile_stored,
)
from tollmeter.collector.billing._providers import KINDS, ReportKind
from tollmeter.collector.billing._report import PROVIDERS, Provider, ReportError, ReportRow
from tollmeter.collector.billing._store import ReportStore

__all__ = [
    "GRAINS",
    "KINDS",
    "MEASURES",
    "PROVIDERS",
    "Drift",
    "Grain",
    "Provider",
    "Reconciliation",
    "ReconciliationRow",
    "ReportError",
    "ReportKind",
    "ReportRow",
    "ReportSource",
    "ReportStore",
    "fetch_report",
    "import_api_reports",
    "import_csv_report",
    "key_label",
    "ledger_events",
    "reconcile",
    "reconcile_stored",
]
