"""Every metered call, sync and async, streamed or not: one span per request with true usage."""

from __future__ import annotations

from typing import Any

import pytest
from google import genai
from google.genai import types
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from tollmeter.instrumentation import attribute
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv import metrics

THINKING_MODEL = "gemini-2.5-flash"
PLAIN_MODEL = "gemini-2.0-flash"
EMBEDDING_MODEL = "gemini-embedding-001"
PROMPT = "Write a few sentences about foxes in an autumn forest."
MODES = ["sync", "async"]
GENERATE = ["generate_content", "generate_content_stream"]


def _assert_usage(values: dict[str, Any], truth: Any) -> None:
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == truth.usage.input_tokens
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == truth.usage.output_tokens
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "provider"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", GENERATE)
def test_generate_is_one_span_with_the_reported_usage(
    client: genai.Client,
    fake_llm: Any,
    call: Any,
    wait_spans: Any,
    mode: str,
    method: str,
) -> None:
    responses = call(client, mode, method, model=THINKING_MODEL, contents=PROMPT)
    (span,) = wait_spans(1)
    values = dict(span.attributes or {})
    truth = fake_llm.find(responses[-1].response_id)
    assert span.name == f"generate_content {THINKING_MODEL}"
    assert span.kind is SpanKind.CLIENT
    assert values[attrs.GEN_AI_OPERATION_NAME] == "generate_content"
    assert values[attrs.GEN_AI_PROVIDER_NAME] == "gcp.gen_ai"
    assert values[attrs.GEN_AI_REQUEST_MODEL] == THINKING_MODEL
    assert values[attrs.GEN_AI_RESPONSE_MODEL] == THINKING_MODEL
    assert values[attrs.GEN_AI_RESPONSE_ID] == truth.response_id
    assert values[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert values[attrs.SERVER_ADDRESS] == "127.0.0.1"
    assert values[attrs.SERVER_PORT] == fake_llm.port
    assert values.get(attrs.GEN_AI_REQUEST_STREAM, False) is (method == GENERATE[1])
    _assert_usage(values, truth)
    # Thinking is output (OpenTelemetry's convention) though Gemini counts it apart.
    assert values[attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == truth.usage.reasoning_tokens > 0
    usage = responses[-1].usage_metadata
    assert truth.usage.output_tokens == usage.candidates_token_count + usage.thoughts_token_count


@pytest.mark.parametrize("mode", MODES)
def test_embeddings_are_one_span_with_the_reported_usage(
    client: genai.Client, fake_llm: Any, call: Any, one_span: Any, mode: str
) -> None:
    (response,) = call(
        client, mode, "embed_content", model=EMBEDDING_MODEL, contents=["foxes", PROMPT]
    )
    assert len(response.embeddings) == 2
    values = one_span()
    truth = fake_llm.last()
    assert truth.endpoint.endswith(":batchEmbedContents")
    assert values[attrs.GEN_AI_OPERATION_NAME] == "embeddings"
    assert values[attrs.GEN_AI_REQUEST_MODEL] == EMBEDDING_MODEL
    _assert_usage(values, truth)
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", [*GENERATE, "embed_content"])
def test_missing_usage_is_estimated_within_ten_percent(
    client: genai.Client,
    fake_llm: Any,
    call: Any,
    one_span: Any,
    faults: Any,
    mode: str,
    method: str,
) -> None:
    embed = method == "embed_content"
    options = faults("no-usage")
    call(
        client,
        mode,
        method,
        model=EMBEDDING_MODEL if embed else PLAIN_MODEL,
        contents=[PROMPT, "and a short second part"],
        config=(types.EmbedContentConfig if embed else types.GenerateContentConfig)(
            http_options=options
        ),
    )
    values = one_span()
    truth = fake_llm.last()
    assert truth.provider_usage is None
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    for name, true_count in (
        (attrs.GEN_AI_USAGE_INPUT_TOKENS, truth.usage.input_tokens),
        (attrs.GEN_AI_USAGE_OUTPUT_TOKENS, truth.usage.output_tokens),
    ):
        assert abs(values[name] - true_count) <= 0.1 * true_count, (name, values[name], true_count)


def test_implicitly_cached_prompt_reports_cache_reads(
    client: genai.Client, fake_llm: Any, wait_spans: Any
) -> None:
    # Unique to this test: the fake server's prompt cache lives as long as the session.
    long_prompt = "cache test: " + " ".join(["the cat sat on the warm mat by the door"] * 150)
    first = client.models.generate_content(model=PLAIN_MODEL, contents=long_prompt)
    second = client.models.generate_content(model=PLAIN_MODEL, contents=long_prompt)
    spans = wait_spans(2)
    by_id = {dict(s.attributes or {})[attrs.GEN_AI_RESPONSE_ID]: s for s in spans}
    truth = fake_llm.find(second.response_id)
    assert truth.usage.cache_read_tokens > 0
    values = dict(by_id[second.response_id].attributes or {})
    _assert_usage(values, truth)
    assert values[attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == truth.usage.cache_read_tokens
    # Gemini's prompt count includes the cached part, as OpenTelemetry's input does.
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == second.usage_metadata.prompt_token_count
    first_values = dict(by_id[first.response_id].attributes or {})
    assert attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS not in first_values


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.mark.parametrize("mode", MODES)
def test_automatic_function_calling_meters_every_request(
    client: genai.Client, fake_llm: Any, call: Any, wait_spans: Any, mode: str
) -> None:
    before = len(fake_llm.requests())
    (response,) = call(
        client,
        mode,
        "generate_content",
        model=PLAIN_MODEL,
        contents="What is the weather in Paris?",
        config=types.GenerateContentConfig(tools=[get_weather]),
    )
    sent = fake_llm.requests()[before:]
    # The model asked for the function, the SDK ran it and sent its result back.
    assert len(sent) == 2
    assert response.automatic_function_calling_history
    spans: tuple[ReadableSpan, ...] = wait_spans(2)
    assert len(spans) == 2
    for span in spans:
        values = dict(span.attributes or {})
        _assert_usage(values, fake_llm.find(values[attrs.GEN_AI_RESPONSE_ID]))
    # The SDK's response reports the last request only; the spans add up to both.
    metered = sum(dict(s.attributes or {})[attrs.GEN_AI_USAGE_INPUT_TOKENS] for s in spans)
    assert metered == sum(e.usage.input_tokens for e in sent)
    assert metered > response.usage_metadata.prompt_token_count


def test_chat_sessions_are_metered(client: genai.Client, fake_llm: Any, wait_spans: Any) -> None:
    chat = client.chats.create(model=PLAIN_MODEL)
    chat.send_message("Hello there")
    reply = chat.send_message("Tell me more")
    spans = wait_spans(2)
    assert len(spans) == 2
    last = dict(spans[-1].attributes or {})
    assert last[attrs.GEN_AI_RESPONSE_ID] == reply.response_id
    # The second request carries the history, so its prompt is the longer one.
    _assert_usage(last, fake_llm.find(reply.response_id))


def test_attribution_and_metrics(client: genai.Client, one_span: Any, points: Any) -> None:
    with attribute(tenant="acme", feature="gemini-test"):
        response = client.models.generate_content(model=PLAIN_MODEL, contents=PROMPT)
    values = one_span()
    assert values[attrs.TOLLMETER_TENANT_ID] == "acme"
    assert values[attrs.TOLLMETER_FEATURE] == "gemini-test"
    usage = response.usage_metadata
    recorded = {
        dict(p.attributes)[attrs.GEN_AI_TOKEN_TYPE]: p.sum
        for p in points(metrics.GEN_AI_CLIENT_TOKEN_USAGE)
    }
    assert recorded == {
        "input": usage.prompt_token_count,
        "output": usage.candidates_token_count,
    }
    (duration,) = points(metrics.GEN_AI_CLIENT_OPERATION_DURATION)
    assert dict(duration.attributes)[attrs.GEN_AI_PROVIDER_NAME] == "gcp.gen_ai"


@pytest.mark.parametrize("method", GENERATE)
def test_vertex_ai_client_is_its_own_provider(
    fake_llm: Any, instrumentor: Any, call: Any, one_span: Any, method: str
) -> None:
    options = types.HttpOptions(base_url=fake_llm.url)
    with genai.Client(vertexai=True, api_key="test-key", http_options=options) as vertex:
        responses = call(vertex, "sync", method, model=PLAIN_MODEL, contents=PROMPT)
    values = one_span()
    assert values[attrs.GEN_AI_PROVIDER_NAME] == "gcp.vertex_ai"
    # The SDK sends "publishers/google/models/...": the model is still named by its id.
    assert values[attrs.GEN_AI_REQUEST_MODEL] == PLAIN_MODEL
    _assert_usage(values, fake_llm.find(responses[-1].response_id))
