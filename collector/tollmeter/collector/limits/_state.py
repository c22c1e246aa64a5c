"""Durable limit state: window counters, open reservations and fired thresholds.

Kept in its own SQLite file next to the ledger (``<data_dir>/limits.db``) so that the
hot check path never contends with ledger commits. Counters and reservations are
written behind (every ``state_flush_interval``); fired-threshold marks are written
before their hook is queued, so a threshold never fires twice, even across restarts.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from tollmeter.collector.errors import LimitStateError
from tollmeter.collector.limits._model import Changes, CounterKey, Reservation

__all__ = ["LimitStateStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS limit_counters (
    limit_name TEXT NOT NULL,
    limit_key TEXT NOT NULL,
    level REAL NOT NULL,
    stamp REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (limit_name, limit_key)
);
CREATE TABLE IF NOT EXISTS limit_reservations_v2 (
    id TEXT PRIMARY KEY,
    expired INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS limit_marks (
    mark TEXT PRIMARY KEY,
    created REAL NOT NULL
);
"""
_MARK_RETENTION_S = 40 * 86400.0
"""Marks outlive the longest window (a month) so a restart never re-fires them."""


class LimitStateStore:
    """A small SQLite file; ``path=None`` keeps state in memory (tests, dry runs)."""

    def __init__(self, path: str | Path | None, *, timeout_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        target = ":memory:" if path is None else str(path)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(target, timeout=timeout_s, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise LimitStateError(f"cannot open limit state {target}: {exc}") from exc

    def load(
        self,
    ) -> tuple[
        list[tuple[CounterKey, float, float, str]], list[tuple[Reservation, bool]], list[str]
    ]:
        with self._lock:
            try:
                counters = [
                    ((name, tuple(json.loads(key))), level, stamp, fp)
                    for name, key, level, stamp, fp in self._db.execute(
                        "SELECT limit_name, limit_key, level, stamp, fingerprint"
                        " FROM limit_counters"
                    )
                ]
                reservations = [
                    (Reservation.from_row(json.loads(data)), bool(expired))
                    for expired, data in self._db.execute(
                        "SELECT expired, data FROM limit_reservations_v2"
                    )
                ]
                marks = [m for (m,) in self._db.execute("SELECT mark FROM limit_marks")]
            except sqlite3.Error as exc:
                raise LimitStateError(f"cannot read limit state: {exc}") from exc
        return counters, reservations, marks

    def save(self, changes: Changes) -> None:
        if not changes:
            return
        with self._lock:
            try:
                with self._db:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO limit_counters VALUES (?, ?, ?, ?, ?)",
                        [
                            (name, json.dumps(list(key)), level, stamp, fp)
                            for (name, key), (level, stamp, fp) in changes.counters.items()
                        ],
                    )
                    self._db.executemany(
                        "DELETE FROM limit_counters WHERE limit_name = ? AND limit_key = ?",
                        [(name, json.dumps(list(key))) for name, key in changes.dropped_counters],
                    )
                    self._db.executemany(
                        "INSERT OR REPLACE INTO limit_reservations_v2 VALUES (?, ?, ?)",
                        [
                            (rid, int(expired), json.dumps(r.to_row()))
                            for rid, (r, expired) in changes.reservations.items()
                        ],
                    )
                    self._db.executemany(
                        "DELETE FROM limit_reservations_v2 WHERE id = ?",
                        [(rid,) for rid in changes.dropped_reservations],
                    )
            except sqlite3.Error as exc:
                raise LimitStateError(f"cannot write limit state: {exc}") from exc

    def add_marks(self, marks: Iterable[str], *, now: float | None = None) -> None:
        created = time.time() if now is None else now
        with self._lock:
            try:
                with self._db:
                    self._db.executemany(
                        "INSERT OR IGNORE INTO limit_marks VALUES (?, ?)",
                        [(m, created) for m in marks],
                    )
                    self._db.execute(
                        "DELETE FROM limit_marks WHERE created < ?",
                        (created - _MARK_RETENTION_S,),
                    )
            except sqlite3.Error as exc:
                raise LimitStateError(f"cannot write limit state: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()
