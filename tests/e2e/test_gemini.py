"""Gemini calls end to end: an app using ``google-genai`` against the fake LLM server, set up
with ``tollmeter.configure()``, reporting to a real ``tollmeter collector`` process whose
ledger must hold every request once, with the server's counts, priced from genai-prices (or
marked unpriced with the reason for a model no price list knows)."""

from __future__ import annotations

from typing import Any

APP = """
import json, os
from google import genai
from google.genai import types
from tollmeter.instrumentation import attribute, configure

handle = configure(
    service_name="gemini-app", endpoint=os.environ["COLLECTOR"], protocol="http/protobuf"
)
assert "google_genai" in handle.instrumented, handle.instrumented
client = genai.Client(
    api_key="test-key", http_options=types.HttpOptions(base_url=os.environ["FAKE_LLM_URL"])
)
prompt = "Write two sentences about tides."
with attribute(tenant="tenant-gemini"):
    made = client.models.generate_content(model="gemini-2.5-flash", contents=prompt)
    stream = client.models.generate_content_stream(model="gemini-2.5-flash", contents=prompt)
    streamed = list(stream)
    client.models.embed_content(model="gemini-embedding-001", contents=["tides", "the moon"])
    unknown = client.models.generate_content(model="gemini-test-unlisted", contents=prompt)
assert handle.force_flush(10)
handle.shutdown()
print(json.dumps([made.response_id, streamed[-1].response_id, unknown.response_id]))
"""


def test_gemini_calls_are_metered_and_priced_in_the_ledger(
    collector_process: Any, fake_llm: Any, run_app: Any
) -> None:
    collector = collector_process()
    made, streamed, unknown = run_app(
        APP, COLLECTOR=collector.http_endpoint, FAKE_LLM_URL=fake_llm.url
    )
    events = collector.wait_for_events(4)
    assert len(events) == 4, events
    by_id = {event["response_id"]: event for event in events}
    for response_id in (made, streamed):
        event, truth = by_id[response_id], fake_llm.find(response_id)
        assert event["provider"] == "gcp.gen_ai"
        assert event["operation"] == "generate_content"
        assert event["tenant_id"] == "tenant-gemini"
        assert event["usage_source"] == "provider"
        assert event["input_tokens"] == truth.usage.input_tokens
        assert event["output_tokens"] == truth.usage.output_tokens
        assert event["reasoning_output_tokens"] == truth.usage.reasoning_tokens > 0
        assert event["response_model"] == "gemini-2.5-flash"
        assert float(event["cost"] or 0) > 0
        assert "(google/gemini-2.5-flash," in event["price_source"]
    (embedding,) = [e for e in events if e["operation"] == "embeddings"]
    assert embedding["input_tokens"] > 0
    assert embedding["output_tokens"] == 0
    assert "(google/gemini-embedding-001," in embedding["price_source"]
    assert float(embedding["cost"]) > 0
    unlisted = by_id[unknown]
    assert unlisted["cost"] is None
    assert unlisted["price_source"].startswith("unpriced:"), unlisted["price_source"]
