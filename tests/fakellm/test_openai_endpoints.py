"""/v1/responses, /v1/embeddings, /v1/completions and /v1/models with the real openai SDK."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct

import httpx
import openai
import pydantic

RESPONSE_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
FUNCTION_TOOL = {
    "type": "function",
    "name": "add",
    "description": "Add two numbers",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    },
    "strict": True,
}


def _responses_prompt(recount, instructions: str | None, text: str) -> int:
    messages = [{"role": "user", "content": text}]
    if instructions:
        messages.insert(0, {"role": "developer", "content": instructions})
    return recount.chat_prompt(messages)


def test_responses_non_streamed(oai, fake_llm, recount):
    response = oai.responses.create(model="gpt-4.1", instructions="Be kind.", input="Hello there")
    usage = response.usage
    assert response.status == "completed"
    assert usage.input_tokens == _responses_prompt(recount, "Be kind.", "Hello there")
    assert usage.output_tokens == recount.tokens(response.output_text)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert fake_llm.find(response.id).usage.output_tokens == usage.output_tokens


def test_responses_stream_has_the_full_event_sequence(oai, recount):
    events = list(oai.responses.create(model="gpt-4.1", input="Hello there", stream=True))
    kinds = [event.type for event in events]
    deduplicated = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
    assert deduplicated == RESPONSE_EVENTS
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    completed = events[-1].response
    assert completed.output_text == text
    assert completed.usage.output_tokens == recount.tokens(text)
    assert events[0].response.usage is None


def test_responses_stream_helper_and_reasoning(oai, recount):
    with oai.responses.stream(model="o3", input="Think about it") as stream:
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["reasoning", "message"]
    reasoning = final.usage.output_tokens_details.reasoning_tokens
    assert reasoning > 0
    assert final.usage.output_tokens == recount.tokens(final.output_text) + reasoning


def test_responses_function_call_streamed_and_not(oai):
    response = oai.responses.create(model="gpt-4.1", input="Add 1 and 2", tools=[FUNCTION_TOOL])
    (call,) = response.output
    assert call.type == "function_call"
    assert set(json.loads(call.arguments)) == {"a", "b"}
    events = list(
        oai.responses.create(
            model="gpt-4.1", input="Add 1 and 2", tools=[FUNCTION_TOOL], stream=True
        )
    )
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    assert json.loads(arguments).keys() == {"a", "b"}
    follow_up = [
        {"role": "user", "content": "Add 1 and 2"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "3"},
    ]
    answer = oai.responses.create(model="gpt-4.1", input=follow_up, tools=[FUNCTION_TOOL])
    assert answer.output_text
    forced = oai.responses.create(
        model="gpt-4.1",
        input=follow_up,
        tools=[FUNCTION_TOOL],
        tool_choice={"type": "function", "name": "add"},
    )
    assert forced.output[0].type == "function_call"


def test_responses_max_output_tokens_is_incomplete(oai):
    response = oai.responses.create(model="gpt-4.1", input="Hello", max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.usage.output_tokens == 16


class Person(pydantic.BaseModel):
    name: str
    age: int


def test_responses_parse_structured_output(oai):
    response = oai.responses.parse(model="gpt-4.1", input="Someone?", text_format=Person)
    assert isinstance(response.output_parsed, Person)


def test_responses_prompt_cache(oai, recount):
    text = recount.long_text("responses-cache")
    first = oai.responses.create(model="gpt-4.1-mini", input=text)
    second = oai.responses.create(model="gpt-4.1-mini", input=text)
    assert first.usage.input_tokens_details.cached_tokens == 0
    assert second.usage.input_tokens_details.cached_tokens >= 1024


def test_embeddings_float_and_base64(oai, fake_llm, recount):
    texts = ["the quick brown fox", "jumps over the lazy dog"]
    # The SDK asks for base64 unless told otherwise, and decodes it.
    decoded = oai.embeddings.create(model="text-embedding-3-small", input=texts)
    assert decoded.usage.prompt_tokens == sum(recount.tokens(t, "cl100k_base") for t in texts)
    assert decoded.usage.total_tokens == decoded.usage.prompt_tokens
    plain = oai.embeddings.create(
        model="text-embedding-3-small", input=texts, encoding_format="float", dimensions=64
    )
    assert [len(item.embedding) for item in plain.data] == [64, 64]
    assert math.isclose(sum(v * v for v in plain.data[0].embedding), 1.0, rel_tol=1e-9)
    assert len(decoded.data[1].embedding) == 1536
    raw = httpx.post(
        f"{fake_llm.url}/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": texts[0], "encoding_format": "base64"},
        timeout=10,
    ).json()
    vector = struct.unpack("<1536f", base64.b64decode(raw["data"][0]["embedding"]))
    assert math.isclose(vector[0], decoded.data[0].embedding[0], rel_tol=1e-6)


def test_embeddings_of_token_ids(oai):
    response = oai.embeddings.create(model="text-embedding-3-large", input=[[1, 2, 3], [4, 5]])
    assert response.usage.prompt_tokens == 5
    assert len(response.data[0].embedding) == 3072


def test_legacy_completions(oai, recount):
    completion = oai.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=["Say hi", "Say bye"], max_tokens=32
    )
    assert len(completion.choices) == 2
    assert completion.usage.prompt_tokens == recount.tokens("Say hi", "cl100k_base") * 2
    assert completion.usage.completion_tokens == sum(
        recount.tokens(c.text, "cl100k_base") for c in completion.choices
    )
    legacy = oai.completions.create(model="text-davinci-003", prompt="Say hi", max_tokens=8)
    assert legacy.usage.prompt_tokens == recount.tokens("Say hi", "p50k_base")
    assert legacy.usage.completion_tokens == 8
    assert legacy.choices[0].finish_reason == "length"


def test_legacy_completions_stream(oai, recount):
    chunks = list(
        oai.completions.create(
            model="davinci-002",
            prompt="Say hi",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == recount.tokens(text, "cl100k_base")


def test_models_in_both_formats(oai, claude):
    assert "gpt-4o-mini" in {model.id for model in oai.models.list()}
    assert "claude-sonnet-4-6" in {model.id for model in claude.models.list()}


def test_async_responses_embeddings_and_completions(fake_llm):
    async def main() -> None:
        async with openai.AsyncOpenAI(
            base_url=f"{fake_llm.url}/v1", api_key="test-key", max_retries=0
        ) as client:
            stream = await client.responses.create(model="gpt-4.1", input="Hi", stream=True)
            kinds = [event.type async for event in stream]
            assert kinds[-1] == "response.completed"
            embedding = await client.embeddings.create(model="text-embedding-3-small", input="x")
            assert embedding.usage.prompt_tokens == 1
            legacy = await client.completions.create(
                model="gpt-3.5-turbo-instruct",
                prompt="Say hi",
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in legacy]
            assert chunks[-1].usage.prompt_tokens == 2

    asyncio.run(main())


def test_azure_deployment_routes(fake_llm) -> None:
    with openai.AzureOpenAI(
        azure_endpoint=fake_llm.url, api_version="2024-10-21", api_key="k", max_retries=0
    ) as azure:
        # Without ``azure_deployment`` the SDK names the deployment after the model argument.
        reply = azure.embeddings.create(model="text-embedding-3-small", input="tides")
    assert reply.usage.prompt_tokens > 0
    assert fake_llm.last().endpoint == "/openai/deployments/{deployment}/embeddings"
    # A body without ``model`` is answered by the model named like the deployment.
    raw = httpx.post(
        f"{fake_llm.url}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
        json={"messages": [{"role": "user", "content": "Hello"}]},
        timeout=10,
    )
    assert raw.status_code == 200, raw.text
    assert raw.json()["model"] == "gpt-4o-mini"
    assert raw.json()["usage"]["prompt_tokens"] > 0
