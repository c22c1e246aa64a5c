"""Compare provider reports with the ledger, per day and model (and project or API key).

The ledger is read through its events API only (``Ledger.read_events``), so the
comparison runs the same on every ledger backend; the events are scanned once and summed
per provider, UTC day, model, project and API key into the four exclusive token types
and the cost in the report's currency (US dollars for both providers).

For each measure a row gives the ledger's figure, the report's, the difference
(report minus ledger) and that difference as a percentage of the ledger's figure
(``None`` when the ledger has nothing and the report something: no finite percentage).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Literal

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.billing._report import TOKEN_TYPES, ReportRow
from tollmeter.collector.storage import Ledger

__all__ = [
    "GRAINS",
    "MEASURES",
    "Drift",
    "Grain",
    "Reconciliation",
    "ReconciliationRow",
    "ledger_events",
    "reconcile",
]

Grain = Literal["model", "project", "api_key"]
GRAINS: tuple[Grain, ...] = ("model", "project", "api_key")
MEASURES = (*TOKEN_TYPES, "cost")
_SCAN_BATCH = 5000
_REPORT_CURRENCY = "USD"

_Key = tuple[str, date, str | None, str | None, str | None]
"""Provider, day, model, project, API key (the last two ``None`` unless compared by)."""


@dataclass(frozen=True, slots=True)
class Drift:
    measure: str
    ledger: Decimal
    report: Decimal
    difference: Decimal
    percent: Decimal | None

    def to_json(self) -> dict[str, object]:
        return {
            "ledger": _number(self.ledger),
            "report": _number(self.report),
            "difference": _number(self.difference),
            "percent": None if self.percent is None else float(round(self.percent, 4)),
        }


@dataclass(frozen=True, slots=True)
class ReconciliationRow:
    provider: str
    day: date
    model: str | None
    project: str | None
    api_key: str | None
    measures: tuple[Drift, ...]

    def drifted(self, threshold_percent: Decimal) -> list[Drift]:
        """The measures whose drift reaches ``threshold_percent`` (either way)."""
        return [
            drift
            for drift in self.measures
            if drift.difference != 0
            and (drift.percent is None or abs(drift.percent) >= threshold_percent)
        ]

    def to_json(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "day": self.day.isoformat(),
            "model": self.model,
            "project": self.project,
            "api_key": self.api_key,
            "measures": {drift.measure: drift.to_json() for drift in self.measures},
        }


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The comparison of ``providers``' reports with the ledger over ``[start, end)``."""

    start: date
    end: date
    by: Grain
    providers: tuple[str, ...]
    rows: tuple[ReconciliationRow, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "by": self.by,
            "providers": list(self.providers),
            "rows": [row.to_json() for row in self.rows],
        }


def _number(value: Decimal) -> int | str:
    """Token counts as JSON integers, money as a decimal string (exact)."""
    if value == value.to_integral_value() and not str(value).count("."):
        return int(value)
    return str(value)


def ledger_events(ledger: Ledger, start: datetime, end: datetime) -> Iterator[UsageEvent]:
    """The ledger's events whose time is in ``[start, end)``, read in sequence order."""
    low = _epoch_ns(start)
    high = _epoch_ns(end)
    after = 0
    while True:
        batch = ledger.read_events(after, _SCAN_BATCH)
        if not batch:
            return
        for event in batch:
            if low <= event.event_time_ns < high:
                yield event
        after = batch[-1].sequence


def _epoch_ns(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _key(
    provider: str, day: date, model: str | None, project: str | None, api_key: str | None, by: Grain
) -> _Key:
    return (
        provider,
        day,
        model,
        project if by == "project" else None,
        api_key if by == "api_key" else None,
    )


def _ledger_sums(
    ledger: Ledger, providers: Sequence[str], start: date, end: date, by: Grain
) -> dict[_Key, dict[str, Decimal]]:
    sums: dict[_Key, dict[str, Decimal]] = defaultdict(lambda: dict.fromkeys(MEASURES, Decimal(0)))
    first = datetime.combine(start, time(), tzinfo=timezone.utc)
    last = datetime.combine(end, time(), tzinfo=timezone.utc)
    for event in ledger_events(ledger, first, last):
        if event.provider not in providers:
            continue
        day = datetime.fromtimestamp(event.event_time_ns // 1_000_000_000, tz=timezone.utc).date()
        target = sums[
            _key(event.provider, day, event.model, event.project_id, event.api_key_id, by)
        ]
        target["uncached_input_tokens"] += event.uncached_input_tokens
        target["cache_read_input_tokens"] += event.cache_read_input_tokens
        target["cache_write_input_tokens"] += event.cache_write_input_tokens
        target["output_tokens"] += event.output_tokens
        if event.cost is not None and (event.currency or _REPORT_CURRENCY) == _REPORT_CURRENCY:
            target["cost"] += event.cost
    return sums


def _report_sums(
    usage: Sequence[ReportRow], costs: Sequence[ReportRow], by: Grain
) -> tuple[dict[_Key, dict[str, Decimal]], set[_Key]]:
    sums: dict[_Key, dict[str, Decimal]] = defaultdict(lambda: dict.fromkeys(MEASURES, Decimal(0)))
    for row in usage:
        target = sums[_key(row.provider, row.day, row.model, row.project, row.api_key, by)]
        for kind in TOKEN_TYPES:
            target[kind] += row.tokens(kind)
    priced: set[_Key] = set()
    # Cost reports name no API key: costs are compared by model, or model and project.
    if by != "api_key":
        for row in costs:
            if row.cost is None or row.model is None or row.currency != _REPORT_CURRENCY:
                continue
            key = _key(row.provider, row.day, row.model, row.project, None, by)
            sums[key]["cost"] += row.cost
            priced.add(key)
    return sums, priced


def reconcile(
    ledger: Ledger,
    usage: Sequence[ReportRow],
    costs: Sequence[ReportRow],
    *,
    providers: Sequence[str],
    start: date,
    end: date,
    by: Grain = "model",
) -> Reconciliation:
    """Compare the reports' rows (of ``providers``, days ``[start, end)``) with the ledger.

    The cost is compared only where a cost report was imported (``costs`` not empty).
    """
    ledger_sums = _ledger_sums(ledger, providers, start, end, by)
    report_sums, priced = _report_sums(usage, costs, by)
    with_costs = {row.provider for row in costs}
    zero: Mapping[str, Decimal] = dict.fromkeys(MEASURES, Decimal(0))
    rows = []
    for key in sorted(set(ledger_sums) | set(report_sums), key=_order):
        mine, theirs = ledger_sums.get(key, zero), report_sums.get(key, zero)
        compare_cost = key[0] in with_costs and by != "api_key"
        measures = tuple(
            _drift(name, mine[name], theirs[name])
            for name in MEASURES
            if name != "cost" or compare_cost
        )
        if compare_cost and key not in priced and mine["cost"] == 0:
            measures = measures[:-1]
        rows.append(ReconciliationRow(*key, measures=measures))
    return Reconciliation(start, end, by, tuple(providers), tuple(rows))


def _order(key: _Key) -> tuple[str, ...]:
    return tuple("" if part is None else str(part) for part in key)


def _drift(measure: str, ledger: Decimal, report: Decimal) -> Drift:
    difference = report - ledger
    percent: Decimal | None = difference / ledger * 100 if ledger else None
    if not ledger and not report:
        percent = Decimal(0)
    return Drift(measure, ledger, report, difference, percent)
