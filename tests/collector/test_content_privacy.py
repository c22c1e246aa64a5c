"""Message content that reaches the collector is never stored: not in the ledger, the events
API or the Parquet export, whichever instrumentation's names carry it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace.export import SpanExportResult

SECRET = "zebra-quartz-7731"

# Content as the GenAI conventions (tollmeter and openai-v2), OpenLLMetry and OpenInference
# put it on spans, each holding the marker.
CONTENT: dict[str, Any] = {
    "gen_ai.input.messages": json.dumps(
        [{"role": "user", "parts": [{"type": "text", "content": SECRET}]}]
    ),
    "gen_ai.output.messages": json.dumps(
        [{"role": "assistant", "parts": [{"type": "text", "content": SECRET}]}]
    ),
    "gen_ai.system_instructions": json.dumps([{"type": "text", "content": SECRET}]),
    "gen_ai.prompt": SECRET,
    "gen_ai.completion": SECRET,
    "gen_ai.prompt.0.role": "user",
    "gen_ai.prompt.0.content": SECRET,
    "gen_ai.completion.0.content": SECRET,
    "llm.input_messages.0.message.content": SECRET,
    "llm.output_messages.0.message.content": SECRET,
    "llm.prompts": [SECRET],
    "input.value": SECRET,
    "output.value": SECRET,
}


def _send(exporter: Any, spans: list[Any]) -> None:
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def _bytes_under(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file())


def test_content_never_reaches_ledger_events_or_parquet(
    collector_factory: Any, make_spans: Any, tmp_path: Path
) -> None:
    export_dir = tmp_path / "parquet"
    running = collector_factory(export={"directory": str(export_dir), "interval": "1h"})
    _send(
        GrpcSpanExporter(endpoint=running.grpc_endpoint, insecure=True),
        make_spans(3, tenant="acme", id_prefix="grpc", extra=CONTENT),
    )
    _send(
        HttpSpanExporter(endpoint=f"{running.http_endpoint}/v1/traces"),
        make_spans(2, tenant="acme", id_prefix="http", extra=CONTENT),
    )

    stored = running.events()
    assert len(stored) == 5
    assert SECRET not in repr(stored)
    answer = httpx.get(f"{running.management_url}/api/v1/events?limit=100", timeout=10)
    assert len(answer.json()["events"]) == 5
    assert SECRET not in answer.text
    exported = httpx.post(f"{running.management_url}/api/v1/export", timeout=60).json()
    assert exported["events"] == 5
    table = pq.read_table(export_dir)
    assert table.num_rows == 5
    assert SECRET not in json.dumps(table.to_pylist(), default=str)
    assert SECRET.encode() not in _bytes_under(export_dir)
    # The ledger's own files, write-ahead log included: nothing kept anywhere on disk.
    assert SECRET.encode() not in _bytes_under(Path(running.config.data_dir))
