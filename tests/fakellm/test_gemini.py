"""The Gemini API routes: bodies valid for ``google.genai.types``, counts that match a recount.

``google.genai.types`` forbid unknown fields and accept the wire's camelCase names, so
validating a raw body with them catches a misspelt or invented field as well as a missing
one; the SDK itself builds its objects without that check.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types

from tollmeter.fakellm import FakeLLMServer

PLAIN = "gemini-2.0-flash"
THINKING = "gemini-2.5-flash"
TEXT = "Write a few sentences about a lighthouse keeper."
BODY = {"contents": [{"role": "user", "parts": [{"text": TEXT}]}]}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
}


def _url(fake_llm: FakeLLMServer, model: str, method: str, version: str = "v1beta") -> str:
    return f"{fake_llm.url}/{version}/models/{model}:{method}"


def _post(url: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(url, json=body, headers=headers, timeout=10)


def _sse(response: httpx.Response) -> list[dict[str, Any]]:
    blocks = [block for block in response.text.split("\n\n") if block.strip()]
    return [json.loads(block.removeprefix("data: ")) for block in blocks]


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        (PLAIN, {}),
        (THINKING, {"generationConfig": {"thinkingConfig": {"includeThoughts": True}}}),
        (PLAIN, {"tools": [{"functionDeclarations": [WEATHER]}]}),
        (PLAIN, {"generationConfig": {"maxOutputTokens": 3}}),
    ],
    ids=["plain", "thoughts", "function-call", "truncated"],
)
def test_replies_and_chunks_validate_against_the_sdk_types(
    fake_llm: FakeLLMServer, model: str, extra: dict[str, Any]
) -> None:
    body = {**BODY, **extra}
    reply = _post(_url(fake_llm, model, "generateContent"), body)
    assert reply.status_code == 200, reply.text
    whole = types.GenerateContentResponse.model_validate(reply.json())
    stream = _post(_url(fake_llm, model, "streamGenerateContent") + "?alt=sse", body)
    assert stream.status_code == 200, stream.text
    assert stream.headers["content-type"].startswith("text/event-stream")
    chunks = [types.GenerateContentResponse.model_validate(c) for c in _sse(stream)]
    assert chunks[-1].usage_metadata == whole.usage_metadata
    assert chunks[-1].candidates[0].finish_reason == whole.candidates[0].finish_reason
    # Cumulative: each chunk's output count is at least the one before.
    outputs = [c.usage_metadata.candidates_token_count for c in chunks]
    assert outputs == sorted(outputs)


def test_batch_embeddings_validate_against_the_sdk_types(fake_llm: FakeLLMServer) -> None:
    model = "models/gemini-embedding-001"
    body = {
        "requests": [
            {"model": model, "content": {"parts": [{"text": "one"}]}},
            {"model": model, "content": {"parts": [{"text": TEXT}]}, "outputDimensionality": 8},
        ]
    }
    reply = _post(_url(fake_llm, "gemini-embedding-001", "batchEmbedContents"), body)
    assert reply.status_code == 200, reply.text
    parsed = types.EmbedContentResponse.model_validate(reply.json())
    assert [len(e.values) for e in parsed.embeddings] == [768, 8]


def test_errors_are_raised_by_the_sdk_as_its_own(fake_llm: FakeLLMServer) -> None:
    options = types.HttpOptions(base_url=fake_llm.url, headers={"x-fake-fault": "429"})
    with (
        genai.Client(api_key="test-key", http_options=options) as client,
        pytest.raises(errors.ClientError) as caught,
    ):
        client.models.generate_content(model=PLAIN, contents=TEXT)
    assert caught.value.code == 429
    assert caught.value.status == "RESOURCE_EXHAUSTED"
    refused = _post(_url(fake_llm, PLAIN, "generateContent"), {"contents": []})
    assert refused.status_code == 400
    assert refused.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.fixture
def client(fake_llm: FakeLLMServer) -> Any:
    with genai.Client(
        api_key="test-key", http_options=types.HttpOptions(base_url=fake_llm.url)
    ) as made:
        yield made


def test_prompt_count_is_the_text_of_system_contents_and_tools(
    client: genai.Client, fake_llm: FakeLLMServer, recount: Any
) -> None:
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(**WEATHER)])  # type: ignore[arg-type]
    config = types.GenerateContentConfig(
        system_instruction="You are terse.",
        tools=[tool],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.NONE
            )
        ),
    )
    contents = [
        types.Content(role="user", parts=[types.Part(text="Hello")]),
        types.Content(role="model", parts=[types.Part(text="Hi, how can I help?")]),
        types.Content(role="user", parts=[types.Part(text=TEXT)]),
    ]
    response = client.models.generate_content(model=PLAIN, contents=contents, config=config)
    declarations = json.dumps([WEATHER], separators=(",", ":"), sort_keys=True)
    expected = sum(
        recount.tokens(text)
        for text in (declarations, "You are terse.", "Hello", "Hi, how can I help?", TEXT)
    )
    assert response.usage_metadata.prompt_token_count == expected
    visible = recount.tokens(response.text)
    assert response.usage_metadata.candidates_token_count == visible
    truth = fake_llm.find(response.response_id)
    assert (truth.usage.input_tokens, truth.usage.output_tokens) == (expected, visible)


def test_thinking_is_counted_apart_from_the_reply_and_bounded(client: genai.Client) -> None:
    thoughts = types.ThinkingConfig(include_thoughts=True, thinking_budget=40)
    response = client.models.generate_content(
        model=THINKING, contents=TEXT, config=types.GenerateContentConfig(thinking_config=thoughts)
    )
    usage = response.usage_metadata
    assert 0 < usage.thoughts_token_count <= 40
    total = usage.prompt_token_count + usage.candidates_token_count + usage.thoughts_token_count
    assert usage.total_token_count == total
    (thought,) = [p for p in response.candidates[0].content.parts if p.thought]
    assert thought.text
    off = types.ThinkingConfig(thinking_budget=0)
    plain = client.models.generate_content(
        model=THINKING, contents=TEXT, config=types.GenerateContentConfig(thinking_config=off)
    )
    assert plain.usage_metadata.thoughts_token_count is None


def test_output_cap_covers_thoughts_and_reply(client: genai.Client) -> None:
    config = types.GenerateContentConfig(max_output_tokens=40)
    response = client.models.generate_content(model=THINKING, contents=TEXT, config=config)
    usage = response.usage_metadata
    assert usage.candidates_token_count + usage.thoughts_token_count <= 40
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


def test_no_usage_fault_drops_usage_from_every_chunk(
    client: genai.Client, fake_llm: FakeLLMServer
) -> None:
    config = types.GenerateContentConfig(
        http_options=types.HttpOptions(headers={"x-fake-fault": "no-usage"})
    )
    chunks = list(client.models.generate_content_stream(model=PLAIN, contents=TEXT, config=config))
    assert all(chunk.usage_metadata is None for chunk in chunks)
    truth = fake_llm.last()
    assert truth.stream
    assert not truth.reported
    assert truth.usage.output_tokens > 0


def test_api_versions_and_vertex_express_routes(fake_llm: FakeLLMServer) -> None:
    for url in (
        _url(fake_llm, PLAIN, "generateContent", version="v1"),
        f"{fake_llm.url}/v1beta1/publishers/google/models/{PLAIN}:generateContent",
    ):
        reply = _post(url, BODY)
        assert reply.status_code == 200, (url, reply.text)
        types.GenerateContentResponse.model_validate(reply.json())
    missing = _post(f"{fake_llm.url}/v1beta/models/{PLAIN}:countTokens", BODY)
    assert missing.status_code == 404
    assert missing.json()["error"]["status"] == "NOT_FOUND"
