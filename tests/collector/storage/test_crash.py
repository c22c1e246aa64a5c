"""Crash safety: a writer killed with SIGKILL loses no acknowledged event and duplicates none."""

from __future__ import annotations

import random
import signal
import subprocess
import sys

from tollmeter.collector.storage import UsageQuery, open_ledger

BATCH = 25

# Appends numbered batches forever, printing each batch number once its append returned.
_WRITER = """
import sys
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import open_ledger

ledger = open_ledger(sys.argv[1])
batch = int(sys.argv[2])
while True:
    events = [
        UsageEvent(
            event_id=f"b{batch}-{i}", event_time_ns=1_773_500_966_000_000_000 + batch,
            provider="openai", operation="chat", tenant_id=f"t{i % 3}",
            input_tokens=i, total_tokens=i,
        )
        for i in range(BATCH_SIZE)
    ]
    ledger.append(events)
    print(batch, flush=True)
    batch += 1
""".replace("BATCH_SIZE", str(BATCH))


def _run_and_kill(url: str, first_batch: int, acks_before_kill: int) -> int:
    """Start a writer, SIGKILL it after ``acks_before_kill`` acks; return the last acked batch."""
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, url, str(first_batch)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    last = first_batch - 1
    try:
        for _ in range(acks_before_kill):
            line = child.stdout.readline()
            assert line, "the writer died on its own"
            last = int(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    return last


def test_sigkill_mid_append_loses_and_duplicates_nothing(durable_url: str) -> None:
    url = durable_url
    rng = random.Random(5)
    next_batch = 0
    acked = -1
    for _ in range(3):
        acked = _run_and_kill(url, next_batch, rng.randint(3, 30))
        with open_ledger(url) as ledger:
            events = ledger.read_events(0, 100_000)
            ids = [e.event_id for e in events]
            assert len(ids) == len(set(ids)), "an event was stored twice"
            expected = {f"b{b}-{i}" for b in range(acked + 1) for i in range(BATCH)}
            assert expected <= set(ids), "an acknowledged event was lost"
            assert [e.sequence for e in events] == sorted(e.sequence for e in events)
            # The batch in flight at the kill is all or nothing.
            assert len(ids) % BATCH == 0
            (total,) = ledger.query_usage(UsageQuery())
            assert total.requests == len(ids), "rollups diverged from the events"
            # The sender retries everything it did not see acknowledged: nothing doubles.
            retry = ledger.read_events(0, 100_000)
            assert ledger.append(retry).duplicates == len(retry)
        next_batch = acked + 1
