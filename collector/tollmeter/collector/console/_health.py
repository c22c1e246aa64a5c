"""The health page: readiness, the health metrics, export progress and the ingest rate.

Readiness comes from the same checks as ``/readyz``, the figures from the same
Prometheus collector as ``/metrics`` (:class:`HealthMetrics`), the export state from
the ledger's export cursor, the ingest rate from the ledger's calls per minute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

from tollmeter.collector.console._data import Period
from tollmeter.collector.console._html import Markup, json_block, name, number, table, text
from tollmeter.collector.export import ExportService
from tollmeter.collector.export._cursor import load_cursor
from tollmeter.collector.observability._health import HealthMetrics
from tollmeter.collector.storage import Ledger, UsageQuery
from tollmeter.semconv.errors import TollmeterError

__all__ = ["ExportState", "Health", "health_body", "read_health"]

# Listing a huge export directory must not stall the page: stop counting after this.
_MAX_LISTED = 100_000
_NEWEST_FILES = 5


@dataclass(frozen=True, slots=True)
class ExportState:
    directory: str
    cursor: int
    files: int
    bytes: int
    newest: list[str]
    complete_listing: bool


@dataclass(frozen=True, slots=True)
class Health:
    readiness: Mapping[str, str | None]
    metrics: list[Metric]
    last_sequence: int
    export: ExportState | None
    ingest: dict[str, object]


def _export_state(ledger: Ledger, export: ExportService) -> ExportState:
    store = export.exporter.store
    try:
        stored, complete = store.list_parquet(_MAX_LISTED)
    except (OSError, TollmeterError):
        # An object store that does not answer shows as no files, counted incompletely.
        stored, complete = [], False
    count = len(stored)
    size = sum(file.size for file in stored)
    newest = [(file.mtime, file.relative) for file in stored]
    newest.sort(reverse=True)
    return ExportState(
        directory=store.location,
        cursor=load_cursor(ledger).sequence,
        files=count,
        bytes=size,
        newest=[relative for _, relative in newest[:_NEWEST_FILES]],
        complete_listing=complete,
    )


def read_health(
    ledger: Ledger,
    metrics: HealthMetrics,
    readiness: Mapping[str, str | None],
    export: ExportService | None,
    span: Period,
) -> Health:
    rows = ledger.query_usage(UsageQuery(start=span.start, end=span.end, window=span.window))
    calls = {row.window_start: row.requests for row in rows}
    starts = span.bucket_starts()
    ingest = {
        "t": [int(start.timestamp()) for start in starts],
        "series": [{"label": "calls", "values": [calls.get(start, 0) for start in starts]}],
    }
    return Health(
        readiness=readiness,
        metrics=list(metrics.collect()),
        last_sequence=ledger.last_sequence(),
        export=None if export is None else _export_state(ledger, export),
        ingest=ingest,
    )


def _metric_rows(metrics: list[Metric]) -> list[list[Markup]]:
    rows = []
    for family in metrics:
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ", ".join(f"{key}={value}" for key, value in sorted(sample.labels.items()))
            rows.append(
                [
                    f"{text(sample.name)}<br><small>{text(family.documentation)}</small>",
                    name(labels) if labels else "",
                    number(int(value) if (value := float(sample.value)).is_integer() else value),
                ]
            )
    return rows


def health_body(health: Health) -> Markup:
    ready = all(reason is None for reason in health.readiness.values())
    checks = table(
        ["Check", "State"],
        (
            [text(check), text("ok" if reason is None else reason)]
            for check, reason in sorted(health.readiness.items())
        ),
    )
    export = "<p>Billing export is off.</p>"
    state = health.export
    if state is not None:
        lag = max(0, health.last_sequence - state.cursor)
        more = "" if state.complete_listing else " (counting stopped early)"
        export = (
            f"<p>Directory {name(state.directory)}: cursor at event "
            f'<span data-field="export_cursor">{number(state.cursor)}</span> of '
            f"{number(health.last_sequence)} ({number(lag)} to export); "
            f"{number(state.files)} Parquet files{text(more)}, {number(state.bytes)} bytes.</p>"
            + table(["Newest files"], ([name(path)] for path in state.newest))
        )
    return (
        f'<h1>Collector health</h1><p class="status" data-field="ready">'
        f"{text('ready' if ready else 'not ready')}</p>{checks}"
        '<figure class="chart" data-chart="ingest-chart" data-stacked="false">'
        "<figcaption>Calls committed per minute, last hour</figcaption></figure>"
        + json_block("ingest-chart", health.ingest)
        + f"<section><h2>Export</h2>{export}</section>"
        "<section><h2>Ingest, refusals, queues, checks, hooks and forwarding</h2>"
        "<p>The figures <code>/metrics</code> serves, since the collector started.</p>"
        + table(["Metric", "Labels", "Value"], _metric_rows(health.metrics), numeric_from=2)
        + "</section>"
    )
