"""The PostgreSQL ledger: one database shared by every collector replica.

Exactly once across replicas, by the database:

1. An append is one transaction that first takes a transaction-scoped advisory lock, so
   appends from every replica run one after another. Sequences are assigned under it
   (``MAX(sequence) + 1`` onwards) and the lock is released by the commit, so sequences
   become visible in commit order: a reader paging with ``sequence > cursor`` (the
   Parquet export) never sees a later sequence before an earlier one.
2. Event ids already in ``dedupe_keys`` (the dedupe window) are dropped; the rest are
   copied into a temporary table and moved with ``INSERT ... ON CONFLICT (event_id) DO
   NOTHING RETURNING``, so only rows actually inserted count, even for a late duplicate.
3. The rollups are upserted from the inserted rows only, in the same transaction.

A replica killed mid-append leaves nothing: the server rolls the transaction back when its
connection drops, and the sender retries the unacknowledged batch on another replica.
Text holding NUL, which PostgreSQL cannot store, is stored with U+FFFD in its place (and
usage filters are matched the same way).

Every blocking call has a deadline: ``connect_timeout``, a server-side
``statement_timeout`` (which also bounds the wait for the append lock), and a bounded wait
for a pooled connection. Lost connections are dropped and opened again on the next call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import psycopg

from tollmeter.collector._avoided import AvoidedCall
from tollmeter.collector._outcomes import Outcome
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.grants._model import Grant, Movement
from tollmeter.collector.storage._avoided import store_avoided, summarize_avoided
from tollmeter.collector.storage._base import AppendResult, Lease, Ledger, StorageError
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
    EventRow,
    event_from_row,
    event_values,
    stamp_sequence,
)
from tollmeter.collector.storage._grants import (
    POSTGRES_GRANTS,
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
    POSTGRES_SQL,
    OutcomeRow,
    OutcomeSummary,
    select_outcome_rows,
    store_outcomes,
    summarize_outcomes,
)
from tollmeter.collector.storage._plans import delete_plan, select_plans, upsert_plan
from tollmeter.collector.storage._postgres_lease import AdvisoryLease
from tollmeter.collector.storage._postgres_schema import migrate
from tollmeter.collector.storage._query import UsageQuery, UsageRow
from tollmeter.collector.storage._rollups import (
    POSTGRES,
    Horizons,
    MinuteSums,
    minute_sums,
    rollup_rows,
)
from tollmeter.collector.storage._rollups import select_usage as _select_usage
from tollmeter.collector.storage._schema import ROLLUP_COUNTERS, ROLLUP_DIMENSIONS
from tollmeter.collector.storage._settings import positive
from tollmeter.collector.storage._sqlite import _chain_link
from tollmeter.collector.storage._workflows import (
    WorkflowRow,
    check_workflow_query,
    select_workflows,
)
from tollmeter.semconv.errors import ConfigurationError

__all__ = ["LIBPQ_OPTIONS", "PostgresLedger"]

_T = TypeVar("_T")

APPEND_LOCK = 0x746F6C6C6D657402
"""Advisory lock key that serialises appends across replicas ("tollmet" and 2)."""

LIBPQ_OPTIONS = frozenset(
    {"sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "application_name"}
)
"""Connection settings passed to libpq as they are; the rest of the URL options are ours."""

_COLUMNS = ", ".join(("sequence", *EVENT_COLUMNS))
# ROW_COLUMNS order; the cost as the decimal text the codec expects.
_ROW_SELECT = ", ".join(
    "CAST(cost AS TEXT)" if name == "cost" else name for name in (*EVENT_COLUMNS, "sequence")
)
_SELECT_ROWS = (
    f"SELECT {_ROW_SELECT} FROM usage_events WHERE sequence > %s ORDER BY sequence LIMIT %s"
)
_INCOMING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS incoming_events "
    "(LIKE usage_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_MOVE = (
    f"INSERT INTO usage_events ({_COLUMNS}) SELECT {_COLUMNS} FROM incoming_events "
    "ORDER BY sequence ON CONFLICT (event_id) DO NOTHING RETURNING sequence"
)
_COST = EVENT_COLUMNS.index("cost")
_CHAIN_COLUMNS = ",".join((*EVENT_COLUMNS, "sequence"))
_LAST_LINK = "SELECT commit_number, head FROM ledger_chain ORDER BY commit_number DESC LIMIT 1"
_INSERT_LINK = (
    "INSERT INTO ledger_chain (commit_number, first_sequence, last_sequence, head, "
    "committed_ns, columns, row_digests) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
_SELECT_LINKS = (
    "SELECT commit_number, first_sequence, last_sequence, head, committed_ns, columns, "
    "row_digests FROM ledger_chain WHERE commit_number > %s ORDER BY commit_number LIMIT %s"
)
_KEY = ", ".join(("granularity", "bucket", *ROLLUP_DIMENSIONS))
_UPSERT_ROLLUP = (
    f"INSERT INTO rollups ({_KEY}, {', '.join(ROLLUP_COUNTERS)}, cost, currency) "
    f"VALUES ({', '.join(['%s'] * (len(ROLLUP_DIMENSIONS) + len(ROLLUP_COUNTERS) + 4))}) "
    f"ON CONFLICT ({_KEY}) DO UPDATE SET "
    + ", ".join(f"{name} = rollups.{name} + excluded.{name}" for name in ROLLUP_COUNTERS)
    + ", cost = CASE WHEN excluded.cost IS NULL THEN rollups.cost"
    " ELSE COALESCE(rollups.cost, 0) + excluded.cost END"
    + ", currency = COALESCE(rollups.currency, excluded.currency)"
)


class PostgresLedger(Ledger):
    """A ledger in a PostgreSQL database, shared by any number of collector processes.

    ``conninfo`` is a libpq URL or keyword string. Up to ``pool_size`` connections are
    opened as needed and kept. ``dedupe_window_s``, ``prune_interval_s`` and
    ``minute_rollups_s`` and ``hour_rollups_s`` mean what they mean for ``SQLiteLedger``.
    """

    shared = True

    def __init__(
        self,
        conninfo: str,
        *,
        dedupe_window_s: float | str = 7 * 86400.0,
        connect_timeout_s: float | str = 5.0,
        statement_timeout_s: float | str = 30.0,
        prune_interval_s: float | str = 60.0,
        minute_rollups_s: float | str = 7 * 86400.0,
        hour_rollups_s: float | str | None = None,
        pool_size: int | str = 4,
        **libpq: str,
    ) -> None:
        unknown = sorted(set(libpq) - LIBPQ_OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"unknown postgresql:// option {', '.join(unknown)}; "
                f"libpq settings accepted: {', '.join(sorted(LIBPQ_OPTIONS))}"
            )
        self._horizons = Horizons.from_settings(
            dedupe_window_s=dedupe_window_s,
            prune_interval_s=prune_interval_s,
            minute_rollups_s=minute_rollups_s,
            hour_rollups_s=hour_rollups_s,
        )
        self._statement_timeout_s = positive("statement_timeout_s", statement_timeout_s)
        connect_timeout = positive("connect_timeout_s", connect_timeout_s)
        size = int(positive("pool_size", pool_size))
        timeout_ms = int(self._statement_timeout_s * 1000)
        self._conninfo = conninfo
        self._connect_args: dict[str, Any] = {
            "autocommit": True,
            # libpq's unit is whole seconds, at least 2.
            "connect_timeout": max(2, math.ceil(connect_timeout)),
            "application_name": "tollmeter",
            # A replica that vanishes mid-transaction must not hold the append lock.
            "options": f"-c statement_timeout={timeout_ms} "
            f"-c idle_in_transaction_session_timeout={timeout_ms}",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": timeout_ms,
            **libpq,
        }
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[psycopg.Connection] = []
        self._idle_lock = threading.Lock()
        self._closed = False
        self._migrated = False
        try:
            with self._connection("open ledger") as conn:
                migrate(conn)
                conn.execute(_INCOMING)
        except BaseException:
            self.close()
            raise
        self._migrated = True

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self._conninfo, **self._connect_args)
        if self._migrated:
            # The staging table lives as long as the session; commits empty it.
            conn.execute(_INCOMING)
        return conn

    @contextlib.contextmanager
    def _connection(self, action: str) -> Iterator[psycopg.Connection]:
        if self._closed:
            raise StorageError("ledger is closed")
        if not self._slots.acquire(timeout=self._statement_timeout_s):
            raise StorageError(
                f"could not {action}: no database connection free within "
                f"{self._statement_timeout_s}s"
            )
        conn: psycopg.Connection | None = None
        try:
            with self._idle_lock:
                conn = self._idle.pop() if self._idle else None
            try:
                if conn is None:
                    conn = self._connect()
                yield conn
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError):
                    # The server went away or restarted: its other sessions are gone too.
                    self._discard_idle()
                raise StorageError(f"could not {action}: {_first_line(exc)}") from exc
        finally:
            if conn is not None:
                self._put_back(conn)
            self._slots.release()

    def _put_back(self, conn: psycopg.Connection) -> None:
        healthy = not conn.closed and not conn.broken
        with self._idle_lock:
            if healthy and not self._closed:
                self._idle.append(conn)
                return
        with contextlib.suppress(psycopg.Error):
            conn.close()

    def _discard_idle(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def append(self, events: Sequence[UsageEvent]) -> AppendResult:
        if not events:
            return AppendResult()
        fresh: dict[str, UsageEvent] = {}
        for event in events:
            fresh.setdefault(event.event_id, event)
        with self._connection("append to ledger") as conn:
            now_ns = time.time_ns()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
                committed, minutes = self._append_locked(conn, fresh, now_ns)
        return AppendResult(
            committed=committed, duplicates=len(events) - len(committed), minutes=minutes
        )

    def _append_locked(
        self, conn: psycopg.Connection, fresh: dict[str, UsageEvent], now_ns: int
    ) -> tuple[list[UsageEvent], MinuteSums]:
        ids = {_text(key): key for key in fresh}
        for (seen,) in conn.execute(
            "SELECT event_id FROM dedupe_keys WHERE event_id = ANY(%s)", (list(ids),)
        ).fetchall():
            del fresh[ids.pop(seen)]
        if not fresh:
            return [], {}
        row = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM usage_events").fetchone()
        sequence = int(row[0]) if row else 0
        by_sequence: dict[int, UsageEvent] = {}
        stored: dict[int, tuple[Any, ...]] = {}
        with conn.cursor() as cursor:
            with cursor.copy(f"COPY incoming_events ({_COLUMNS}) FROM STDIN") as copy:
                for event in fresh.values():
                    sequence += 1
                    by_sequence[sequence] = event
                    stored[sequence] = _storable((sequence, *event_values(event)))
                    copy.write_row(stored[sequence])
            inserted = sorted(cursor.execute(_MOVE).fetchall())
        committed = [stamp_sequence(by_sequence[seq], seq) for (seq,) in inserted]
        if inserted:
            # Under the append lock: the last link is this replica's or another's, and no
            # one else links until this transaction ends.
            self._link(conn, [(*stored[seq][1:], seq) for (seq,) in inserted], now_ns)
            burn(conn, _GRANTS, committed)
        conn.execute(
            "INSERT INTO dedupe_keys (event_id, seen_ns) SELECT unnest(%s::text[]), %s "
            "ON CONFLICT (event_id) DO UPDATE SET seen_ns = excluded.seen_ns",
            (list(ids), now_ns),
        )
        minute_horizon_s = self._horizons.minute_s(now_ns)
        minutes = minute_sums(committed)
        # One order for every replica's upserts, should two ever overlap.
        rows = sorted(
            (
                _storable(row)
                for row in rollup_rows(
                    minutes,
                    minute_horizon_s=minute_horizon_s,
                    hour_horizon_s=self._horizons.hour_s(now_ns),
                )
            ),
            key=_rollup_key,
        )
        with conn.cursor() as cursor:
            cursor.executemany(_UPSERT_ROLLUP, rows)
        self._horizons.prune_if_due(conn, POSTGRES, now_ns)
        return committed, minutes

    def _link(self, conn: psycopg.Connection, rows: list[tuple[Any, ...]], now_ns: int) -> None:
        """Write the chain link over the inserted ``rows`` (in ``ROW_COLUMNS`` order)."""
        last = conn.execute(_LAST_LINK).fetchone()
        commit, head = (0, GENESIS) if last is None else (int(last[0]), bytes.fromhex(last[1]))
        head, digests = link_rows(head, rows, _COST)
        conn.execute(
            _INSERT_LINK,
            (commit + 1, rows[0][-1], rows[-1][-1], head.hex(), now_ns, _CHAIN_COLUMNS, digests),
        )

    def read_chain(self, after_commit: int, limit: int) -> list[ChainLink]:
        if limit < 1:
            raise ValueError("limit must be positive")
        with self._connection("read ledger chain") as conn:
            rows = conn.execute(_SELECT_LINKS, (after_commit, limit)).fetchall()
        return [_chain_link(row) for row in rows]

    def chain_checkpoint(self) -> Checkpoint | None:
        with self._connection("read chain checkpoint") as conn:
            return select_checkpoint(conn)

    def cut(self, previous_commit: int, checkpoint: Checkpoint) -> int:
        with self._connection("prune ledger") as conn, conn.transaction():
            # Two pruners at once: the second waits, then finds the checkpoint moved.
            conn.execute("LOCK TABLE ledger_chain_checkpoint IN EXCLUSIVE MODE")
            return cut_events(conn, "%s", previous_commit, checkpoint)

    def read_events(self, after_sequence: int, limit: int) -> list[UsageEvent]:
        return [event_from_row(row) for row in self.read_event_rows(after_sequence, limit)]

    def read_event_rows(self, after_sequence: int, limit: int) -> list[EventRow]:
        if limit < 1:
            raise ValueError("limit must be positive")
        with self._connection("read ledger") as conn:
            return conn.execute(_SELECT_ROWS, (after_sequence, limit)).fetchall()

    def last_sequence(self) -> int:
        with self._connection("read ledger") as conn:
            row = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM usage_events").fetchone()
        return int(row[0]) if row else 0

    def query_usage(self, query: UsageQuery) -> list[UsageRow]:
        now_ns = time.time_ns()
        minute_s, hour_s = self._horizons.minute_s(now_ns), self._horizons.hour_s(now_ns)
        filters = query.filters()
        if any("\x00" in value for value in filters.values()):
            cleaned: dict[str, Any] = {name: _text(value) for name, value in filters.items()}
            query = dataclasses.replace(query, **cleaned)
        with self._connection("query usage") as conn:
            return _select_usage(
                conn, query, minute_horizon_s=minute_s, hour_horizon_s=hour_s, dialect=POSTGRES
            )

    def query_workflows(self, query: UsageQuery) -> list[WorkflowRow]:
        check_workflow_query(query)
        filters = query.filters()
        if any("\x00" in value for value in filters.values()):
            cleaned: dict[str, Any] = {name: _text(value) for name, value in filters.items()}
            query = dataclasses.replace(query, **cleaned)
        with self._connection("query workflows") as conn:
            return select_workflows(conn, query, dialect=POSTGRES)

    def get_state(self, key: str) -> str | None:
        with self._connection("read ledger state") as conn:
            row = conn.execute("SELECT value FROM state WHERE key = %s", (_text(key),)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, key: str, value: str) -> None:
        with self._connection("write ledger state") as conn:
            conn.execute(
                "INSERT INTO state (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (_text(key), _text(value)),
            )

    def claim_state(self, key: str, value: str) -> bool:
        with self._connection("write ledger state") as conn:
            cursor = conn.execute(
                "INSERT INTO state (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                (_text(key), _text(value)),
            )
        return cursor.rowcount == 1

    def append_outcomes(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        if not outcomes:
            return []
        with self._connection("store outcomes") as conn, conn.transaction():
            # The append lock: outcome sequences too become visible in commit order.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            return store_outcomes(conn, POSTGRES_SQL, outcomes)

    def read_outcome_rows(self, after_sequence: int, limit: int) -> list[OutcomeRow]:
        with self._connection("read outcomes") as conn:
            return select_outcome_rows(conn, POSTGRES_SQL, after_sequence, limit)

    def summarize_outcomes(
        self, *, tenant: str | None, start_ns: int, end_ns: int, name: str | None
    ) -> OutcomeSummary:
        with self._connection("summarize outcomes") as conn:
            return summarize_outcomes(
                conn, POSTGRES_SQL, tenant=tenant, start_ns=start_ns, end_ns=end_ns, name=name
            )

    def append_avoided(self, calls: Sequence[AvoidedCall]) -> list[AvoidedCall]:
        if not calls:
            return []
        with self._connection("store avoided usage") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            return store_avoided(conn, POSTGRES_SQL, calls)

    def summarize_avoided(
        self, *, start_ns: int, end_ns: int, tenant: str | None, group_by: Sequence[str]
    ) -> list[dict[str, object]]:
        with self._connection("summarize avoided usage") as conn:
            return summarize_avoided(
                conn,
                POSTGRES_SQL,
                start_ns=start_ns,
                end_ns=end_ns,
                tenant=tenant,
                group_by=group_by,
            )

    def create_grant(self, grant: Grant) -> bool:
        return self._write_grants("store grant", lambda c: create_grant(c, _GRANTS, grant))

    def void_grant(self, grant_id: str, now_ns: int) -> Grant | None:
        return self._write_grants("void grant", lambda c: void_grant(c, _GRANTS, grant_id, now_ns))

    def end_grants(self, now_ns: int) -> list[Ended]:
        return self._write_grants("end grants", lambda c: end_due(c, _GRANTS, now_ns))

    def list_grants(
        self, tenant: str | None = None, *, org: str | None = None
    ) -> list[tuple[Grant, Decimal]]:
        with self._connection("read grants") as conn:
            return select_grants(conn, _GRANTS, holder(tenant, org))

    def grant_balances(
        self, tenant: str | None = None, *, org: str | None = None
    ) -> dict[str, dict[str, Decimal]]:
        with self._connection("read grant balances") as conn:
            return select_balances(conn, _GRANTS, holder(tenant, org) or "tenant:")

    def grant_movements(
        self, tenant: str | None, after_sequence: int, limit: int, *, org: str | None = None
    ) -> list[tuple[int, Movement]]:
        with self._connection("read grant movements") as conn:
            return select_movements(conn, _GRANTS, holder(tenant, org), after_sequence, limit)

    def _write_grants(self, action: str, work: Callable[[psycopg.Connection], _T]) -> _T:
        with self._connection(action) as conn, conn.transaction():
            # The append lock: burns and grant changes see each other's balances whole.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            return work(conn)

    def set_tenant_plan(self, tenant: str, plan: str, now_ns: int) -> None:
        with self._connection("store plan") as conn:
            upsert_plan(conn, "%s", _text(tenant), _text(plan), now_ns)

    def clear_tenant_plan(self, tenant: str) -> bool:
        with self._connection("remove plan") as conn:
            return delete_plan(conn, "%s", _text(tenant))

    def tenant_plans(self) -> dict[str, str]:
        with self._connection("read plans") as conn:
            return select_plans(conn)

    def lease(self, name: str) -> Lease:
        return AdvisoryLease(name, self._connect_for_lease)

    def _connect_for_lease(self) -> psycopg.Connection:
        if self._closed:
            raise psycopg.OperationalError("ledger is closed")
        return psycopg.connect(self._conninfo, **self._connect_args)

    def close(self) -> None:
        """Close the idle connections now; those in use close when their call returns."""
        self._closed = True
        self._discard_idle()


def _text(value: str) -> str:
    """``value`` as PostgreSQL can store it: its text cannot hold NUL, so U+FFFD stands in."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


_GRANTS = dataclasses.replace(POSTGRES_GRANTS, text=_text)


def _storable(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """``values`` with every text made storable by ``_text``."""
    if not any(type(value) is str and "\x00" in value for value in values):
        return values
    return tuple(_text(value) if type(value) is str else value for value in values)


def _rollup_key(row: tuple[object, ...]) -> tuple[str, ...]:
    return tuple(str(value) for value in row[: 2 + len(ROLLUP_DIMENSIONS)])


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
