"""The ledger's schema: literal per version, migrated in order, one row layout for all."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from pathlib import Path

import pytest

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import SQLiteLedger, StorageError
from tollmeter.collector.storage._codec import EVENT_COLUMNS, ROW_COLUMNS
from tollmeter.collector.storage._schema import SCHEMA_VERSION

OLD_LEDGER = (
    Path(__file__).resolve().parents[2] / "fixtures" / "release-0.1.0" / "data" / "ledger.db"
)


def schema(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
        ).fetchall()
    return [(kind, name, " ".join(sql.split())) for kind, name, sql in rows]


def test_every_event_field_has_a_column():
    # A new UsageEvent field needs a column, added by a new migration, before it is stored.
    fields = [field.name for field in dataclasses.fields(UsageEvent) if field.name != "sequence"]
    assert list(EVENT_COLUMNS) == fields


def test_a_new_ledger_stores_the_rows_the_codec_lays_out(tmp_path):
    path = tmp_path / "ledger.db"
    SQLiteLedger(str(path)).close()
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(usage_events)")]
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
        history = conn.execute("SELECT version, applied_by FROM schema_migrations").fetchall()
    assert sorted(columns) == sorted(ROW_COLUMNS)
    assert version == SCHEMA_VERSION
    assert [applied for applied, _ in history] == list(range(1, SCHEMA_VERSION + 1))
    assert all(by.startswith("tollmeter ") for _, by in history)


def test_the_previous_release_migrates_to_the_schema_of_a_new_ledger(tmp_path):
    old = tmp_path / "old.db"
    shutil.copyfile(OLD_LEDGER, old)
    SQLiteLedger(str(old)).close()
    new = tmp_path / "new.db"
    SQLiteLedger(str(new)).close()
    assert schema(old) == schema(new)
    with sqlite3.connect(old) as conn:
        applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    assert applied == list(range(2, SCHEMA_VERSION + 1))


def test_opening_twice_migrates_once(tmp_path):
    path = tmp_path / "ledger.db"
    SQLiteLedger(str(path)).close()
    before = schema(path)
    SQLiteLedger(str(path)).close()
    assert schema(path) == before
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()
    assert count == SCHEMA_VERSION


def test_a_ledger_newer_than_this_release_is_refused_untouched(tmp_path):
    path = tmp_path / "ledger.db"
    SQLiteLedger(str(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    before = path.read_bytes()
    with pytest.raises(StorageError, match=r"newer than this tollmeter .* upgrade tollmeter"):
        SQLiteLedger(str(path))
    assert path.read_bytes() == before


def test_rollups_are_keyed_by_the_dimensions_in_their_order(tmp_path):
    from tollmeter.collector._dimensions import DIMENSIONS

    path = tmp_path / "ledger.db"
    SQLiteLedger(str(path)).close()
    with sqlite3.connect(path) as conn:
        key = [row[1] for row in conn.execute("PRAGMA table_info(rollups)") if row[5] > 0]
    assert key == ["granularity", "bucket", *DIMENSIONS]
