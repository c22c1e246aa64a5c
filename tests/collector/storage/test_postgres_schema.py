"""The PostgreSQL ledger's schema: the same versions and migrations as SQLite's."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from tollmeter.collector._event_ids import event_id, legacy_event_id
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import StorageError, open_ledger
from tollmeter.collector.storage._codec import EVENT_COLUMNS, ROW_COLUMNS
from tollmeter.collector.storage._postgres_schema import MIGRATIONS
from tollmeter.collector.storage._schema import SCHEMA_VERSION

TRACE = "0af7651916cd43dd8448eb211c80319c"
# The event columns version 1 created; later versions append theirs.
V1_COLUMNS = EVENT_COLUMNS[: EVENT_COLUMNS.index("collector_id") + 1]


def _columns(url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, column_name"
        ).fetchall()


def _version_1_ledger(url: str, events: list[UsageEvent], *, seen_ns: int) -> None:
    """What a version 1 ledger holds: its tables, events under their old ids, dedupe keys."""
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statement in MIGRATIONS[0]:
            assert isinstance(statement, str)
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        for sequence, event in enumerate(events, start=1):
            values = [getattr(event, name) for name in V1_COLUMNS]
            conn.execute(
                f"INSERT INTO usage_events (sequence, {', '.join(V1_COLUMNS)}) "
                f"VALUES ({', '.join(['%s'] * (len(V1_COLUMNS) + 1))})",
                (sequence, *values),
            )
            conn.execute("INSERT INTO dedupe_keys VALUES (%s, %s)", (event.event_id, seen_ns))


def _call(make_event: Callable[..., UsageEvent], tenant: str, *, legacy: bool) -> UsageEvent:
    response, span = "chatcmpl-1", "1" * 16
    if legacy:
        ident = legacy_event_id("openai", response, TRACE, span)
    else:
        ident = event_id(tenant, "openai", response, TRACE, span)
    return make_event(
        event_id=ident, tenant_id=tenant, response_id=response, trace_id=TRACE, span_id=span
    )


def test_a_version_1_ledger_migrates_to_the_schema_of_a_new_one(
    postgres_server, make_event
) -> None:
    old, new = postgres_server.create_database(), postgres_server.create_database()
    long_ago = time.time_ns() - 3 * 86_400 * 1_000_000_000
    _version_1_ledger(old, [_call(make_event, "acme", legacy=True)], seen_ns=long_ago)
    with open_ledger(old) as ledger:
        with psycopg.connect(old) as conn:
            twin = event_id("acme", "openai", "chatcmpl-1", TRACE, "1" * 16)
            seen = conn.execute("SELECT seen_ns FROM dedupe_keys WHERE event_id = %s", (twin,))
            # The re-keyed dedupe key expires when the original would have.
            assert seen.fetchall() == [(long_ago,)]
        # A batch committed by version 1 and retried against this release counts once...
        assert ledger.append([_call(make_event, "acme", legacy=False)]).duplicates == 1
        # ...and the same call reported for another tenant is that tenant's own.
        assert len(ledger.append([_call(make_event, "globex", legacy=False)]).committed) == 1
    open_ledger(new).close()

    assert _columns(old) == _columns(new)
    with psycopg.connect(old) as conn:
        applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    assert applied == list(range(2, SCHEMA_VERSION + 1))


def test_a_new_ledger_stores_the_rows_the_codec_lays_out(postgres_url: str) -> None:
    open_ledger(postgres_url).close()
    columns = [name for table, name, _ in _columns(postgres_url) if table == "usage_events"]
    assert sorted(columns) == sorted(ROW_COLUMNS)


def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_and_close() -> None:
        start.wait(10)
        try:
            open_ledger(postgres_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with psycopg.connect(postgres_url) as conn:
        history = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert history == [(version,) for version in range(1, SCHEMA_VERSION + 1)]


def test_a_newer_schema_is_refused_untouched(postgres_url: str) -> None:
    open_ledger(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    before = _columns(postgres_url)
    with pytest.raises(
        StorageError, match=r"newer than this tollmeter .* upgrade tollmeter"
    ) as err:
        open_ledger(postgres_url)
    assert "\n" not in str(err.value)
    assert _columns(postgres_url) == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pool_size": "0"}, "pool_size must be positive"),
        ({"statement_timeout_s": "soon"}, "statement_timeout_s must be a number"),
        ({"sslmod": "require"}, "unknown postgresql:// option sslmod"),
    ],
)
def test_bad_options_are_configuration_errors(postgres_url: str, options, message) -> None:
    from tollmeter.semconv.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        open_ledger(postgres_url, **options)


def test_an_unreachable_server_fails_within_the_connect_timeout() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StorageError, match="could not open ledger"):
        open_ledger(f"postgresql://postgres@127.0.0.1:{port}/x?connect_timeout_s=2")


def test_a_version_3_ledger_reads_old_rows_with_no_hidden_or_timing_values(
    postgres_server, make_event
) -> None:
    url = postgres_server.create_database()
    old = _call(make_event, "acme", legacy=False)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for steps in MIGRATIONS[:3]:
            for step in steps:
                conn.execute(step) if isinstance(step, str) else step(conn)
        conn.execute("INSERT INTO schema_version (version) VALUES (3)")
        conn.execute(
            f"INSERT INTO usage_events (sequence, {', '.join(V1_COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * (len(V1_COLUMNS) + 1))})",
            (1, *[getattr(old, name) for name in V1_COLUMNS]),
        )
    with open_ledger(url) as ledger:
        ledger.append([make_event(hidden_input_tokens=7, time_to_first_token_s=0.5)])
        first, second = ledger.read_events(0, 10)
    assert (first.hidden_input_tokens, first.time_to_first_token_s) == (None, None)
    assert first.decode_s_per_output_token is None
    assert (second.hidden_input_tokens, second.time_to_first_token_s) == (7, 0.5)
