"""The export lease among replicas sharing a PostgreSQL ledger."""

from __future__ import annotations

import psycopg

from tollmeter.collector.storage import open_ledger


def test_one_holder_at_a_time_and_a_takeover_when_it_goes(postgres_url: str) -> None:
    with open_ledger(postgres_url) as first, open_ledger(postgres_url) as second:
        mine, theirs = first.lease("export"), second.lease("export")
        assert mine.acquire()
        assert mine.acquire(), "the holder keeps it"
        assert not theirs.acquire()
        other = first.lease("other")
        assert other.acquire(), "leases are independent"
        other.release()
        mine.release()
        assert theirs.acquire()
        assert not mine.acquire()

        # The holder's session dies (a killed replica, a dropped connection).
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
            )
        assert not theirs.acquire(), "a holder whose session died no longer claims it"
        assert mine.acquire()
        mine.release()
        theirs.release()


def test_a_ledger_of_its_own_always_holds_its_leases(tmp_path) -> None:
    with open_ledger(f"sqlite:///{tmp_path}/ledger.db") as ledger:
        lease = ledger.lease("export")
        assert lease.acquire()
        lease.release()
