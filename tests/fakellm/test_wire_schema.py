"""Every body and event the server sends validates strictly against the SDKs' own types.

The SDKs build their objects without validation, so a missing required field would go
unnoticed in the other tests; here each payload is checked with pydantic directly.
"""

from __future__ import annotations

import json

import httpx
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent

CHAT = {"model": "o4-mini", "messages": [{"role": "user", "content": "Hi"}]}
TOOL = {
    "type": "function",
    "function": {
        "name": "f",
        "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
    },
}
RESPONSES = {"model": "o3", "input": "Hi", "instructions": "Be brief."}
RESPONSES_TOOL = {"type": "function", "name": "f", "parameters": TOOL["function"]["parameters"]}
CLAUDE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 256,
    "messages": [{"role": "user", "content": "Hi"}],
    "thinking": {"type": "enabled", "budget_tokens": 128},
}
CLAUDE_TOOL = {"name": "f", "input_schema": TOOL["function"]["parameters"]}


def _post(fake_llm, path: str, body: dict) -> httpx.Response:
    response = httpx.post(f"{fake_llm.url}{path}", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response


def _events(response: httpx.Response) -> list[tuple[str | None, object]]:
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        data = lines["data"]
        events.append((lines.get("event"), data if data == "[DONE]" else json.loads(data)))
    return events


@pytest.mark.parametrize(
    "body",
    [CHAT, {**CHAT, "n": 2}, {**CHAT, "tools": [TOOL]}, {**CHAT, "max_completion_tokens": 3}],
)
def test_chat_completion_bodies_and_chunks(fake_llm, body):
    ChatCompletion.model_validate(_post(fake_llm, "/v1/chat/completions", body).json())
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    *chunks, done = _events(_post(fake_llm, "/v1/chat/completions", stream))
    assert done == (None, "[DONE]")
    for _, chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)


@pytest.mark.parametrize(
    "body",
    [RESPONSES, {**RESPONSES, "tools": [RESPONSES_TOOL]}, {**RESPONSES, "max_output_tokens": 5}],
)
def test_responses_bodies_and_events(fake_llm, body):
    Response.model_validate(_post(fake_llm, "/v1/responses", body).json())
    adapter = pydantic.TypeAdapter(ResponseStreamEvent)
    for name, event in _events(_post(fake_llm, "/v1/responses", {**body, "stream": True})):
        assert name == event["type"]
        adapter.validate_python(event)


@pytest.mark.parametrize("body", [CLAUDE, {**CLAUDE, "tools": [CLAUDE_TOOL]}])
def test_anthropic_messages_and_events(fake_llm, body):
    Message.model_validate(_post(fake_llm, "/v1/messages", body).json())
    adapter = pydantic.TypeAdapter(RawMessageStreamEvent)
    for name, event in _events(_post(fake_llm, "/v1/messages", {**body, "stream": True})):
        assert name == event["type"]
        if name != "ping":
            adapter.validate_python(event)


def test_legacy_completions_and_embeddings(fake_llm):
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Hi"}
    Completion.model_validate(_post(fake_llm, "/v1/completions", body).json())
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    for _, chunk in _events(_post(fake_llm, "/v1/completions", stream))[:-1]:
        # The SDK's type has no None finish_reason, though the API streams one until the end.
        choices = [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in chunk["choices"]]
        Completion.model_validate({**chunk, "choices": choices})
    embeddings = {"model": "text-embedding-3-small", "input": ["a", "b"]}
    CreateEmbeddingResponse.model_validate(_post(fake_llm, "/v1/embeddings", embeddings).json())
