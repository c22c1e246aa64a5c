"""Providers behind the OpenAI SDK, end to end: an app makes calls through ``AzureOpenAI`` and
through OpenAI clients for other services (served by the fake LLM server), with
``tollmeter.configure()``; a real ``tollmeter collector`` process prices each at its own
provider's list price, or marks it unpriced with the reason."""

from __future__ import annotations

from typing import Any

APP = """
import json, os
import httpx, openai
from tollmeter.instrumentation import configure

handle = configure(
    service_name="providers-app",
    endpoint=os.environ["COLLECTOR"],
    protocol="http/protobuf",
    provider_hosts={"llm.internal": "vllm"},
)
fake = httpx.URL(os.environ["FAKE_LLM_URL"])


def to_fake(request):
    path = request.url.raw_path.decode().split("/chat/", 1)[1]
    request.url = fake.copy_with(raw_path=f"/v1/chat/{path}".encode())


def client(base_url):
    http = httpx.Client(event_hooks={"request": [to_fake]})
    return openai.OpenAI(base_url=base_url, api_key="k", max_retries=0, http_client=http)


prompt = [{"role": "user", "content": "Write two sentences about tides."}]
azure = openai.AzureOpenAI(
    azure_endpoint=str(fake), azure_deployment="prod-chat", api_version="2024-10-21",
    api_key="k", max_retries=0,
)
ids = {
    "azure": azure.chat.completions.create(model="gpt-4o-mini", messages=prompt).id,
    "groq": client("https://api.groq.com/openai/v1").chat.completions.create(
        model="llama-3.3-70b-versatile", messages=prompt
    ).id,
    "vllm": client("http://llm.internal:8000/v1").chat.completions.create(
        model="my-finetune", messages=prompt
    ).id,
}
assert handle.force_flush(10)
handle.shutdown()
print(json.dumps(ids))
"""


def test_each_provider_is_priced_at_its_own_prices(
    collector_process: Any, fake_llm: Any, run_app: Any
) -> None:
    collector = collector_process()
    ids = run_app(APP, COLLECTOR=collector.http_endpoint, FAKE_LLM_URL=fake_llm.url)
    events = {event["response_id"]: event for event in collector.wait_for_events(3)}
    assert len(events) == 3, events

    azure = events[ids["azure"]]
    assert azure["provider"] == "azure.ai.openai"
    assert (azure["request_model"], azure["response_model"]) == ("prod-chat", "gpt-4o-mini")
    assert azure["price_source"].startswith("genai-prices"), azure["price_source"]
    assert "(azure/gpt-4o-mini," in azure["price_source"]
    assert float(azure["cost"]) > 0

    groq = events[ids["groq"]]
    assert groq["provider"] == "groq"
    assert "(groq/llama-3.3-70b-versatile," in groq["price_source"]
    assert float(groq["cost"]) > 0

    vllm = events[ids["vllm"]]
    assert vllm["provider"] == "vllm"
    assert vllm["cost"] is None
    assert vllm["price_source"].startswith("unpriced:"), vllm["price_source"]
