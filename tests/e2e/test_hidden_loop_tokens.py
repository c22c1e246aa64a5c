"""Hidden and loop tokens of a workflow, end to end: an app's real OpenAI SDK calls (one
retried, one streamed) against the fake LLM server, through a real collector process, read
back from the usage API (``group_by=workflow``) and from the Parquet export."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb
import httpx
import pyarrow.dataset as ds

from tollmeter.fakellm._tokens import count
from tollmeter.instrumentation._estimate import encoding_name_for_model

SYSTEM = "You are the support agent of a bookshop. Be brief."
TOOL = {
    "type": "function",
    "function": {
        "name": "order_status",
        "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
    },
}

APP = f"""
import json, os
import openai
import tollmeter
from tollmeter.instrumentation import configure

handle = configure(service_name="agent", endpoint=os.environ["COLLECTOR"], protocol="http/protobuf")
client = openai.OpenAI(base_url=os.environ["FAKE_LLM_URL"] + "/v1", api_key="k", max_retries=1)
system = {{"role": "system", "content": {SYSTEM!r}}}
tools = [{TOOL!r}]
ask = {{"role": "user", "content": "Where is order 42?"}}
with tollmeter.attribute(tenant="acme", workflow="ticket-7"):
    client.chat.completions.create(model="gpt-4o-mini", messages=[system, ask], tools=tools)
    # The fake server fails the first attempt: the SDK retries it once.
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[system, ask], tools=tools,
        extra_headers={{"x-fake-fault": "500", "x-fake-fault-attempts": "1"}},
    )
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[system, ask], stream=True,
        stream_options={{"include_usage": True}},
    )
    chunks = sum(1 for _ in stream)
# Another tenant's call outside any workflow: in neither the workflow row nor its loop.
with tollmeter.attribute(tenant="acme"):
    client.chat.completions.create(model="gpt-4o-mini", messages=[ask])
assert handle.force_flush(10)
handle.shutdown()
print(json.dumps({{"chunks": chunks}}))
"""

LOOP_SQL = """
    SELECT workflow_id, count(*) AS calls, sum(hidden_input_tokens) AS hidden,
           sum(total_tokens) FILTER (WHERE n > 1 OR coalesce(attempt, 0) > 0) AS loop_tokens
    FROM (SELECT *, row_number() OVER (
              PARTITION BY tenant_id, workflow_id ORDER BY event_time, sequence) AS n
          FROM read_parquet('{directory}/*/*.parquet', hive_partitioning = true)
          WHERE workflow_id IS NOT NULL)
    GROUP BY workflow_id
"""


def _tiktoken(*texts: str) -> int:
    encoding = encoding_name_for_model("gpt-4o-mini")
    return sum(count(text, encoding) for text in texts)


def test_a_workflow_with_a_retry_and_three_calls(
    collector_process: Any, fake_llm: Any, run_app: Any
) -> None:
    collector = collector_process()
    began = datetime.now(timezone.utc) - timedelta(minutes=1)
    result = run_app(APP, COLLECTOR=collector.http_endpoint, FAKE_LLM_URL=fake_llm.url)
    assert result["chunks"] > 2
    events = sorted(collector.wait_for_events(4), key=lambda e: e["sequence"])
    assert len(events) == 4, events
    first, retried, streamed, alone = events
    assert [e["workflow_id"] for e in events] == ["ticket-7"] * 3 + [None]

    with_tools = _tiktoken(SYSTEM, json.dumps(TOOL, separators=(",", ":"), sort_keys=True))
    assert first["hidden_input_tokens"] == retried["hidden_input_tokens"] == with_tools
    assert streamed["hidden_input_tokens"] == _tiktoken(SYSTEM)
    assert alone["hidden_input_tokens"] is None
    assert (first["attempt"], retried["attempt"], streamed["attempt"]) == (0, 1, 0)
    # Timing for the stream only.
    assert first["time_to_first_token_s"] is None
    assert first["decode_s_per_output_token"] is None
    assert 0 < streamed["time_to_first_token_s"] < streamed["duration_s"]
    assert streamed["decode_s_per_output_token"] > 0

    end = datetime.now(timezone.utc) + timedelta(minutes=1)
    reply = httpx.get(
        f"{collector.management_url}/api/v1/usage",
        params={"group_by": "workflow", "start": began.isoformat(), "end": end.isoformat()},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    (row,) = reply.json()["rows"]
    hidden = 2 * with_tools + _tiktoken(SYSTEM)
    loop = retried["total_tokens"] + streamed["total_tokens"]
    assert (row["tenant"], row["workflow"], row["calls"], row["retries"]) == (
        "acme",
        "ticket-7",
        3,
        1,
    )
    assert (row["hidden_input_tokens"], row["loop_tokens"]) == (hidden, loop)
    assert row["total_tokens"] == sum(e["total_tokens"] for e in (first, retried, streamed))

    unbounded = httpx.get(
        f"{collector.management_url}/api/v1/usage", params={"group_by": "workflow"}, timeout=10
    )
    assert unbounded.status_code == 400
    assert "start and end" in unbounded.json()["error"]

    exported = httpx.post(f"{collector.management_url}/api/v1/export", timeout=60)
    assert exported.status_code == 200, exported.text
    files = sorted(collector.workdir.rglob("*.parquet"))
    (directory,) = {path.parent.parent for path in files}
    table = ds.dataset([str(path) for path in files], format="parquet").to_table()
    rows = {r["event_id"]: r for r in table.to_pylist()}
    for event in events:
        row_ = rows[event["event_id"]]
        assert row_["hidden_input_tokens"] == event["hidden_input_tokens"]
        assert row_["time_to_first_token_s"] == event["time_to_first_token_s"]
        assert row_["decode_s_per_output_token"] == event["decode_s_per_output_token"]
    with duckdb.connect() as con:
        parquet = con.execute(LOOP_SQL.format(directory=directory)).fetchall()
    assert parquet == [("ticket-7", 3, hidden, loop)]
