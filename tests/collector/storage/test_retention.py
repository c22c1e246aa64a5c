"""Retention on every backend: the oldest exported commits are cut behind a checkpoint that
``verify`` resumes from, and the monthly totals stay what they were."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from tests.collector.storage.conftest import BASE_NS, EventFactory
from tollmeter.collector.storage import Ledger, StorageError, open_ledger
from tollmeter.collector.storage._query import UsageQuery
from tollmeter.collector.storage._retention import prune
from tollmeter.collector.storage._verify import verify_ledger

DAY_NS = 86_400 * 1_000_000_000


def fill(ledger: Ledger, make_event: EventFactory, days: int = 5) -> list[int]:
    """One commit of three events per day; the last sequence of each day."""
    ends = []
    for day in range(days):
        base = BASE_NS - 10 * DAY_NS + day * DAY_NS
        result = ledger.append([make_event(event_time_ns=base + n) for n in range(3)])
        ends.append(result.committed[-1].sequence)
    return ends


def month_totals(ledger: Ledger) -> list[tuple[int, int]]:
    return [
        (row.total_tokens, row.requests) for row in ledger.query_usage(UsageQuery(window="month"))
    ]


def test_exported_events_older_than_the_cutoff_are_pruned(
    ledger: Ledger, make_event: EventFactory
) -> None:
    ends = fill(ledger, make_event)
    before = month_totals(ledger)
    cutoff = BASE_NS - 10 * DAY_NS + 3 * DAY_NS

    deleted = prune(ledger, cutoff_ns=cutoff, exported_through=ends[-1], batch_events=4)

    assert deleted == 9
    assert [event.sequence for event in ledger.read_events(0, 100)] == list(
        range(ends[2] + 1, ends[-1] + 1)
    )
    assert month_totals(ledger) == before
    verdict = verify_ledger(ledger)
    assert verdict.ok, verdict.problem
    assert verdict.checkpoint is not None
    assert (verdict.checkpoint.commit, verdict.checkpoint.last_sequence) == (3, ends[2])
    assert verdict.checkpoint.pruned_events == 9
    assert (verdict.commits, verdict.events) == (5, 6)
    assert prune(ledger, cutoff_ns=cutoff, exported_through=ends[-1]) == 0


def test_an_unexported_event_is_never_pruned(ledger: Ledger, make_event: EventFactory) -> None:
    ends = fill(ledger, make_event)

    deleted = prune(ledger, cutoff_ns=BASE_NS, exported_through=ends[1] - 1)

    assert deleted == 3
    assert ledger.read_events(0, 1)[0].sequence == ends[0] + 1
    assert verify_ledger(ledger).ok


def test_the_newest_commit_stays_so_sequences_go_on(
    ledger: Ledger, make_event: EventFactory
) -> None:
    ends = fill(ledger, make_event, days=2)

    assert prune(ledger, cutoff_ns=BASE_NS, exported_through=ends[-1]) == 3
    (event,) = ledger.append([make_event(event_time_ns=BASE_NS)]).committed

    assert event.sequence == ends[-1] + 1
    assert verify_ledger(ledger).ok


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Ledger]]:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path}/ledger.db"
    with open_ledger(url) as opened:
        yield url, opened


def run_sql(url: str, sql: str) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql)
    else:
        with psycopg.connect(url) as conn:
            conn.execute(sql)


def test_an_edit_after_the_cut_is_still_caught(
    shared_ledger: tuple[str, Ledger], make_event: EventFactory
) -> None:
    url, ledger = shared_ledger
    ends = fill(ledger, make_event)
    prune(ledger, cutoff_ns=BASE_NS - 7 * DAY_NS, exported_through=ends[-1])

    run_sql(url, f"UPDATE usage_events SET output_tokens = 1 WHERE sequence = {ends[3]}")

    verdict = verify_ledger(ledger)
    assert verdict.problem is not None
    assert (verdict.problem.kind, verdict.problem.sequence) == ("altered", ends[3])


def test_a_forged_checkpoint_is_caught(
    shared_ledger: tuple[str, Ledger], make_event: EventFactory
) -> None:
    url, ledger = shared_ledger
    ends = fill(ledger, make_event)
    prune(ledger, cutoff_ns=BASE_NS - 7 * DAY_NS, exported_through=ends[-1])

    run_sql(url, f"UPDATE ledger_chain_checkpoint SET head = '{'0' * 64}'")

    verdict = verify_ledger(ledger)
    assert verdict.problem is not None
    assert verdict.problem.kind == "chain"


def test_an_altered_event_is_not_pruned(
    shared_ledger: tuple[str, Ledger], make_event: EventFactory
) -> None:
    url, ledger = shared_ledger
    ends = fill(ledger, make_event)
    run_sql(url, f"UPDATE usage_events SET input_tokens = 1 WHERE sequence = {ends[1]}")

    with pytest.raises(StorageError, match="refusing to prune"):
        prune(ledger, cutoff_ns=BASE_NS, exported_through=ends[-1])

    # The batch holding the altered commit is refused whole.
    assert ledger.read_events(0, 1)[0].sequence == 1


def count_hour_rollups(url: str) -> int:
    sql = "SELECT COUNT(*) FROM rollups WHERE granularity = 'hour'"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return int(conn.execute(sql).fetchone()[0])
    with psycopg.connect(url) as pg:
        row = pg.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


def test_hour_rollups_past_their_age_are_not_kept(
    shared_ledger: tuple[str, Ledger], make_event: EventFactory
) -> None:
    url, plain = shared_ledger
    plain.close()
    hour_ns = 3_600 * 1_000_000_000
    day_start = BASE_NS - BASE_NS % DAY_NS
    events = [make_event(event_time_ns=day_start + hour * hour_ns + 5) for hour in (3, 3, 7)]
    query = UsageQuery(
        start=datetime.fromtimestamp(day_start / 1e9, UTC),
        end=datetime.fromtimestamp((day_start + DAY_NS) / 1e9, UTC),
        window="hour",
    )

    with open_ledger(url, hour_rollups_s=86_400) as ledger:
        ledger.append(events)

        assert count_hour_rollups(url) == 0
        rows = ledger.query_usage(query)
        assert [(row.window_start, row.requests) for row in rows] == [
            (datetime.fromtimestamp((day_start + 3 * hour_ns) / 1e9, UTC), 2),
            (datetime.fromtimestamp((day_start + 7 * hour_ns) / 1e9, UTC), 1),
        ]
        (day,) = ledger.query_usage(dataclasses.replace(query, window="day"))
        assert (day.requests, day.total_tokens) == (3, 450)
