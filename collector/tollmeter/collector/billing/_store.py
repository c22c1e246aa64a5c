"""Imported provider reports, kept apart from the ledger in ``<data_dir>/reports.db``.

The ledger holds what tollmeter metered; this small SQLite file holds what providers
say they billed, so that reconciling never touches the ledger's schema and works the
same beside a SQLite or a PostgreSQL ledger. An import replaces the provider's rows of
its kind for its days in one transaction: a report is there whole or not at all.
It also remembers which drift notices were sent, so that each fires once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path

from tollmeter.collector.billing._providers import ReportKind
from tollmeter.collector.billing._report import Provider, ReportError, ReportRow

__all__ = ["SCHEMA_VERSION", "ReportStore"]

SCHEMA_VERSION = 1
_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS report_rows (
    provider TEXT NOT NULL,
    kind TEXT NOT NULL,
    day TEXT NOT NULL,
    model TEXT,
    project TEXT,
    api_key TEXT,
    uncached_input_tokens INTEGER NOT NULL,
    cache_read_input_tokens INTEGER NOT NULL,
    cache_write_input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    requests INTEGER,
    cost TEXT,
    currency TEXT
);
CREATE INDEX IF NOT EXISTS report_rows_by_day ON report_rows (provider, day);
CREATE TABLE IF NOT EXISTS imports (
    provider TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_day TEXT NOT NULL,
    end_day TEXT NOT NULL,
    source TEXT NOT NULL,
    rows INTEGER NOT NULL,
    imported_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS drift_notices (
    mark TEXT PRIMARY KEY,
    sent_at REAL NOT NULL
);
"""
_COLUMNS = (
    "provider, kind, day, model, project, api_key, uncached_input_tokens, "
    "cache_read_input_tokens, cache_write_input_tokens, output_tokens, requests, cost, currency"
)
_TIMEOUT_S = 10.0


class ReportStore:
    """``reports.db`` at ``path``, created on first use. Each call opens its own
    connection, so the store is safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with closing(sqlite3.connect(self.path, timeout=_TIMEOUT_S)) as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    # IF NOT EXISTS: two processes creating the file at once both succeed.
                    db.executescript(
                        f"BEGIN IMMEDIATE; {_SCHEMA_V1} PRAGMA user_version = {SCHEMA_VERSION}; "
                        "COMMIT;"
                    )
                elif version != SCHEMA_VERSION:
                    raise ReportError(
                        f"{self.path.name} has schema version {version}; this tollmeter "
                        f"reads version {SCHEMA_VERSION}"
                    )
                yield db
        except sqlite3.Error as exc:
            raise ReportError(f"{self.path.name}: {exc}") from exc

    def replace(
        self,
        provider: Provider,
        kind: ReportKind,
        start: date,
        end: date,
        rows: Sequence[ReportRow],
        *,
        source: str,
    ) -> None:
        """Make ``rows`` the provider's ``kind`` report for the days ``[start, end)``."""
        for row in rows:
            if row.provider != provider or not start <= row.day < end:
                raise ReportError(
                    f"{source}: a row for {row.provider} on {row.day} is outside the "
                    f"imported range {start} to {end}"
                )
        values = [
            (
                provider,
                kind,
                row.day.isoformat(),
                row.model,
                row.project,
                row.api_key,
                row.uncached_input_tokens,
                row.cache_read_input_tokens,
                row.cache_write_input_tokens,
                row.output_tokens,
                row.requests,
                None if row.cost is None else str(row.cost),
                row.currency,
            )
            for row in rows
        ]
        with self._connect() as db, db:
            db.execute(
                "DELETE FROM report_rows WHERE provider = ? AND kind = ? AND day >= ? AND day < ?",
                (provider, kind, start.isoformat(), end.isoformat()),
            )
            db.executemany(
                f"INSERT INTO report_rows ({_COLUMNS}) VALUES ({', '.join('?' * 13)})", values
            )
            db.execute(
                "INSERT INTO imports VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    provider,
                    kind,
                    start.isoformat(),
                    end.isoformat(),
                    source,
                    len(rows),
                    time.time(),
                ),
            )

    def rows(self, provider: Provider, kind: ReportKind, start: date, end: date) -> list[ReportRow]:
        with self._connect() as db:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM report_rows "
                "WHERE provider = ? AND kind = ? AND day >= ? AND day < ?",
                (provider, kind, start.isoformat(), end.isoformat()),
            ).fetchall()
        return [
            ReportRow(
                provider=row[0],
                day=date.fromisoformat(row[2]),
                model=row[3],
                project=row[4],
                api_key=row[5],
                uncached_input_tokens=row[6],
                cache_read_input_tokens=row[7],
                cache_write_input_tokens=row[8],
                output_tokens=row[9],
                requests=row[10],
                cost=None if row[11] is None else Decimal(row[11]),
                currency=row[12],
            )
            for row in found
        ]

    def imported(self, provider: Provider, start: date, end: date) -> bool:
        """Whether any import of the provider covers part of ``[start, end)``."""
        with self._connect() as db:
            found = db.execute(
                "SELECT 1 FROM imports WHERE provider = ? AND start_day < ? AND end_day > ?",
                (provider, end.isoformat(), start.isoformat()),
            ).fetchone()
        return found is not None

    def mark_once(self, mark: str) -> bool:
        """Record that the notice ``mark`` was sent; ``False`` if it had been already."""
        with self._connect() as db, db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO drift_notices VALUES (?, ?)", (mark, time.time())
            )
            return cursor.rowcount == 1
