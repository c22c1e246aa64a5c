"""The SQLite ledger: WAL, durable group-committed appends, rollups in the same transaction."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any, Literal, TypeVar

from tollmeter.collector._avoided import AvoidedCall
from tollmeter.collector._outcomes import Outcome
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.grants._model import Grant, Movement
from tollmeter.collector.storage._avoided import store_avoided, summarize_avoided
from tollmeter.collector.storage._base import AppendResult, Ledger, StorageError
from tollmeter.collector.storage._chain import (
    GENESIS,
    ChainLink,
    Checkpoint,
    cut_events,
    link_rows,
    select_checkpoint,
)
from tollmeter.collector.storage._codec import (
    EVENT_COLUMNS,
    ROW_COLUMNS,
    EventRow,
    event_from_row,
    event_values,
    stamp_sequence,
)
from tollmeter.collector.storage._grants import (
    SQLITE_GRANTS,
    Ended,
    burn,
    create_grant,
    end_due,
    holder,
    select_balances,
    select_grants,
    select_movements,
    void_grant,
)
from tollmeter.collector.storage._outcomes import (
    SQLITE_SQL,
    OutcomeRow,
    OutcomeSummary,
    select_outcome_rows,
    store_outcomes,
    summarize_outcomes,
)
from tollmeter.collector.storage._plans import delete_plan, select_plans, upsert_plan
from tollmeter.collector.storage._query import UsageQuery, UsageRow
from tollmeter.collector.storage._rollups import (
    SQLITE,
    Horizons,
    MinuteSums,
    minute_sums,
    rollup_rows,
    select_usage,
)
from tollmeter.collector.storage._schema import (
    ROLLUP_COUNTERS,
    ROLLUP_DIMENSIONS,
    migrate,
    register_functions,
)
from tollmeter.collector.storage._settings import positive
from tollmeter.collector.storage._workflows import (
    WorkflowRow,
    check_workflow_query,
    select_workflows,
)
from tollmeter.semconv.errors import ConfigurationError

__all__ = ["SQLiteLedger"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

Synchronous = Literal["off", "normal", "full", "extra"]
_SYNCHRONOUS: tuple[Synchronous, ...] = ("off", "normal", "full", "extra")
# SQLite's default cap on bound variables is 32766; stay well below it.
_CHUNK = 500
_EVENT_ID = EVENT_COLUMNS.index("event_id")
_COST = EVENT_COLUMNS.index("cost")
_CHAIN_COLUMNS = ",".join(ROW_COLUMNS)
_INSERT_LINK = (
    "INSERT INTO ledger_chain (commit_number, first_sequence, last_sequence, head, "
    "committed_ns, columns, row_digests) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_LINKS = (
    "SELECT commit_number, first_sequence, last_sequence, head, committed_ns, columns, "
    "row_digests FROM ledger_chain WHERE commit_number > ? ORDER BY commit_number LIMIT ?"
)

_INSERT_EVENT = (
    f"INSERT OR IGNORE INTO usage_events (sequence, {', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 1))})"
)
_SELECT_ROWS = (
    f"SELECT {', '.join(ROW_COLUMNS)} FROM usage_events "
    "WHERE sequence > ? ORDER BY sequence LIMIT ?"
)
_KEY = ", ".join(("granularity", "bucket", *ROLLUP_DIMENSIONS))
_UPSERT_ROLLUP = (
    f"INSERT INTO rollups ({_KEY}, {', '.join(ROLLUP_COUNTERS)}, cost, currency) "
    f"VALUES ({', '.join('?' * (len(ROLLUP_DIMENSIONS) + len(ROLLUP_COUNTERS) + 4))}) "
    f"ON CONFLICT ({_KEY}) DO UPDATE SET "
    + ", ".join(f"{name} = {name} + excluded.{name}" for name in ROLLUP_COUNTERS)
    + ", cost = CASE WHEN excluded.cost IS NULL THEN cost"
    " ELSE tm_decimal_add(cost, excluded.cost) END"
    + ", currency = COALESCE(currency, excluded.currency)"
)


class SQLiteLedger(Ledger):
    """A ledger in one SQLite file (or in memory when ``path`` is ``None``).

    One writer connection serialises appends; each reading thread gets its own
    connection, so queries never wait for a commit (WAL). ``synchronous="full"``
    fsyncs every commit: an acknowledged append survives power loss.
    ``dedupe_window_s`` bounds how long the seen-key table remembers an event id;
    the unique ``event_id`` of ``usage_events`` still refuses a late duplicate of an
    event that is in the ledger. Minute rollups are kept for ``minute_rollups_s``
    (``hour_rollups_s`` for hour rollups, forever when ``None``; day and month rollups
    forever); older minute- or hour-level queries read raw events.
    """

    def __init__(
        self,
        path: str | None,
        *,
        synchronous: Synchronous | str = "full",
        dedupe_window_s: float | str = 7 * 86400.0,
        timeout_s: float | str = 30.0,
        prune_interval_s: float | str = 60.0,
        minute_rollups_s: float | str = 7 * 86400.0,
        hour_rollups_s: float | str | None = None,
    ) -> None:
        mode = synchronous.lower()
        if mode not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, not {synchronous!r}"
            )
        self._timeout_s = positive("timeout_s", timeout_s)
        self._horizons = Horizons.from_settings(
            dedupe_window_s=dedupe_window_s,
            prune_interval_s=prune_interval_s,
            minute_rollups_s=minute_rollups_s,
            hour_rollups_s=hour_rollups_s,
        )
        self._synchronous: Synchronous = mode
        self._memory = path is None
        self._target = f"file:tollmeter-{uuid.uuid4().hex}?mode=memory" if path is None else path
        self._write_lock = threading.Lock()
        self._readers_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._closed = False
        with _wrapped("open ledger"):
            self._writer = self._connect()
            try:
                self._writer.execute("PRAGMA journal_mode=WAL")
                self._writer.execute(f"PRAGMA synchronous={mode.upper()}")
                migrate(self._writer)
                row = self._writer.execute("SELECT MAX(sequence) FROM usage_events").fetchone()
                link = self._writer.execute(
                    "SELECT commit_number, head FROM ledger_chain "
                    "ORDER BY commit_number DESC LIMIT 1"
                ).fetchone()
            except BaseException:
                self._writer.close()
                raise
        self._last_sequence = int(row[0] or 0)
        # The chain's end, advanced only once a commit holding its next link succeeded.
        self._chain: tuple[int, bytes] = (
            (0, GENESIS) if link is None else (int(link[0]), bytes.fromhex(link[1]))
        )

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._target,
            timeout=self._timeout_s,
            isolation_level=None,
            check_same_thread=False,
            uri=self._memory,
        )
        register_functions(conn)
        return conn

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        if not self._write_lock.acquire(timeout=self._timeout_s):
            raise StorageError(f"ledger writer busy for more than {self._timeout_s}s")
        try:
            if self._closed:
                raise StorageError("ledger is closed")
            yield self._writer
        finally:
            self._write_lock.release()

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """The writer inside ``BEGIN IMMEDIATE``: committed when the block ends, rolled
        back when it raises."""
        with self._writing() as conn, _wrapped(action):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        if self._memory:
            # An in-memory database has a single connection; reads share the writer's.
            with self._writing() as conn:
                yield conn
            return
        if self._closed:
            raise StorageError("ledger is closed")
        reader: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if reader is None:
            with _wrapped("open ledger reader"):
                reader = self._connect()
                reader.execute("PRAGMA query_only=ON")
            with self._readers_lock:
                self._readers.append(reader)
            self._local.conn = reader
        yield reader

    def append(self, events: Sequence[UsageEvent]) -> AppendResult:
        if not events:
            return AppendResult()
        fresh: dict[str, UsageEvent] = {}
        for event in events:
            fresh.setdefault(event.event_id, event)
        with self._transaction("append to ledger") as conn:
            committed, minutes, chain = self._append_locked(conn, fresh, time.time_ns())
        # Only once committed: a failed commit leaves the next one where this one began.
        if committed:
            self._last_sequence = committed[-1].sequence
            self._chain = chain
        return AppendResult(
            committed=committed, duplicates=len(events) - len(committed), minutes=minutes
        )

    def _append_locked(
        self, conn: sqlite3.Connection, fresh: dict[str, UsageEvent], now_ns: int
    ) -> tuple[list[UsageEvent], MinuteSums, tuple[int, bytes]]:
        ids = list(fresh)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for (seen,) in conn.execute(
                f"SELECT event_id FROM dedupe_keys WHERE event_id IN ({marks})", chunk
            ):
                del fresh[seen]
        if not fresh:
            return [], {}, self._chain
        sequence = self._last_sequence
        rows: list[tuple[Any, ...]] = []
        for event in fresh.values():
            sequence += 1
            rows.append((sequence, *event_values(event)))
        cursor = conn.executemany(_INSERT_EVENT, rows)
        if cursor.rowcount != len(rows):
            # A late duplicate, older than the dedupe window but still in the ledger.
            stored = {
                event_id
                for (event_id,) in conn.execute(
                    "SELECT event_id FROM usage_events WHERE sequence > ?", (self._last_sequence,)
                )
            }
            rows = [row for row in rows if row[_EVENT_ID + 1] in stored]
        committed = [stamp_sequence(fresh[row[_EVENT_ID + 1]], row[0]) for row in rows]
        chain = self._link(conn, rows, now_ns)
        burn(conn, SQLITE_GRANTS, committed)
        conn.executemany(
            "INSERT OR REPLACE INTO dedupe_keys (event_id, seen_ns) VALUES (?, ?)",
            [(event.event_id, now_ns) for event in fresh.values()],
        )
        minute_horizon_s = self._horizons.minute_s(now_ns)
        minutes = minute_sums(committed)
        conn.executemany(
            _UPSERT_ROLLUP,
            rollup_rows(
                minutes,
                minute_horizon_s=minute_horizon_s,
                hour_horizon_s=self._horizons.hour_s(now_ns),
            ),
        )
        self._horizons.prune_if_due(conn, SQLITE, now_ns)
        return committed, minutes, chain

    def _link(
        self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]], now_ns: int
    ) -> tuple[int, bytes]:
        """Write the chain link over the inserted ``rows`` (sequence first); the new end."""
        commit, head = self._chain
        head, digests = link_rows(head, [(*row[1:], row[0]) for row in rows], _COST)
        conn.execute(
            _INSERT_LINK,
            (commit + 1, rows[0][0], rows[-1][0], head.hex(), now_ns, _CHAIN_COLUMNS, digests),
        )
        return commit + 1, head

    def read_chain(self, after_commit: int, limit: int) -> list[ChainLink]:
        if limit < 1:
            raise ValueError("limit must be positive")
        with self._reading() as conn, _wrapped("read ledger chain"):
            rows = conn.execute(_SELECT_LINKS, (after_commit, limit)).fetchall()
        return [_chain_link(row) for row in rows]

    def chain_checkpoint(self) -> Checkpoint | None:
        with self._reading() as conn, _wrapped("read chain checkpoint"):
            return select_checkpoint(conn)

    def cut(self, previous_commit: int, checkpoint: Checkpoint) -> int:
        with self._transaction("prune ledger") as conn:
            return cut_events(conn, "?", previous_commit, checkpoint)

    def read_events(self, after_sequence: int, limit: int) -> list[UsageEvent]:
        if limit < 1:
            raise ValueError("limit must be positive")
        with self._reading() as conn, _wrapped("read ledger"):
            rows = conn.execute(_SELECT_ROWS, (after_sequence, limit)).fetchall()
        return [event_from_row(row) for row in rows]

    def read_event_rows(self, after_sequence: int, limit: int) -> list[EventRow]:
        # The rows exactly as sqlite3 returns them: costs stay the stored decimal text,
        # and text stays UTF-8 bytes, which sqlite3 hands over faster than str.
        if limit < 1:
            raise ValueError("limit must be positive")
        with self._reading() as conn, _wrapped("read ledger"):
            # This thread owns the connection (or holds the writer lock) until it returns.
            conn.text_factory = bytes
            try:
                return conn.execute(_SELECT_ROWS, (after_sequence, limit)).fetchall()
            finally:
                conn.text_factory = str

    def last_sequence(self) -> int:
        with self._reading() as conn, _wrapped("read ledger"):
            row = conn.execute("SELECT MAX(sequence) FROM usage_events").fetchone()
        return int(row[0] or 0)

    def query_usage(self, query: UsageQuery) -> list[UsageRow]:
        # Computed before reading: pruning only ever removes minutes before this horizon.
        now_ns = time.time_ns()
        minute_s, hour_s = self._horizons.minute_s(now_ns), self._horizons.hour_s(now_ns)
        with self._reading() as conn, _wrapped("query usage"):
            return select_usage(conn, query, minute_horizon_s=minute_s, hour_horizon_s=hour_s)

    def query_workflows(self, query: UsageQuery) -> list[WorkflowRow]:
        check_workflow_query(query)
        with self._reading() as conn, _wrapped("query workflows"):
            return select_workflows(conn, query)

    def get_state(self, key: str) -> str | None:
        with self._reading() as conn, _wrapped("read ledger state"):
            row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, key: str, value: str) -> None:
        with self._writing() as conn, _wrapped("write ledger state"):
            conn.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def claim_state(self, key: str, value: str) -> bool:
        with self._writing() as conn, _wrapped("write ledger state"):
            cursor = conn.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, value),
            )
        return cursor.rowcount == 1

    def append_outcomes(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        if not outcomes:
            return []
        with self._transaction("store outcomes") as conn:
            stored = store_outcomes(conn, SQLITE_SQL, outcomes)
        return stored

    def read_outcome_rows(self, after_sequence: int, limit: int) -> list[OutcomeRow]:
        with self._reading() as conn, _wrapped("read outcomes"):
            return select_outcome_rows(conn, SQLITE_SQL, after_sequence, limit)

    def summarize_outcomes(
        self, *, tenant: str | None, start_ns: int, end_ns: int, name: str | None
    ) -> OutcomeSummary:
        with self._reading() as conn, _wrapped("summarize outcomes"):
            return summarize_outcomes(
                conn, SQLITE_SQL, tenant=tenant, start_ns=start_ns, end_ns=end_ns, name=name
            )

    def append_avoided(self, calls: Sequence[AvoidedCall]) -> list[AvoidedCall]:
        if not calls:
            return []
        with self._transaction("store avoided usage") as conn:
            stored = store_avoided(conn, SQLITE_SQL, calls)
        return stored

    def summarize_avoided(
        self, *, start_ns: int, end_ns: int, tenant: str | None, group_by: Sequence[str]
    ) -> list[dict[str, object]]:
        with self._reading() as conn, _wrapped("summarize avoided usage"):
            return summarize_avoided(
                conn, SQLITE_SQL, start_ns=start_ns, end_ns=end_ns, tenant=tenant, group_by=group_by
            )

    def create_grant(self, grant: Grant) -> bool:
        return self._write_grants("store grant", lambda c: create_grant(c, SQLITE_GRANTS, grant))

    def void_grant(self, grant_id: str, now_ns: int) -> Grant | None:
        return self._write_grants(
            "void grant", lambda c: void_grant(c, SQLITE_GRANTS, grant_id, now_ns)
        )

    def end_grants(self, now_ns: int) -> list[Ended]:
        return self._write_grants("end grants", lambda c: end_due(c, SQLITE_GRANTS, now_ns))

    def list_grants(
        self, tenant: str | None = None, *, org: str | None = None
    ) -> list[tuple[Grant, Decimal]]:
        with self._reading() as conn, _wrapped("read grants"):
            return select_grants(conn, SQLITE_GRANTS, holder(tenant, org))

    def grant_balances(
        self, tenant: str | None = None, *, org: str | None = None
    ) -> dict[str, dict[str, Decimal]]:
        with self._reading() as conn, _wrapped("read grant balances"):
            return select_balances(conn, SQLITE_GRANTS, holder(tenant, org) or "tenant:")

    def grant_movements(
        self, tenant: str | None, after_sequence: int, limit: int, *, org: str | None = None
    ) -> list[tuple[int, Movement]]:
        with self._reading() as conn, _wrapped("read grant movements"):
            return select_movements(conn, SQLITE_GRANTS, holder(tenant, org), after_sequence, limit)

    def set_tenant_plan(self, tenant: str, plan: str, now_ns: int) -> None:
        with self._writing() as conn, _wrapped("store plan"):
            upsert_plan(conn, "?", tenant, plan, now_ns)

    def clear_tenant_plan(self, tenant: str) -> bool:
        with self._writing() as conn, _wrapped("remove plan"):
            return delete_plan(conn, "?", tenant)

    def tenant_plans(self) -> dict[str, str]:
        with self._reading() as conn, _wrapped("read plans"):
            return select_plans(conn)

    def _write_grants(self, action: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._transaction(action) as conn:
            return work(conn)

    def close(self) -> None:
        acquired = self._write_lock.acquire(timeout=self._timeout_s)
        if not acquired:
            logger.warning("closing the ledger while a write is still running")
        try:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                readers, self._readers = self._readers, []
            for conn in [*readers, self._writer]:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        finally:
            if acquired:
                self._write_lock.release()

    @property
    def synchronous(self) -> Synchronous:
        return self._synchronous


def _chain_link(row: Sequence[Any]) -> ChainLink:
    commit, first, last, head, committed_ns, columns, digests = row
    return ChainLink(
        int(commit),
        int(first),
        int(last),
        str(head),
        int(committed_ns),
        tuple(str(columns).split(",")),
        bytes(digests),
    )


@contextlib.contextmanager
def _wrapped(action: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StorageError(f"could not {action}: {exc}") from exc
