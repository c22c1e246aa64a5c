"""Ledger append as the ledger grows: does a commit cost more at 5 million events than at 0?

Appends ``--events`` synthetic usage events to a fresh SQLite ledger (durable commits,
``synchronous=full``) through ``Ledger.append``, ``--batch`` events per commit, with event
ids spread like real ones (BLAKE2b digests, so every index insert lands at a random
place). The process CPU time of each block of ``--block`` events gives its rate; the
first block, on an empty ledger, is the baseline of the same run. At the end it reports
the ledger's bytes per event on disk, split by table and index (SQLite's ``dbstat``),
with what the dedupe window holds apart, since that part is bounded by the window and
not by the ledger's age.

Prints one JSON object. Usage: ``python benchmarks/ledger_growth.py --events 5000000``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import open_ledger

START_NS = 1_793_577_600 * 10**9  # 2026-11-02 00:00 UTC
SPREAD_NS = 3 * 86_400 * 10**9
TENANTS = 50
MODELS = (("openai", "gpt-4o", "gpt-4o-2024-08-06"), ("anthropic", "claude-sonnet-4-5", None))


def events(start: int, count: int) -> list[UsageEvent]:
    made = []
    for i in range(start, start + count):
        provider, request_model, response_model = MODELS[i % 2]
        input_tokens = 500 + i % 1000
        output_tokens = 100 + i % 400
        made.append(
            UsageEvent(
                event_id=hashlib.blake2b(i.to_bytes(8, "big"), digest_size=16).hexdigest(),
                event_time_ns=START_NS + (i * 7_919_000_003) % SPREAD_NS,
                provider=provider,
                operation="chat",
                tenant_id=f"tenant-{i % TENANTS}",
                project_id=f"project-{i % 20}",
                feature=("search", "chat", "summarize")[i % 3],
                environment="prod",
                service_name="api",
                request_model=request_model,
                response_model=response_model,
                response_id=f"chatcmpl-{i:024x}",
                trace_id=f"{i * 2_654_435_761 % 2**128:032x}",
                span_id=f"{i:016x}",
                input_tokens=input_tokens,
                cache_read_input_tokens=i % 300,
                output_tokens=output_tokens,
                reasoning_output_tokens=i % 50,
                total_tokens=input_tokens + output_tokens,
                cost=Decimal(input_tokens).scaleb(-8),
                currency="USD",
                price_source="genai-prices",
                duration_s=0.5 + (i % 100) / 100,
                attempt=0,
                collector_id="bench",
            )
        )
    return made


def sizes(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {
            str(name): int(size)
            for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="events per commit")
    parser.add_argument("--block", type=int, default=250_000, help="events per measured block")
    parser.add_argument("--dir", help="where the ledger goes (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tollmeter-bench-", dir=args.dir) as tmp:
        path = Path(tmp) / "ledger.db"
        blocks = []
        with open_ledger(f"sqlite:///{path}") as ledger:
            for start in range(0, args.events, args.block):
                count = min(args.block, args.events - start)
                cpu = 0.0
                for offset in range(0, count, args.batch):
                    batch = events(start + offset, min(args.batch, count - offset))
                    began = time.process_time()
                    ledger.append(batch)
                    cpu += time.process_time() - began
                blocks.append(
                    {"ledger_events": start + count, "events_per_cpu_s": round(count / cpu)}
                )
        by_table = sizes(path)
        on_disk = path.stat().st_size + sum(
            p.stat().st_size for p in path.parent.glob("ledger.db-*")
        )
    dedupe = by_table.get("dedupe_keys", 0) + by_table.get("dedupe_keys_seen", 0)
    first, last = blocks[0]["events_per_cpu_s"], blocks[-1]["events_per_cpu_s"]
    report = {
        "benchmark": "ledger_growth",
        "events": args.events,
        "batch": args.batch,
        "blocks": blocks,
        "ratio_last_block_vs_first": round(last / first, 3),
        "bytes_per_event": round(on_disk / args.events, 1),
        "bytes_per_event_without_dedupe_window": round((on_disk - dedupe) / args.events, 1),
        "bytes_per_event_by_table": {
            name: round(size / args.events, 1)
            for name, size in sorted(by_table.items(), key=lambda item: -item[1])
            if size / args.events >= 1
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
