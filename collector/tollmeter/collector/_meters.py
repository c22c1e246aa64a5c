"""In-memory usage meters: recent per-window totals per tenant, project, model, feature, key.

Meters answer "how much has tenant X used this hour?" without touching the ledger.
They are rebuilt from the ledger's rollups at start and updated after every commit.
Memory stays bounded: each window keeps only its recent buckets (by default three
hours of minutes, three days of hours, 62 days of days and 25 months of months).
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from tollmeter.collector._dimensions import METER_DIMENSIONS, DimensionKey
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import (
    DIMENSIONS,
    WINDOWS,
    Ledger,
    UsageQuery,
    Window,
    bucket_start,
)
from tollmeter.collector.storage._rollups import MinuteSums, minute_sums
from tollmeter.collector.storage._windows import bucket_starts

__all__ = [
    "DEFAULT_RETENTION_S",
    "METER_DIMENSIONS",
    "MeterTotals",
    "Meters",
    "ledger_breakdown",
]

DEFAULT_RETENTION_S: Mapping[Window, int] = {
    "minute": 3 * 3600,
    "hour": 3 * 86400,
    "day": 62 * 86400,
    "month": 25 * 31 * 86400,
}
_NS = 1_000_000_000
_EVICT_EVERY_S = 10.0

_Key = DimensionKey


@dataclass(slots=True)
class MeterTotals:
    """Token buckets, requests and cost of one meter cell or sum of cells.

    ``estimated_*`` repeat the part of the totals that was not reported by the
    provider (tokenizer estimates, expired reservations).
    """

    input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0
    estimated_total_tokens: int = 0
    estimated_requests: int = 0
    cost: Decimal = Decimal(0)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["cost"] = str(self.cost)
        return out


# Internally a cell is a list in MeterTotals field order (cost last): adding two cells
# is one C-level map over the lists, which keeps ``apply`` cheap on the writer thread.
_Cell = list[Any]
_Tokens = tuple[int, int, int, int, int, int]


def _cell(tokens: _Tokens, requests: int, source: str, cost: Decimal | None) -> _Cell:
    estimated = source != "provider"
    return [
        *tokens,
        requests,
        tokens[5] if estimated else 0,
        requests if estimated else 0,
        cost or Decimal(0),
    ]


def _empty() -> _Cell:
    return _cell((0, 0, 0, 0, 0, 0), 0, "provider", None)


def _add(target: _Cell, amount: _Cell) -> None:
    target[:] = map(operator.add, target, amount)


def _totals(cell: _Cell | None) -> MeterTotals:
    return MeterTotals() if cell is None else MeterTotals(*cell)


class _Bucket:
    """The cells of one window bucket, with per-dimension sums for O(1) lookups."""

    __slots__ = ("by_dimension", "cells", "total")

    def __init__(self) -> None:
        self.cells: dict[_Key, _Cell] = {}
        self.by_dimension: list[dict[str, _Cell]] = [{} for _ in METER_DIMENSIONS]
        self.total = _empty()

    def add(self, key: _Key, amount: _Cell) -> None:
        # Runs seven times per window and key of every commit: the additions are inlined.
        plus = operator.add
        cell = self.cells.get(key)
        if cell is None:
            self.cells[key] = list(amount)
        else:
            cell[:] = map(plus, cell, amount)
        total = self.total
        total[:] = map(plus, total, amount)
        # The key's last part, the usage source, is not a meter dimension.
        for value, sums in zip(key, self.by_dimension, strict=False):
            entry = sums.get(value)
            if entry is None:
                sums[value] = list(amount)
            else:
                entry[:] = map(plus, entry, amount)

    def merge(self, other: _Bucket) -> None:
        """Add every cell and sum of ``other``, which stays unchanged."""
        plus = operator.add
        pairs: list[tuple[dict[Any, _Cell], dict[Any, _Cell]]] = [
            (self.cells, other.cells),
            *zip(self.by_dimension, other.by_dimension, strict=True),
        ]
        for mine, theirs in pairs:
            for key, amount in theirs.items():
                cell = mine.get(key)
                if cell is None:
                    mine[key] = list(amount)
                else:
                    cell[:] = map(plus, cell, amount)
        total = self.total
        total[:] = map(plus, total, other.total)


class Meters:
    """Thread-safe per-window usage totals over recent buckets."""

    def __init__(self, *, retention_s: Mapping[Window, int] | None = None) -> None:
        self._retention_s = dict(DEFAULT_RETENTION_S if retention_s is None else retention_s)
        missing = set(WINDOWS) - set(self._retention_s)
        if missing:
            raise ValueError(f"retention_s lacks {', '.join(sorted(missing))}")
        self._buckets: dict[Window, dict[int, _Bucket]] = {window: {} for window in WINDOWS}
        self._lock = threading.Lock()
        self._last_evict = 0.0

    def apply(self, events: Sequence[UsageEvent]) -> None:
        """Count newly committed events."""
        self.apply_minutes(minute_sums(events))

    def apply_minutes(self, minutes: MinuteSums) -> None:
        """Count a commit's per-minute sums, as the ledger computed them for its rollups."""
        # Per minute into a bucket of its own, whose total and per-dimension sums each
        # window's bucket takes in one addition per distinct value, not one per key.
        batches: dict[int, _Bucket] = {}
        for minute_key, sums in minutes.items():
            minute, key = minute_key[0], minute_key[1:]
            batch = batches.get(minute)
            if batch is None:
                batches[minute] = batch = _Bucket()
            tokens = (sums[0], sums[1], sums[2], sums[3], sums[4], sums[5])
            batch.add(key, _cell(tokens, sums[6], key[5], sums[7]))
        now = time.time()
        with self._lock:
            horizons = self._horizons(now)
            for minute, batch in batches.items():
                for window, bucket in zip(WINDOWS, bucket_starts(minute), strict=True):
                    if bucket >= horizons[window]:
                        self._bucket(window, bucket).merge(batch)
            if now - self._last_evict >= _EVICT_EVERY_S:
                self._evict(horizons)
                self._last_evict = now

    def rebuild(self, ledger: Ledger) -> None:
        """Replace every meter with the ledger's rollups over the retained buckets."""
        now = time.time()
        fresh: dict[Window, dict[int, _Bucket]] = {window: {} for window in WINDOWS}
        for window, horizon in self._horizons(now).items():
            query = UsageQuery(
                group_by=DIMENSIONS,
                window=window,
                start=datetime.fromtimestamp(horizon, tz=timezone.utc),
                limit=10_000_000,
            )
            for row in ledger.query_usage(query):
                if row.window_start is None:  # never: the query is bucketed by window
                    continue
                key: _Key = (
                    row.tenant or "",
                    row.project or "",
                    row.model or "",
                    row.feature or "",
                    row.api_key or "",
                    row.usage_source or "",
                )
                tokens = (
                    row.input_tokens,
                    row.cache_read_input_tokens,
                    row.cache_write_input_tokens,
                    row.output_tokens,
                    row.reasoning_output_tokens,
                    row.total_tokens,
                )
                amount = _cell(tokens, row.requests, row.usage_source or "", row.cost)
                bucket = int(row.window_start.timestamp())
                fresh[window].setdefault(bucket, _Bucket()).add(key, amount)
        with self._lock:
            self._buckets = fresh

    def totals(
        self,
        window: Window,
        *,
        at: datetime | None = None,
        tenant: str | None = None,
        project: str | None = None,
        model: str | None = None,
        feature: str | None = None,
        api_key: str | None = None,
    ) -> MeterTotals:
        """Totals of the ``window`` bucket holding ``at`` (default: now) matching the filters."""
        moment = time.time() if at is None else at.timestamp()
        bucket_key = bucket_start(window, int(moment))
        filters = [
            (index, value)
            for index, value in enumerate((tenant, project, model, feature, api_key))
            if value is not None
        ]
        with self._lock:
            bucket = self._buckets[window].get(bucket_key)
            if bucket is None:
                return MeterTotals()
            if not filters:
                return _totals(bucket.total)
            if len(filters) == 1:
                index, value = filters[0]
                return _totals(bucket.by_dimension[index].get(value))
            result = _empty()
            for key, cell in bucket.cells.items():
                if all(key[index] == value for index, value in filters):
                    _add(result, cell)
            return _totals(result)

    def breakdown(
        self, window: Window, dimension: str, *, at: datetime | None = None
    ) -> dict[str, MeterTotals]:
        """Totals of the current (or ``at``) bucket per value of one meter dimension."""
        if dimension not in METER_DIMENSIONS:
            raise ValueError(f"unknown meter dimension {dimension!r}")
        moment = time.time() if at is None else at.timestamp()
        index = METER_DIMENSIONS.index(dimension)
        with self._lock:
            bucket = self._buckets[window].get(bucket_start(window, int(moment)))
            if bucket is None:
                return {}
            return {value: _totals(cell) for value, cell in bucket.by_dimension[index].items()}

    def bucket_count(self, window: Window | None = None) -> int:
        """How many buckets (of one window, or all) are held; memory follows their cells."""
        with self._lock:
            if window is not None:
                return len(self._buckets[window])
            return sum(len(buckets) for buckets in self._buckets.values())

    def _horizons(self, now: float) -> dict[Window, int]:
        return {
            window: bucket_start(window, int(now) - self._retention_s[window]) for window in WINDOWS
        }

    def _bucket(self, window: Window, bucket: int) -> _Bucket:
        found = self._buckets[window].get(bucket)
        if found is None:
            self._buckets[window][bucket] = found = _Bucket()
        return found

    def _evict(self, horizons: Mapping[Window, int]) -> None:
        for window, buckets in self._buckets.items():
            for bucket in [b for b in buckets if b < horizons[window]]:
                del buckets[bucket]


