"""The provider behind an ``openai`` client: Azure OpenAI with its deployments, OpenAI-compatible
services told by their host, and the overrides for hosts nobody knows.

Every call goes over real HTTP to the fake LLM server. For a service's own host, the client's
``http_client`` sends the request to the fake server instead, so that the SDK, the span and
``server.address`` all see the service's URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tollmeter.instrumentation.openai import OpenAIInstrumentor
from tollmeter.instrumentation.openai.providers import TOLLMETER_OPENAI_PROVIDER_HOSTS
from tollmeter.semconv import attributes as attrs

MESSAGES = [{"role": "user", "content": "Write two sentences about lighthouses."}]
API_VERSION = "2024-10-21"

OneSpan = Callable[[], tuple[Any, dict[str, Any]]]


def _to_fake_server(fake_llm: Any) -> Callable[[httpx.Request], None]:
    fake = httpx.URL(fake_llm.url)

    def send_to_fake(request: httpx.Request) -> None:
        # Each service has its own prefix before /chat/completions; the fake serves /v1/...
        path = request.url.raw_path.decode().split("/chat/", 1)[1]
        request.url = fake.copy_with(raw_path=f"/v1/chat/{path}".encode())

    return send_to_fake


@pytest.fixture
def service_client(fake_llm: Any) -> Iterator[Callable[[str], openai.OpenAI]]:
    """``service_client(base_url)``: an OpenAI client for that service, served by the fake."""
    clients: list[openai.OpenAI] = []

    def make(base_url: str) -> openai.OpenAI:
        http = httpx.Client(event_hooks={"request": [_to_fake_server(fake_llm)]})
        client = openai.OpenAI(
            base_url=base_url, api_key="sk-test", max_retries=0, http_client=http
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_azure_client_reports_azure_with_its_deployment_as_request_model(
    instrument: Callable[..., OpenAIInstrumentor], fake_llm: Any, one_span: OneSpan
) -> None:
    instrument()
    with openai.AzureOpenAI(
        azure_endpoint=fake_llm.url,
        azure_deployment="prod-chat",
        api_version=API_VERSION,
        api_key="azure-key",
        max_retries=0,
    ) as client:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    span, values = one_span()
    assert span.name == "chat prod-chat"
    assert values[attrs.GEN_AI_PROVIDER_NAME] == "azure.ai.openai"
    assert values[attrs.GEN_AI_REQUEST_MODEL] == "prod-chat"
    assert values[attrs.GEN_AI_RESPONSE_MODEL] == reply.model == "gpt-4o-mini"
    truth = fake_llm.find(reply.id)
    assert truth.endpoint == "/openai/deployments/{deployment}/chat/completions"
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == truth.usage.input_tokens
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == truth.usage.output_tokens


def test_async_azure_stream_names_the_deployment_through_the_model_argument(
    instrument: Callable[..., OpenAIInstrumentor], fake_llm: Any, one_span: OneSpan
) -> None:
    instrument()

    async def run() -> None:
        async with openai.AsyncAzureOpenAI(
            azure_endpoint=fake_llm.url, api_version=API_VERSION, api_key="k", max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            async for _ in stream:
                pass

    asyncio.run(run())
    _, values = one_span()
    assert values[attrs.GEN_AI_PROVIDER_NAME] == "azure.ai.openai"
    assert values[attrs.GEN_AI_REQUEST_MODEL] == values[attrs.GEN_AI_RESPONSE_MODEL] == "gpt-4o"
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "provider"


@pytest.mark.parametrize(
    ("base_url", "provider"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://api.groq.com/openai/v1", "groq"),
        ("https://api.deepseek.com/v1", "deepseek"),
        ("https://api.mistral.ai/v1", "mistral_ai"),
        ("https://api.x.ai/v1", "x_ai"),
        ("https://api.perplexity.ai", "perplexity"),
        ("https://generativelanguage.googleapis.com/v1beta/openai", "gcp.gemini"),
        ("https://api.together.xyz/v1", "together"),
        ("https://api.fireworks.ai/inference/v1", "fireworks"),
        ("https://openrouter.ai/api/v1", "openrouter"),
        ("https://my-resource.openai.azure.com/openai/v1", "azure.ai.openai"),
        ("http://localhost:8000/v1", "openai"),  # a local vLLM: no way to tell
    ],
)
def test_compatible_services_are_told_by_host(
    instrument: Callable[..., OpenAIInstrumentor],
    service_client: Callable[[str], openai.OpenAI],
    one_span: OneSpan,
    base_url: str,
    provider: str,
) -> None:
    instrument()
    service_client(base_url).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    _, values = one_span()
    assert values[attrs.GEN_AI_PROVIDER_NAME] == provider
    assert values[attrs.SERVER_ADDRESS] == httpx.URL(base_url).host
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] > 0


def test_provider_hosts_name_unknown_hosts(
    instrument: Callable[..., OpenAIInstrumentor],
    service_client: Callable[[str], openai.OpenAI],
    one_span: OneSpan,
) -> None:
    instrument(provider_hosts={"LOCALHOST": "vllm", "api.groq.com": "my_groq"})
    service_client("http://localhost:8000/v1").chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    _, values = one_span()
    assert values[attrs.GEN_AI_PROVIDER_NAME] == "vllm"


def test_the_variable_names_hosts_when_no_option_does(
    instrument: Callable[..., OpenAIInstrumentor],
    service_client: Callable[[str], openai.OpenAI],
    one_span: OneSpan,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(TOLLMETER_OPENAI_PROVIDER_HOSTS, "nonsense, llm.internal = ollama")
    instrument()
    service_client("http://llm.internal:11434/v1").chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    _, values = one_span()
    assert values[attrs.GEN_AI_PROVIDER_NAME] == "ollama"
    assert "ignoring 'nonsense'" in caplog.text


@pytest.mark.parametrize("bad", [["api.groq.com"], {"api.groq.com": ""}, {"": "groq"}])
def test_a_bad_provider_hosts_option_is_refused(
    instrument: Callable[..., OpenAIInstrumentor], bad: object
) -> None:
    with pytest.raises(ValueError, match="provider_hosts"):
        instrument(provider_hosts=bad)
