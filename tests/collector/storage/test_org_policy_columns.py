"""Migration 7: a version 6 ledger gains each event's organisation and policy path, and
the Parquet export carries both."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.export._schema import events_to_table, rows_to_table
from tollmeter.collector.storage import Ledger, open_ledger
from tollmeter.collector.storage import _postgres_schema as postgres_schema
from tollmeter.collector.storage._codec import EVENT_COLUMNS, event_values
from tollmeter.collector.storage._schema import MIGRATIONS, register_functions

# The event columns version 6 had: every column before the organisation.
V6_COLUMNS = EVENT_COLUMNS[: EVENT_COLUMNS.index("org_id")]
POLICY = '{"d":"allow","r":"res-1","l":["org-day"]}'


def _version_6_sqlite(path: Path, event: UsageEvent) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    register_functions(conn)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for steps in MIGRATIONS[:5]:
        for step in steps:
            assert isinstance(step, str)
            conn.execute(step)
    conn.execute(
        f"INSERT INTO usage_events (sequence, {', '.join(V6_COLUMNS)}) "
        f"VALUES ({', '.join('?' * (len(V6_COLUMNS) + 1))})",
        (1, *[getattr(event, name) for name in V6_COLUMNS]),
    )
    # Version 6 links the events already there into the chain's genesis.
    for step in MIGRATIONS[5]:
        if isinstance(step, str):
            conn.execute(step)
        else:
            step(conn)
    conn.execute("INSERT INTO schema_version (version) VALUES (6)")
    conn.close()


def _version_6_postgres(url: str, event: UsageEvent) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for steps in postgres_schema.MIGRATIONS[:5]:
            for step in steps:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
        conn.execute(
            f"INSERT INTO usage_events (sequence, {', '.join(V6_COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * (len(V6_COLUMNS) + 1))})",
            (1, *[getattr(event, name) for name in V6_COLUMNS]),
        )
        for step in postgres_schema.MIGRATIONS[5]:
            if isinstance(step, str):
                conn.execute(step)
            else:
                step(conn)
        conn.execute("INSERT INTO schema_version (version) VALUES (6)")


def _carries_on(ledger: Ledger, old: UsageEvent, make_event: Callable[..., UsageEvent]) -> None:
    new = make_event(org_id="acme-org", policy=POLICY)
    ledger.append([new])
    first, second = ledger.read_events(0, 10)
    # Rows written before the columns existed read back as no organisation, never checked.
    assert (first.event_id, first.org_id, first.policy) == (old.event_id, None, None)
    assert (second.org_id, second.policy) == ("acme-org", POLICY)


def test_a_version_6_sqlite_ledger_gains_org_and_policy(tmp_path: Path, make_event) -> None:
    path = tmp_path / "ledger.db"
    old = make_event()
    _version_6_sqlite(path, old)
    with open_ledger(f"sqlite:///{path}") as ledger:
        _carries_on(ledger, old, make_event)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (len(MIGRATIONS),)


def test_a_version_6_postgres_ledger_gains_org_and_policy(postgres_url: str, make_event) -> None:
    old = make_event()
    _version_6_postgres(postgres_url, old)
    with open_ledger(postgres_url) as ledger:
        _carries_on(ledger, old, make_event)


def test_parquet_rows_carry_org_and_policy(make_event) -> None:
    event = make_event(org_id="acme-org", policy=POLICY, sequence=1)
    row = (*event_values(event), 1)
    for table in (
        events_to_table([event], collector_id="c-1"),
        rows_to_table([row], collector_id="c-1"),
    ):
        (written,) = table.to_pylist()
        assert (written["org_id"], written["policy"]) == ("acme-org", POLICY)