def ledger_breakdown(
    ledger: Ledger, window: Window, dimension: str, *, at: datetime | None = None
) -> dict[str, MeterTotals]:
    """``Meters.breakdown`` read from the ledger's rollups instead of this process's meters.

    For a ledger shared by replicas, where each process's meters only add its own commits
    to the rollups it found at start: every replica answers the same from the ledger.
    """
    if dimension not in METER_DIMENSIONS:
        raise ValueError(f"unknown meter dimension {dimension!r}")
    moment = int(time.time() if at is None else at.timestamp())
    start = bucket_start(window, moment)
    query = UsageQuery(
        group_by=(dimension, "usage_source"),
        window=window,
        start=datetime.fromtimestamp(start, tz=timezone.utc),
    )
    cells: dict[str, _Cell] = {}
    for row in ledger.query_usage(query):
        if row.window_start is None or int(row.window_start.timestamp()) != start:
            continue  # a later bucket: events stamped ahead of this clock
        tokens = (
            row.input_tokens,
            row.cache_read_input_tokens,
            row.cache_write_input_tokens,
            row.output_tokens,
            row.reasoning_output_tokens,
            row.total_tokens,
        )
        amount = _cell(tokens, row.requests, row.usage_source or "", row.cost)
        value = getattr(row, dimension) or ""
        target = cells.get(value)
        if target is None:
            cells[value] = amount
        else:
            _add(target, amount)
    return {value: _totals(cell) for value, cell in cells.items()}
