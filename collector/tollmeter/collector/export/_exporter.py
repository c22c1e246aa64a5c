"""The exporter: ledger events after the cursor, written once to date-partitioned Parquet.

One export run, under the store's lock:

1. check the store's identity against the cursor's (start over when the
   directory or bucket prefix is new or was wiped) and, once per process, remove
   this collector's files beyond the cursor (and those of the collector named in
   the pending intent) and any temporary files, which only an interrupted run or a
   restored ledger can leave behind;
2. per batch: take the pending intent, or read up to ``batch_size`` events after
   the cursor and record ``pending = (first, last)`` and the writer's name durably;
3. write one file per date partition of the batch, each complete or absent
   (directory: temp, fsync, rename, fsync dir; object storage: one upload to the
   final key);
4. advance the cursor to ``last`` and clear the intent, in one state write.

A crash anywhere leaves either the old cursor with the same intent (so the same
batch is rewritten under the same names, with the same content) or the new cursor
(so nothing is redone). The store (``_store.py``) is the only part that differs
between a directory and object storage.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import logging
import operator
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.errors import ExportBusy, ExportStoreError
from tollmeter.collector.export._config import ExportConfig
from tollmeter.collector.export._cursor import Cursor, ExportSource, load_cursor, save_cursor
from tollmeter.collector.export._local import LocalStore
from tollmeter.collector.export._manifest import Manifest, chain_head, manifest_name
from tollmeter.collector.export._schema import events_to_table, rows_to_table
from tollmeter.collector.export._store import ExportStore, open_store
from tollmeter.collector.export._writer import (
    FileFormat,
    file_name,
    safe_collector_name,
    split_by_date,
)
from tollmeter.collector.pricing import Pricer
from tollmeter.collector.storage._chain import GENESIS

__all__ = ["ExportResult", "ExportStatus", "Exporter"]

logger = logging.getLogger(__name__)


class ExportStatus(enum.Enum):
    SUCCESS = "success"
    BUSY = "busy"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class ExportResult:
    """The outcome of one export run; failures are values, never exceptions.

    ``files`` are relative to the export directory. ``caught_up`` is false when the
    run stopped at its deadline with events still to export.
    """

    status: ExportStatus
    events: int = 0
    files: tuple[str, ...] = ()
    cursor: int = 0
    caught_up: bool = True
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "events": self.events,
            "files": list(self.files),
            "cursor": self.cursor,
            "caught_up": self.caught_up,
            "error": self.error,
        }


def _no_checkpoint(name: str) -> None:
    del name


@runtime_checkable
class RowSource(Protocol):
    """A source that also reads events as plain rows (``Ledger.read_event_rows``): every
    ``UsageEvent`` field in field order, text as ``str`` or UTF-8 ``bytes``, the cost as
    decimal text."""

    def read_event_rows(self, after_sequence: int, limit: int) -> list[tuple[Any, ...]]: ...


_FIELDS = tuple(f.name for f in dataclasses.fields(UsageEvent))
_EVENT_VALUES = operator.attrgetter(*_FIELDS)
_ROW_SEQUENCE = operator.itemgetter(_FIELDS.index("sequence"))
_COST = _FIELDS.index("cost")
_PRICE_SOURCE = _FIELDS.index("price_source")


def _priced_row(pricer: Pricer, row: tuple[Any, ...]) -> tuple[Any, ...]:
    values: list[Any] = [value.decode() if isinstance(value, bytes) else value for value in row]
    if values[_COST] is not None:
        values[_COST] = Decimal(values[_COST])
    event = pricer.price(UsageEvent(*values))
    priced = list(_EVENT_VALUES(event))
    if event.cost is not None:
        priced[_COST] = str(event.cost)
    return tuple(priced)


class Exporter:
    """Exports ledger events to ``target`` (a directory or a store) exactly once. Thread-safe.

    ``batch_size`` events at most go into one batch (one file per date);
    ``read_chunk_size`` bounds how many events are alive as Python values at once
    while a batch is read. A source with ``read_event_rows`` (the ledgers) is read as
    plain rows, converted to Arrow column by column in C; other sources through
    ``read_events``. ``checkpoint`` is called with the name of each step as it completes
    (``intent_recorded``, ``temp_written`` and ``renamed`` in a directory, ``uploaded``
    in object storage, ``between_partitions``, ``cursor_advanced``); crash tests stop
    the process there.
    """

    def __init__(
        self,
        source: ExportSource,
        target: Path | ExportStore,
        *,
        collector_id: str | None = None,
        timezone: str = "UTC",
        batch_size: int = 100_000,
        file_format: FileFormat | None = None,
        pricer: Pricer | None = None,
        timeout_s: float = 300.0,
        read_chunk_size: int = 10_000,
        checkpoint: Callable[[str], None] = _no_checkpoint,
    ) -> None:
        self.store = target if isinstance(target, ExportStore) else LocalStore(target)
        self._source = source
        self._collector_id = collector_id
        self._collector = safe_collector_name(collector_id)
        self._timezone = timezone
        self._batch_size = batch_size
        self._read_chunk_size = read_chunk_size
        self._format = file_format or FileFormat()
        self._pricer = pricer
        self._timeout_s = timeout_s
        self._checkpoint = checkpoint
        self._lock = threading.Lock()
        self._reconciled = False
        self._tail: tuple[int, bytes] | None = None

    @classmethod
    def from_config(
        cls,
        source: ExportSource,
        config: ExportConfig,
        *,
        data_dir: Path,
        collector_id: str | None,
        pricer: Pricer | None = None,
        checkpoint: Callable[[str], None] = _no_checkpoint,
    ) -> Exporter:
        return cls(
            source,
            open_store(config, data_dir=data_dir),
            collector_id=collector_id,
            timezone=config.timezone,
            batch_size=config.batch_size,
            file_format=FileFormat(config.row_group_size, config.compression_level),
            pricer=pricer,
            timeout_s=config.timeout_s,
            checkpoint=checkpoint,
        )

    def export(self, *, timeout: float | None = None) -> ExportResult:
        """Export every committed event not exported yet, until caught up or ``timeout``."""
        deadline = time.monotonic() + (self._timeout_s if timeout is None else timeout)
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return ExportResult(ExportStatus.BUSY, error="an export is already running")
        try:
            with self.store.lock(max(0.0, deadline - time.monotonic())):
                return self._export(deadline)
        except ExportBusy as exc:
            return ExportResult(ExportStatus.BUSY, error=str(exc))
        except ExportStoreError as exc:
            # The operator's to fix (bucket, credentials, endpoint): one line, no traceback.
            self._reconciled = False
            logger.error("%s; the next run tries again", exc)
            return ExportResult(ExportStatus.FAILURE, error=str(exc))
        except Exception as exc:
            self._reconciled = False
            logger.exception("Parquet export into %s failed", self.store.location)
            return ExportResult(ExportStatus.FAILURE, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._lock.release()

    def reset(self) -> None:
        """Forget the cursor: the next export rewrites every event still in the ledger.

        Raises ``ExportBusy`` when an export keeps running past the timeout.
        """
        if not self._lock.acquire(timeout=self._timeout_s):
            raise ExportBusy("an export is already running")
        try:
            with self.store.lock(self._timeout_s):
                save_cursor(self._source, Cursor())
                self._reconciled = False
        finally:
            self._lock.release()

    def _export(self, deadline: float) -> ExportResult:
        cursor = self._open()
        exported = 0
        files: list[str] = []
        while True:
            if cursor.pending is None and time.monotonic() >= deadline:
                return ExportResult(
                    ExportStatus.SUCCESS, exported, tuple(files), cursor.sequence, False
                )
            cursor, table = self._next_batch(cursor)
            if cursor.pending is None:
                return ExportResult(ExportStatus.SUCCESS, exported, tuple(files), cursor.sequence)
            if table is not None:
                batch = (cursor.sequence, cursor.pending[1])
                writer = safe_collector_name(self._writer(cursor))
                files.extend(self._write_table(table, writer, batch))
                exported += table.num_rows
            # Without rows the intent pointed past a restored ledger: it is dropped.
            cursor = Cursor(
                cursor.pending[1] if table is not None else cursor.sequence,
                None,
                cursor.directory_id,
            )
            save_cursor(self._source, cursor)
            self._checkpoint("cursor_advanced")

    def _next_batch(self, cursor: Cursor) -> tuple[Cursor, pa.Table | None]:
        """The pending batch, or a new one recorded as pending; ``pending`` is ``None``
        when there is nothing to export.

        Events are read and turned into Arrow in chunks of ``read_chunk_size``, so only
        one chunk of Python values is alive at a time: a batch costs its Arrow
        size, about 400 bytes per event, plus one chunk.
        """
        if cursor.pending is None:
            table = self._read(cursor.sequence, self._batch_size, None, self._collector_id)
            if table is None:
                return cursor, None
            sequences = table.column("sequence")
            pending = (sequences[0].as_py(), sequences[-1].as_py())
            cursor = Cursor(cursor.sequence, pending, cursor.directory_id, self._collector_id or "")
            save_cursor(self._source, cursor)
            self._checkpoint("intent_recorded")
            return cursor, table
        first, last = cursor.pending
        return cursor, self._read(first - 1, self._batch_size, last, self._writer(cursor))

    def _writer(self, cursor: Cursor) -> str | None:
        """The collector id a pending batch is written under: the one that began it
        (possibly another replica sharing the ledger), so its files keep their names
        and content."""
        return self._collector_id if cursor.writer is None else cursor.writer or None

    def _read(
        self, after: int, limit: int, last: int | None, collector_id: str | None
    ) -> pa.Table | None:
        """Up to ``limit`` events after ``after`` (and up to ``last``) as one table."""
        if isinstance(self._source, RowSource):
            return self._read_rows(self._source, after, limit, last, collector_id)
        tables: list[pa.Table] = []
        while limit > 0:
            chunk = min(limit, self._read_chunk_size)
            events = self._source.read_events(after, chunk)
            exhausted = len(events) < chunk
            if last is not None:
                exhausted = exhausted or (bool(events) and events[-1].sequence >= last)
                events = [event for event in events if event.sequence <= last]
            if events:
                if self._pricer is not None:
                    pricer = self._pricer
                    events = [pricer.price(e) if e.price_source is None else e for e in events]
                tables.append(events_to_table(events, collector_id=collector_id))
                after = events[-1].sequence
                limit -= len(events)
            if exhausted or not events:
                break
        return pa.concat_tables(tables) if tables else None

    def _read_rows(
        self,
        source: RowSource,
        after: int,
        limit: int,
        last: int | None,
        collector_id: str | None,
    ) -> pa.Table | None:
        """``_read`` from plain ledger rows: no ``UsageEvent`` per row, except unpriced
        rows when the exporter prices."""
        tables: list[pa.Table] = []
        while limit > 0:
            chunk = min(limit, self._read_chunk_size)
            rows = source.read_event_rows(after, chunk)
            exhausted = len(rows) < chunk
            if last is not None and rows:
                exhausted = exhausted or _ROW_SEQUENCE(rows[-1]) >= last
                rows = rows[: bisect.bisect_right(rows, last, key=_ROW_SEQUENCE)]
            if rows:
                if self._pricer is not None:
                    pricer = self._pricer
                    rows = [_priced_row(pricer, r) if r[_PRICE_SOURCE] is None else r for r in rows]
                tables.append(rows_to_table(rows, collector_id=collector_id))
                after = _ROW_SEQUENCE(rows[-1])
                limit -= len(rows)
            if exhausted or not rows:
                break
        return pa.concat_tables(tables) if tables else None

    def _head_before(self, after: int) -> bytes | None:
        """The manifest head of the last file holding sequences up to ``after``: the
        previous run's, or read from the store (``None`` when there is none)."""
        if self._tail is not None and self._tail[0] == after:
            return self._tail[1]
        earlier = [file for file in self.store.export_files() if file.first_sequence <= after]
        if not earlier:
            return None
        last = max(earlier, key=lambda file: file.first_sequence)
        data = self.store.read_bytes(manifest_name(last.relative))
        if data is None:
            logger.warning("export file %s has no manifest: the chain starts again", last.relative)
            return None
        return bytes.fromhex(Manifest.from_bytes(data).head)

    def _open(self) -> Cursor:
        cursor = load_cursor(self._source)
        identity = self.store.identity()
        if cursor.directory_id != identity:
            if cursor.directory_id is not None:
                logger.warning(
                    "export store %s is new or was emptied: exporting every event again",
                    self.store.location,
                )
            cursor = Cursor(directory_id=identity)
            save_cursor(self._source, cursor)
            self._reconciled = False
        if not self._reconciled:
            cursor = self._reconcile(cursor)
            self._reconciled = True
        return cursor

    def _reconcile(self, cursor: Cursor) -> Cursor:
        """Remove this collector's files holding events beyond the cursor, and those
        of the writer of a pending batch (another replica sharing the ledger).

        Only an interrupted batch (rewritten next under the same names) or a
        restored ledger (whose cursor is older than the files) leaves such files.
        A file that straddles the cursor moves it back to just before the file,
        so that every event is in exactly one file afterwards.
        """
        removed = self.store.remove_leftovers()
        ours = {self._collector, safe_collector_name(self._writer(cursor))}
        files = [file for file in self.store.export_files() if file.collector in ours]
        sequence = cursor.sequence
        moved = True
        while moved:
            moved = False
            for file in files:
                if file.first_sequence <= sequence < file.last_sequence:
                    sequence, moved = file.first_sequence - 1, True
        if sequence != cursor.sequence:
            logger.warning(
                "export files in %s go past the ledger's cursor %d: exporting again from %d",
                self.store.location,
                cursor.sequence,
                sequence,
            )
            cursor = Cursor(sequence, None, cursor.directory_id)
            save_cursor(self._source, cursor)
        for file in files:
            if file.last_sequence > sequence:
                self.store.delete(file.relative)
                self.store.delete(manifest_name(file.relative))
                removed += 1
        if removed:
            logger.info("removed %d unfinished export files from %s", removed, self.store.location)
        return cursor

    def _write_table(self, table: pa.Table, writer: str, batch: tuple[int, int]) -> list[str]:
        """Write the batch's files, each followed by its manifest (``_manifest.py``)."""
        parts = list(split_by_date(table, self._timezone))
        # The manifests chain in first-sequence order, which is not always date order.
        links: dict[str, tuple[bytes, bytes]] = {}
        head = self._head_before(batch[0]) or GENESIS
        for day, part in sorted(parts, key=lambda item: item[1].column("sequence")[0].as_py()):
            links[day] = (head, chain_head(head, part))
            head = links[day][1]
        written: list[str] = []
        for index, (day, part) in enumerate(parts):
            if index:
                self._checkpoint("between_partitions")
            sequences = part.column("sequence")
            first, last = sequences[0].as_py(), sequences[-1].as_py()
            relative = f"date={day}/{file_name(writer, first, last)}"
            sha256 = self.store.write(
                relative,
                part,
                file_format=self._format,
                metadata={
                    "tollmeter.collector_id": writer,
                    "tollmeter.first_sequence": str(first),
                    "tollmeter.last_sequence": str(last),
                },
                checkpoint=self._checkpoint,
            )
            previous, own = links[day]
            manifest = Manifest.build(
                relative, part, sha256=sha256, batch=batch, previous_head=previous, head=own
            )
            self.store.write_bytes(manifest_name(relative), manifest.to_bytes())
            written.append(relative)
        self._tail = (batch[1], head)
        logger.debug("exported %d events into %s", table.num_rows, ", ".join(written))
        return written
