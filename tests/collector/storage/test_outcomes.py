"""Outcomes in every ledger backend: stored once per (tenant, outcome id), summarised
against their workflows' usage, and added to ledgers written by older versions."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import psycopg

from tests.collector.storage.conftest import BASE_NS
from tollmeter.collector._outcomes import Outcome, outcome_id
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import Ledger, SQLiteLedger, open_ledger
from tollmeter.collector.storage import _postgres_schema as postgres_schema
from tollmeter.collector.storage._codec import EVENT_COLUMNS
from tollmeter.collector.storage._schema import MIGRATIONS, SCHEMA_VERSION, register_functions

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "release-0.1.0" / "data"
END = 2**63 - 1
V1_COLUMNS = EVENT_COLUMNS[: EVENT_COLUMNS.index("collector_id") + 1]


def _outcome(tenant: str, workflow: str, name: str = "resolved", value: str = "1") -> Outcome:
    return Outcome(
        outcome_id=outcome_id(workflow, name),
        tenant_id=tenant,
        workflow_id=workflow,
        name=name,
        value=Decimal(value),
        time_ns=BASE_NS,
    )


def test_outcomes_are_stored_once_per_tenant_and_id(ledger: Ledger) -> None:
    first = _outcome("acme", "wf-1", value="2.5")
    stored = ledger.append_outcomes([first, first, _outcome("globex", "wf-1")])
    assert [(o.tenant_id, o.sequence) for o in stored] == [("acme", 1), ("globex", 2)]
    assert ledger.append_outcomes([first]) == []
    rows = ledger.read_outcome_rows(0, 10)
    assert [row[1:] for row in rows] == [
        ("acme", "wf-1", "resolved", "2.5", BASE_NS, 1),
        ("globex", "wf-1", "resolved", "1", BASE_NS, 2),
    ]
    assert ledger.read_outcome_rows(1, 10) == rows[1:]


def test_the_summary_prices_outcomes_by_their_workflows(
    ledger: Ledger, make_event: Callable[..., UsageEvent]
) -> None:
    ledger.append(
        [
            make_event(workflow_id="wf-1", cost=Decimal("0.000123"), currency="USD"),
            make_event(workflow_id="wf-1", cost=Decimal("0.000077"), currency="USD"),
            make_event(workflow_id="wf-2", cost=Decimal("0.5"), currency="USD"),
            make_event(workflow_id="wf-3", cost=Decimal("0.25"), currency="USD"),
            make_event(workflow_id="wf-3", tenant_id="globex", cost=Decimal("9"), currency="USD"),
            make_event(cost=Decimal("7"), currency="USD"),  # no workflow: in neither figure
        ]
    )
    ledger.append_outcomes(
        [
            _outcome("acme", "wf-1"),
            _outcome("acme", "wf-1", name="upsold", value="30.10"),
            _outcome("acme", "wf-2"),
            # Another tenant's outcome for a workflow of the same name prices nothing here.
            _outcome("globex", "wf-2"),
        ]
    )
    summary = ledger.summarize_outcomes(tenant="acme", start_ns=0, end_ns=END, name=None)
    by_name = {totals.name: totals.to_json() for totals in summary.outcomes}
    assert by_name["resolved"]["count"] == 2
    assert by_name["resolved"]["workflows"] == 2
    assert by_name["resolved"]["calls"] == 3
    assert by_name["resolved"]["total_tokens"] == 450
    assert Decimal(str(by_name["resolved"]["cost"])) == Decimal("0.5002")
    assert Decimal(str(by_name["resolved"]["cost_per_outcome"])) == Decimal("0.2501")
    assert by_name["upsold"]["value"] == "30.10"
    assert Decimal(str(by_name["upsold"]["cost"])) == Decimal("0.0002")
    without = summary.without_outcome.to_json()
    assert (without["workflows"], without["calls"], without["cost"]) == (1, 1, "0.25")
    everyone = ledger.summarize_outcomes(tenant=None, start_ns=0, end_ns=END, name="resolved")
    (resolved,) = everyone.outcomes
    assert (resolved.count, resolved.usage.workflows, resolved.usage.calls) == (3, 3, 3)
    assert everyone.without_outcome.workflows == 2


def _version_3_sqlite(path: Path, events: list[UsageEvent]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    register_functions(conn)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statements in MIGRATIONS[:3]:
        for statement in statements:
            assert isinstance(statement, str)
            conn.execute(statement)
    conn.execute("INSERT INTO schema_version (version) VALUES (3)")
    for sequence, event in enumerate(events, start=1):
        conn.execute(
            f"INSERT INTO usage_events (sequence, {', '.join(V1_COLUMNS)}) "
            f"VALUES ({', '.join('?' * (len(V1_COLUMNS) + 1))})",
            (sequence, *(_sqlite_value(getattr(event, name)) for name in V1_COLUMNS)),
        )
    conn.close()


def _sqlite_value(value: object) -> object:
    return str(value) if isinstance(value, Decimal) else value


def _version_3_postgres(url: str, events: list[UsageEvent]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for steps in postgres_schema.MIGRATIONS[:3]:
            for step in steps:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
        conn.execute("INSERT INTO schema_version (version) VALUES (3)")
        for sequence, event in enumerate(events, start=1):
            conn.execute(
                f"INSERT INTO usage_events (sequence, {', '.join(V1_COLUMNS)}) "
                f"VALUES ({', '.join(['%s'] * (len(V1_COLUMNS) + 1))})",
                (sequence, *(getattr(event, name) for name in V1_COLUMNS)),
            )


def test_a_version_3_ledger_gains_outcomes(
    durable_url: str, tmp_path: Path, make_event: Callable[..., UsageEvent]
) -> None:
    old = [
        make_event(workflow_id="wf-old", cost=Decimal("0.1"), currency="USD"),
        make_event(workflow_id="wf-old", cost=Decimal("0.2"), currency="USD"),
    ]
    if durable_url.startswith("sqlite"):
        _version_3_sqlite(tmp_path / "ledger.db", old)
    else:
        _version_3_postgres(durable_url, old)
    with open_ledger(durable_url) as ledger:
        assert [event.event_id for event in ledger.read_events(0, 10)] == [e.event_id for e in old]
        assert len(ledger.append_outcomes([_outcome("acme", "wf-old")])) == 1
        summary = ledger.summarize_outcomes(tenant="acme", start_ns=0, end_ns=END, name=None)
        (resolved,) = summary.outcomes
        assert resolved.usage.calls == 2
        assert resolved.usage.cost == Decimal("0.3")
    with open_ledger(durable_url) as reopened:
        # Migrated once: the outcome is still there and a repeat still refused.
        assert reopened.append_outcomes([_outcome("acme", "wf-old")]) == []


def test_the_release_0_1_0_ledger_gains_outcomes(
    tmp_path: Path, make_event: Callable[..., UsageEvent]
) -> None:
    path = tmp_path / "ledger.db"
    shutil.copyfile(FIXTURE / "ledger.db", path)
    with SQLiteLedger(str(path)) as ledger:
        before = ledger.read_events(0, 100)
        assert len(before) == 12
        ledger.append([make_event(workflow_id="wf-new", cost=Decimal("0.4"), currency="USD")])
        assert len(ledger.append_outcomes([_outcome("acme", "wf-new")])) == 1
        summary = ledger.summarize_outcomes(tenant="acme", start_ns=0, end_ns=END, name=None)
        assert summary.outcomes[0].usage.cost == Decimal("0.4")
        assert summary.without_outcome.workflows == 0
        assert ledger.read_events(0, 12) == before
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        conn.close()
