"""The ledger contract, run against every backend on a real database."""

from __future__ import annotations

import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tollmeter.collector.storage import (
    Ledger,
    SQLiteLedger,
    StorageError,
    UsageQuery,
    open_ledger,
    register_ledger,
)
from tollmeter.collector.storage._schema import SCHEMA_VERSION
from tollmeter.semconv.errors import ConfigurationError


def test_append_assigns_increasing_sequences(ledger: Ledger, make_event) -> None:
    first = ledger.append([make_event(), make_event()])
    second = ledger.append([make_event()])

    assert [e.sequence for e in first.committed] == [1, 2]
    assert [e.sequence for e in second.committed] == [3]
    assert first.duplicates == second.duplicates == 0
    assert ledger.last_sequence() == 3


def test_committed_events_are_the_ones_given_stamped_with_their_sequence(
    ledger: Ledger, make_event
) -> None:
    given = [make_event(), make_event()]
    first = ledger.append(given)
    again = ledger.append([given[1], make_event()])

    assert all(c is g for c, g in zip(first.committed, given, strict=True))
    assert [e.sequence for e in given] == [1, 2]
    # A duplicate is not committed again and keeps the sequence it was committed under.
    assert [e.sequence for e in again.committed] == [3]
    assert given[1].sequence == 2
    assert ledger.read_events(0, 10) == [*given, again.committed[0]]


def test_read_events_pages_in_sequence_order(ledger: Ledger, make_event) -> None:
    events = [make_event(cost=Decimal("0.000123"), currency="USD") for _ in range(5)]
    committed = ledger.append(events).committed

    assert ledger.read_events(0, 2) == committed[:2]
    assert ledger.read_events(2, 10) == committed[2:]
    assert ledger.read_events(5, 10) == []
    assert ledger.read_events(0, 10)[0].cost == Decimal("0.000123")


def test_every_field_round_trips(ledger: Ledger, make_event) -> None:
    event = make_event(
        project_id="p",
        user_id="u",
        api_key_id="k",
        feature="f",
        environment="prod",
        service_name="svc",
        request_id="r",
        workflow_id="w",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        response_id="chatcmpl-1",
        cost=Decimal("1.5E-7"),
        currency="USD",
        price_source="genai-prices",
        duration_s=1.25,
        status="error",
        error_type="timeout",
        attempt=2,
        reservation_id="res-1",
        collector_id="c1",
        usage_source="estimate",
        cache_write_input_tokens=5,
        hidden_input_tokens=40,
        time_to_first_token_s=0.375,
        decode_s_per_output_token=0.0125,
    )
    (stored,) = ledger.append([event]).committed

    assert ledger.read_events(0, 1) == [stored]
    assert stored == event.with_sequence(1)


def test_duplicates_within_one_batch_count_once(ledger: Ledger, make_event) -> None:
    event = make_event()
    result = ledger.append([event, event, make_event(event_id=event.event_id, tenant_id="x")])

    assert [e.event_id for e in result.committed] == [event.event_id]
    assert result.committed[0].tenant_id == "acme", "the first report of an event wins"
    assert result.duplicates == 2


def test_duplicates_across_batches_count_once(ledger: Ledger, make_event) -> None:
    event = make_event()
    ledger.append([event])
    result = ledger.append([event, make_event()])

    assert result.duplicates == 1
    assert len(result.committed) == 1
    assert ledger.query_usage(UsageQuery())[0].requests == 2


def test_duplicates_after_restart_count_once(durable_url: str, make_event) -> None:
    url = durable_url
    event = make_event()
    with open_ledger(url) as ledger:
        ledger.append([event])
    with open_ledger(url) as ledger:
        result = ledger.append([event])
        assert (result.committed, result.duplicates) == ([], 1)
        assert ledger.last_sequence() == 1
        assert [e.sequence for e in ledger.append([make_event()]).committed] == [2]


def test_late_duplicate_after_the_dedupe_window_is_still_refused(
    tmp_path: Path, make_event
) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    first, second = make_event(), make_event()
    with open_ledger(url, dedupe_window_s=0.001, prune_interval_s=0.001) as ledger:
        ledger.append([first])
        time.sleep(0.01)
        ledger.append([make_event()])  # prunes the seen key of `first`
        seen = sqlite3.connect(tmp_path / "ledger.db")
        keys = {key for (key,) in seen.execute("SELECT event_id FROM dedupe_keys")}
        seen.close()
        assert first.event_id not in keys, "the window pruned the oldest key"

        result = ledger.append([second, first])

        assert [e.event_id for e in result.committed] == [second.event_id]
        assert result.duplicates == 1
        assert [e.sequence for e in ledger.read_events(0, 10)] == [1, 2, 3]


