"""A ledger written before dedupe was scoped to the tenant, opened by this release."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from tollmeter.collector._event_ids import event_id, legacy_event_id
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import SQLiteLedger
from tollmeter.collector.storage._codec import EVENT_COLUMNS
from tollmeter.collector.storage._schema import MIGRATIONS, register_functions

TRACE = "0af7651916cd43dd8448eb211c80319c"
# The event columns version 1 created; later versions append theirs.
V1_COLUMNS = EVENT_COLUMNS[: EVENT_COLUMNS.index("collector_id") + 1]


def _version_1_ledger(path: Path, events: list[UsageEvent], *, seen_ns: int) -> None:
    """What the version 1 code left on disk: its tables, events under their old ids, and
    a dedupe key for each, seen at ``seen_ns``."""
    conn = sqlite3.connect(path, isolation_level=None)
    register_functions(conn)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    for sequence, event in enumerate(events, start=1):
        values = [getattr(event, name) for name in V1_COLUMNS]
        conn.execute(
            f"INSERT INTO usage_events (sequence, {', '.join(V1_COLUMNS)}) "
            f"VALUES ({', '.join('?' * (len(V1_COLUMNS) + 1))})",
            (sequence, *values),
        )
        conn.execute("INSERT INTO dedupe_keys VALUES (?, ?)", (event.event_id, seen_ns))
    conn.close()


def _call(
    make_event: Callable[..., UsageEvent],
    tenant: str,
    *,
    response_id: str | None,
    span_id: str,
    legacy: bool,
) -> UsageEvent:
    if legacy:
        ident = legacy_event_id("openai", response_id, TRACE, span_id)
    else:
        ident = event_id(tenant, "openai", response_id, TRACE, span_id)
    return make_event(
        event_id=ident, tenant_id=tenant, response_id=response_id, trace_id=TRACE, span_id=span_id
    )


def test_a_batch_retried_across_the_upgrade_counts_once(tmp_path: Path, make_event) -> None:
    path = tmp_path / "ledger.db"
    old = [
        _call(make_event, "acme", response_id="chatcmpl-1", span_id="1" * 16, legacy=True),
        _call(make_event, "acme", response_id=None, span_id="2" * 16, legacy=True),
        # Usage the limits service wrote itself has ids of its own: left as they are.
        make_event(event_id="reservation-charge", tenant_id="acme", response_id="chatcmpl-9"),
    ]
    _version_1_ledger(path, old, seen_ns=time.time_ns())
    ledger = SQLiteLedger(str(path))
    try:
        retried = [
            _call(make_event, "acme", response_id="chatcmpl-1", span_id="1" * 16, legacy=False),
            _call(make_event, "acme", response_id=None, span_id="2" * 16, legacy=False),
        ]
        assert ledger.append(retried).duplicates == 2
        # The same ids reported for another tenant are that tenant's own calls.
        other = [
            _call(make_event, "globex", response_id="chatcmpl-1", span_id="1" * 16, legacy=False),
            _call(make_event, "globex", response_id=None, span_id="2" * 16, legacy=False),
        ]
        assert len(ledger.append(other).committed) == 2
        # A span of the call the limits service billed is not taken for that charge.
        span = _call(make_event, "acme", response_id="chatcmpl-9", span_id="3" * 16, legacy=False)
        assert len(ledger.append([span]).committed) == 1
        assert [e.event_id for e in ledger.read_events(0, 10)[:3]] == [e.event_id for e in old]
    finally:
        ledger.close()


def test_re_keyed_dedupe_keys_keep_the_time_first_seen(tmp_path: Path, make_event) -> None:
    path = tmp_path / "ledger.db"
    old = _call(make_event, "acme", response_id="chatcmpl-1", span_id="1" * 16, legacy=True)
    long_ago = time.time_ns() - 30 * 86_400 * 1_000_000_000
    _version_1_ledger(path, [old], seen_ns=long_ago)
    ledger = SQLiteLedger(str(path))
    try:
        twin = event_id("acme", "openai", "chatcmpl-1", TRACE, "1" * 16)
        conn = sqlite3.connect(path)
        seen = conn.execute("SELECT seen_ns FROM dedupe_keys WHERE event_id = ?", (twin,))
        # Re-keyed with the time it was first seen, so it expires when the original would.
        assert seen.fetchall() == [(long_ago,)]
        conn.close()
    finally:
        ledger.close()


def test_a_version_3_ledger_gains_the_hidden_and_timing_columns(tmp_path: Path, make_event) -> None:
    path = tmp_path / "ledger.db"
    old = _call(make_event, "acme", response_id="chatcmpl-1", span_id="1" * 16, legacy=False)
    conn = sqlite3.connect(path, isolation_level=None)
    register_functions(conn)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statements in MIGRATIONS[:3]:
        for statement in statements:
            conn.execute(statement)
    conn.execute("INSERT INTO schema_version (version) VALUES (3)")
    conn.execute(
        f"INSERT INTO usage_events (sequence, {', '.join(V1_COLUMNS)}) "
        f"VALUES ({', '.join('?' * (len(V1_COLUMNS) + 1))})",
        (1, *[getattr(old, name) for name in V1_COLUMNS]),
    )
    conn.close()
    ledger = SQLiteLedger(str(path))
    try:
        new = make_event(
            hidden_input_tokens=120, time_to_first_token_s=0.25, decode_s_per_output_token=0.01
        )
        ledger.append([new])
        first, second = ledger.read_events(0, 10)
        # Rows written before the columns existed read back as "not reported".
        assert (first.event_id, first.hidden_input_tokens) == (old.event_id, None)
        assert (first.time_to_first_token_s, first.decode_s_per_output_token) == (None, None)
        assert (second.hidden_input_tokens, second.time_to_first_token_s) == (120, 0.25)
        assert second.decode_s_per_output_token == 0.01
    finally:
        ledger.close()
