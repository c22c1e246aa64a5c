"""A collector process killed with SIGKILL mid-ingest: acknowledged spans are all stored, once."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

from tollmeter.collector.storage import UsageQuery, open_ledger

REQUEST_SPANS = 20

# Runs a Pipeline with 8 concurrent senders; prints "<request number>" once each
# ingest_traces call returned (the OTLP acknowledgement). Request r carries response
# ids resp-<r>-0 ... resp-<r>-19.
_INGESTER = """
import asyncio, sys
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from tollmeter.collector._pipeline import Pipeline
from tollmeter.collector.storage import open_ledger

def kv(key, value):
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))

def request(number):
    message = ExportTraceServiceRequest()
    scope = message.resource_spans.add().scope_spans.add()
    for i in range(SPANS):
        scope.spans.append(Span(
            trace_id=(number * 100 + i + 1).to_bytes(16, "big"),
            span_id=(i + 1).to_bytes(8, "big"),
            name="chat",
            start_time_unix_nano=1_773_500_966_000_000_000,
            end_time_unix_nano=1_773_500_967_000_000_000,
            attributes=[
                kv("gen_ai.operation.name", "chat"),
                kv("gen_ai.provider.name", "openai"),
                kv("gen_ai.response.id", f"resp-{number}-{i}"),
                kv("gen_ai.usage.input_tokens", 3),
                kv("gen_ai.usage.output_tokens", 1),
                kv("tollmeter.tenant.id", f"t{number % 3}"),
            ],
        ))
    return message

async def main():
    pipeline = Pipeline(ledger=open_ledger(sys.argv[1]))
    await pipeline.start()
    counter = iter(range(int(sys.argv[2]), 10**9))

    async def sender():
        for number in counter:
            await pipeline.ingest_traces(request(number))
            print(number, flush=True)

    await asyncio.gather(*(sender() for _ in range(8)))

asyncio.run(main())
""".replace("SPANS", str(REQUEST_SPANS))


def _run_and_kill(url: str, first: int, acks: int) -> set[int]:
    child = subprocess.Popen(
        [sys.executable, "-c", _INGESTER, url, str(first)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acked: set[int] = set()
    try:
        while len(acked) < acks:
            line = child.stdout.readline()
            assert line, "the ingester died on its own"
            acked.add(int(line))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    return acked


def test_sigkill_loses_no_acknowledged_span_and_retries_count_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    rng = random.Random(7)
    acked: set[int] = set()
    first = 0
    for _ in range(3):
        acked |= _run_and_kill(url, first, rng.randint(5, 40))
        # The next run resends from the lowest request it cannot be sure of: everything
        # after the highest acknowledged one is retried, as an OTLP exporter would.
        first = max(0, max(acked) - 8)
        with open_ledger(url) as ledger:
            ids = [e.response_id for e in ledger.read_events(0, 1_000_000)]
            assert len(ids) == len(set(ids)), "a span was counted twice"
            stored = set(ids)
            missing = {f"resp-{r}-{i}" for r in acked for i in range(REQUEST_SPANS)} - stored
            assert not missing, f"acknowledged spans lost: {sorted(missing)[:5]}"
            (total,) = ledger.query_usage(UsageQuery())
            assert (total.requests, total.total_tokens) == (len(ids), 4 * len(ids))