def test_empty_append_is_a_no_op(ledger: Ledger) -> None:
    result = ledger.append([])
    assert (result.committed, result.duplicates, ledger.last_sequence()) == ([], 0, 0)


def test_state_is_durable(durable_url: str) -> None:
    url = durable_url
    with open_ledger(url) as ledger:
        assert ledger.get_state("export.cursor") is None
        ledger.set_state("export.cursor", "41")
        ledger.set_state("export.cursor", "42")
    with open_ledger(url) as ledger:
        assert ledger.get_state("export.cursor") == "42"


def test_file_ledger_is_wal_and_durable(tmp_path: Path) -> None:
    with open_ledger(f"sqlite:///{tmp_path}/ledger.db") as ledger:
        assert isinstance(ledger, SQLiteLedger)
        assert ledger.synchronous == "full"
        mode = sqlite3.connect(tmp_path / "ledger.db").execute("PRAGMA journal_mode").fetchone()
        assert mode[0] == "wal"


def test_relative_sqlite_url_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with open_ledger("sqlite:///data/ledger.db?synchronous=NORMAL") as ledger:
        assert isinstance(ledger, SQLiteLedger)
        assert ledger.synchronous == "normal"
    assert (tmp_path / "data" / "ledger.db").is_file()


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("postgres://db/x", {}, "unknown storage URL"),
        ("sqlite://", {}, "needs a file path"),
        ("memory://", {"synchronous": "sometimes"}, "synchronous must be one of"),
        ("memory://", {"dedupe_window_s": "-1"}, "dedupe_window_s must be positive"),
        ("memory://?dedupe_window_s=soon", {}, "dedupe_window_s must be a number"),
        ("memory://", {"colour": "blue"}, "bad option"),
    ],
)
def test_bad_urls_and_options_are_configuration_errors(url, options, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_ledger(url, **options)


def test_driver_errors_are_wrapped(tmp_path: Path, make_event) -> None:
    with pytest.raises(StorageError, match="could not open ledger"):
        open_ledger(f"sqlite:///{tmp_path}")  # a directory, not a database file
    (tmp_path / "garbage.db").write_bytes(b"not a database" * 100)
    with pytest.raises(StorageError):
        open_ledger(f"sqlite:///{tmp_path}/garbage.db")


def test_closed_ledger_refuses_work(ledger: Ledger, make_event) -> None:
    ledger.close()
    ledger.close()
    with pytest.raises(StorageError, match="closed"):
        ledger.append([make_event()])
    with pytest.raises(StorageError, match="closed"):
        ledger.read_events(0, 1)


def test_readers_in_other_threads_see_commits(ledger: Ledger, make_event) -> None:
    errors: list[BaseException] = []
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                sequences = [e.sequence for e in ledger.read_events(0, 1000)]
                assert sequences == list(range(1, len(sequences) + 1))
                seen.append(len(sequences))
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    for _ in range(20):
        ledger.append([make_event() for _ in range(10)])
    stop.set()
    for reader in readers:
        reader.join(timeout=10)

    assert errors == []
    assert ledger.last_sequence() == 200
    assert seen


def test_schema_version_is_recorded_and_newer_schemas_are_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    open_ledger(url).close()
    open_ledger(url).close()  # reopening migrates nothing
    conn = sqlite3.connect(tmp_path / "ledger.db")
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="newer than this tollmeter"):
        open_ledger(url)


def test_backends_plug_in_by_scheme(tmp_path: Path) -> None:
    opened: list[str] = []

    def factory(path: str, **options: object) -> Ledger:
        opened.append(path)
        return SQLiteLedger(None, **options)  # type: ignore[arg-type]

    register_ledger("test-backend", factory)
    with open_ledger("test-backend:///some/where?timeout_s=5") as ledger:
        assert ledger.last_sequence() == 0
    assert opened == ["some/where"]


def test_text_no_database_can_hold_is_stored_and_queried_alike(ledger: Ledger, make_event) -> None:
    # PostgreSQL's text cannot hold NUL; hostile spans carry it anyway.
    event = make_event(tenant_id="a\x00b", feature="\x00", user_id="u\x00")
    result = ledger.append([event])
    assert len(result.committed) == 1
    assert ledger.append([event]).duplicates == 1
    (stored,) = ledger.read_events(0, 10)
    assert stored.event_id == event.event_id
    (row,) = ledger.query_usage(UsageQuery(tenant=stored.tenant_id, group_by=("feature",)))
    assert row.requests == 1
    assert ledger.query_usage(UsageQuery(tenant="\x00")) == []
