"""Ledger appends per second on PostgreSQL against SQLite, in the same run.

Measures ``Ledger.append`` with batches of ``--batch`` new events (one group commit each),
on a PostgreSQL server this script starts (``initdb`` in a temporary directory, run as an
unprivileged user, durable settings: fsync and synchronous commit on) and on a SQLite file
ledger (``synchronous=full``) in a temporary directory. Both are fed the same events; the
ratio is PostgreSQL's rate over SQLite's.

Prints one JSON object. Usage: ``python benchmarks/ledger_postgres.py --batches 30``.
Needs the Debian package ``postgresql`` and the ``postgres`` extra.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests._postgres import PostgresServer
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import Ledger, open_ledger

BASE_NS = 1_773_500_966 * 1_000_000_000


def batches(count: int, size: int) -> list[list[UsageEvent]]:
    return [
        [
            UsageEvent(
                event_id=f"b{b}-{i}",
                event_time_ns=BASE_NS + (b * size + i) * 1_000_000,
                provider="openai",
                operation="chat",
                tenant_id=f"tenant-{i % 50}",
                project_id=f"project-{i % 5}",
                request_model="gpt-4o-mini",
                response_model="gpt-4o-mini-2024-07-18",
                response_id=f"chatcmpl-{b}-{i}",
                input_tokens=1000 + i,
                cache_read_input_tokens=100,
                output_tokens=200,
                total_tokens=1200 + i,
                trace_id=f"{b:016x}{i:016x}",
                span_id=f"{i:016x}",
                service_name="bench",
            )
            for i in range(size)
        ]
        for b in range(count)
    ]


def measure(ledger: Ledger, work: list[list[UsageEvent]]) -> dict[str, float]:
    ledger.append(work[0])  # warm-up: connections, caches, first pages
    started = time.perf_counter()
    events = 0
    for batch in work[1:]:
        events += len(ledger.append(batch).committed)
    elapsed = time.perf_counter() - started
    return {"events": events, "seconds": round(elapsed, 3), "events_per_s": events / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    work = batches(args.batches + 1, args.batch)
    with (
        tempfile.TemporaryDirectory() as directory,
        open_ledger(f"sqlite:///{directory}/ledger.db") as sqlite,
    ):
        on_sqlite = measure(sqlite, work)
    with PostgresServer() as server, open_ledger(server.create_database()) as postgres:
        on_postgres = measure(postgres, work)
    print(
        json.dumps(
            {
                "batch": args.batch,
                "batches": args.batches,
                "sqlite": on_sqlite,
                "postgresql": on_postgres,
                "ratio_postgresql_to_sqlite": on_postgres["events_per_s"]
                / on_sqlite["events_per_s"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
