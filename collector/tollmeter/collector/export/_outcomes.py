"""Outcomes exported to Parquet beside the events, exactly once, by the events' protocol.

Files go to the events' store, under ``_outcomes/``::

    _outcomes/date=YYYY-MM-DD/<collector>-<first sequence:020>-<last sequence:020>.parquet

The leading underscore keeps them out of the events dataset for the readers that skip
such paths (pyarrow datasets, Spark, the events exporter's own listing); read
``_outcomes/`` as a dataset of its own. Columns: ``outcome_id``, ``tenant_id``,
``workflow_id``, ``name``, ``value`` (decimal), ``time``, ``sequence``, ``collector_id``.

One run, after the events' run, under the same store lock and export lease:

1. load the cursor (ledger state ``export.outcomes.cursor``: sequence, pending batch,
   store identity); a store with another identity (new or wiped) starts over from the
   first outcome;
2. take the pending batch, or read up to ``batch_size`` outcomes after the cursor and
   record ``pending = (first, last)`` and the writer's name durably;
3. write one file per date of the batch, each complete or absent (the store's part);
4. advance the cursor to ``last`` and clear the intent, in one state write.

A crash leaves the old cursor with the same intent (the batch is rewritten under the
same names with the same content) or the new cursor (nothing is redone). Unlike the
events, files beyond the cursor left by a restored ledger are not removed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from tollmeter.collector.errors import ExportBusy, ExportStoreError
from tollmeter.collector.export._store import ExportStore
from tollmeter.collector.export._writer import (
    FileFormat,
    file_name,
    safe_collector_name,
    split_by_date,
)

__all__ = ["OUTCOMES_CURSOR_KEY", "OUTCOMES_DIRECTORY", "OUTCOME_SCHEMA", "OutcomeExporter"]

logger = logging.getLogger(__name__)

OUTCOMES_CURSOR_KEY = "export.outcomes.cursor"
OUTCOMES_DIRECTORY = "_outcomes"
OUTCOME_SCHEMA = pa.schema(
    [
        pa.field("outcome_id", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("workflow_id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        # At most 10^15 with 12 decimals (collector/_outcomes.py): 28 digits hold any value.
        pa.field("value", pa.decimal128(28, 12), nullable=False),
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("sequence", pa.int64(), nullable=False),
        pa.field("collector_id", pa.string()),
    ],
    metadata={"tollmeter.table": "outcomes", "tollmeter.schema_version": "1"},
)
_QUANTUM = Decimal(1).scaleb(-12)


@runtime_checkable
class OutcomeSource(Protocol):
    """The part of the ledger the outcome export reads from."""

    def read_outcome_rows(self, after_sequence: int, limit: int) -> list[tuple[Any, ...]]: ...

    def get_state(self, key: str) -> str | None: ...

    def set_state(self, key: str, value: str) -> None: ...


@dataclass(frozen=True, slots=True)
class _Cursor:
    sequence: int = 0
    pending: tuple[int, int] | None = None
    store_id: str | None = None
    writer: str | None = None

    def dumps(self) -> str:
        return json.dumps(
            {
                "sequence": self.sequence,
                "pending": None if self.pending is None else list(self.pending),
                "store_id": self.store_id,
                "writer": self.writer,
            }
        )


def _load(source: OutcomeSource) -> _Cursor:
    text = source.get_state(OUTCOMES_CURSOR_KEY)
    if text is None:
        return _Cursor()
    data = json.loads(text)
    pending = data.get("pending")
    return _Cursor(
        int(data["sequence"]),
        None if pending is None else (int(pending[0]), int(pending[1])),
        data.get("store_id"),
        data.get("writer"),
    )


class OutcomeExporter:
    """Exports the ledger's outcomes to ``store`` exactly once (module docstring)."""

    def __init__(
        self,
        source: OutcomeSource,
        store: ExportStore,
        *,
        collector_id: str | None,
        timezone: str = "UTC",
        batch_size: int = 100_000,
        file_format: FileFormat | None = None,
        timeout_s: float = 300.0,
        checkpoint: Callable[[str], None] = lambda name: None,
    ) -> None:
        self._timeout_s = timeout_s
        self._source = source
        self._store = store
        self._collector_id = collector_id
        self._timezone = timezone
        self._batch_size = batch_size
        self._format = file_format or FileFormat()
        self._checkpoint = checkpoint

    def export(self, *, timeout: float | None = None) -> int:
        """Export the outcomes not exported yet; how many. Failures are logged, never raised."""
        timeout = self._timeout_s if timeout is None else max(0.0, timeout)
        deadline = time.monotonic() + timeout
        try:
            with self._store.lock(timeout):
                return self._export(deadline)
        except ExportBusy:
            return 0
        except ExportStoreError as exc:
            logger.error("outcome export: %s; the next run tries again", exc)
        except Exception:
            logger.exception("outcome export into %s failed", self._store.location)
        return 0

    def _export(self, deadline: float) -> int:
        cursor = _load(self._source)
        identity = self._store.identity()
        if cursor.store_id != identity:
            cursor = _Cursor(store_id=identity)
            self._save(cursor)
        exported = 0
        while cursor.pending is not None or time.monotonic() < deadline:
            if cursor.pending is None:
                rows = self._source.read_outcome_rows(cursor.sequence, self._batch_size)
                if not rows:
                    return exported
                batch = (int(rows[0][-1]), int(rows[-1][-1]))
                cursor = _Cursor(cursor.sequence, batch, identity, self._collector_id or "")
                self._save(cursor)
                self._checkpoint("intent_recorded")
            else:
                batch = cursor.pending
                # Sequences may have gaps (refused duplicates): read past them, keep the batch.
                rows = [
                    row
                    for row in self._source.read_outcome_rows(batch[0] - 1, self._batch_size)
                    if int(row[-1]) <= batch[1]
                ]
            if rows:
                # The writer that began the batch names its files, so a rewrite replaces them.
                writer = self._collector_id if cursor.writer is None else cursor.writer or None
                self._write(rows, writer)
                exported += len(rows)
            cursor = _Cursor(batch[1], None, identity)
            self._save(cursor)
            self._checkpoint("cursor_advanced")
        return exported

    def _save(self, cursor: _Cursor) -> None:
        self._source.set_state(OUTCOMES_CURSOR_KEY, cursor.dumps())

    def _write(self, rows: Sequence[tuple[Any, ...]], writer: str | None) -> None:
        table = outcomes_table(rows, collector_id=writer)
        name = safe_collector_name(writer)
        for day, part in split_by_date(table, self._timezone):
            sequences = part.column("sequence")
            relative = (
                f"{OUTCOMES_DIRECTORY}/date={day}/"
                f"{file_name(name, sequences[0].as_py(), sequences[-1].as_py())}"
            )
            self._store.write(
                relative,
                part,
                file_format=self._format,
                metadata={"tollmeter.table": "outcomes", "tollmeter.schema_version": "1"},
                checkpoint=self._checkpoint,
            )


def outcomes_table(rows: Sequence[tuple[Any, ...]], *, collector_id: str | None) -> pa.Table:
    """Ledger outcome rows (``storage/_outcomes.py``) as a table of ``OUTCOME_SCHEMA``."""
    columns = list(zip(*rows, strict=True))
    values = [Decimal(str(value)).quantize(_QUANTUM) for value in columns[4]]
    times = pa.array(columns[5], pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
    return pa.table(
        {
            "outcome_id": pa.array(columns[0], pa.string()),
            "tenant_id": pa.array(columns[1], pa.string()),
            "workflow_id": pa.array(columns[2], pa.string()),
            "name": pa.array(columns[3], pa.string()),
            "value": pa.array(values, pa.decimal128(28, 12)),
            "event_time": times.cast(pa.timestamp("us", tz="UTC"), safe=False),
            "sequence": pa.array(columns[6], pa.int64()),
            "collector_id": pa.array([collector_id] * len(rows), pa.string()),
        },
        schema=OUTCOME_SCHEMA,
    )
