"""/v1/chat/completions against the real openai SDK, sync and async."""

from __future__ import annotations

import asyncio
import json
import uuid

import openai
import pydantic
import pytest

MODEL = "gpt-4o-mini"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city", "unit", "days"],
        },
    },
}


def _messages(text: str = "Tell me about the river.") -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a helpful guide."},
        {"role": "user", "content": text},
    ]


def test_non_streamed_usage_matches_tiktoken(oai, fake_llm, recount):
    messages = _messages()
    raw = oai.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
    completion = raw.parse()
    usage = completion.usage
    text = completion.choices[0].message.content
    assert usage.prompt_tokens == recount.chat_prompt(messages)
    assert usage.completion_tokens == recount.tokens(text)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL
    header = json.loads(raw.headers["x-fake-usage"])
    assert header["input_tokens"] == usage.prompt_tokens
    assert header["output_tokens"] == usage.completion_tokens
    assert header["reported"] is True
    exchange = fake_llm.find(completion.id)
    assert exchange.request_id == raw.headers["x-request-id"]
    assert exchange.provider_usage == usage.model_dump(exclude_none=True)


def test_replies_are_deterministic_but_ids_unique(oai):
    first = oai.chat.completions.create(model=MODEL, messages=_messages("same"))
    second = oai.chat.completions.create(model=MODEL, messages=_messages("same"))
    other = oai.chat.completions.create(model=MODEL, messages=_messages("different"))
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    assert first.id != second.id


def test_stream_with_include_usage_ends_with_a_usage_chunk(oai, fake_llm, recount):
    messages = _messages()
    stream = oai.chat.completions.create(
        model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    *content_chunks, last = chunks
    assert last.choices == []
    assert all(chunk.usage is None for chunk in content_chunks)
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert last.usage.prompt_tokens == recount.chat_prompt(messages)
    assert last.usage.completion_tokens == recount.tokens(text)
    assert content_chunks[-1].choices[0].finish_reason == "stop"
    assert fake_llm.find(last.id).reported is True


def test_stream_without_include_usage_reports_none(oai, fake_llm, recount):
    chunks = list(oai.chat.completions.create(model=MODEL, messages=_messages(), stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    exchange = fake_llm.find(chunks[0].id)
    assert exchange.reported is False
    assert exchange.provider_usage is None
    assert exchange.usage.output_tokens == recount.tokens(text)


def test_n_choices_are_distinct_and_summed(oai, recount):
    completion = oai.chat.completions.create(model=MODEL, messages=_messages(), n=3)
    texts = [choice.message.content for choice in completion.choices]
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert len(set(texts)) == 3
    assert completion.usage.completion_tokens == sum(recount.tokens(t) for t in texts)


def test_streamed_n_choices(oai, recount):
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=_messages(),
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts = ["", ""]
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
        usage = chunk.usage or usage
    assert usage.completion_tokens == sum(recount.tokens(t) for t in texts)


def test_max_completion_tokens_truncates(oai, recount):
    completion = oai.chat.completions.create(
        model=MODEL, messages=_messages(), max_completion_tokens=5
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    assert recount.tokens(completion.choices[0].message.content) == 5
    uncut = oai.chat.completions.create(model=MODEL, messages=_messages())
    assert uncut.choices[0].message.content.startswith(completion.choices[0].message.content)


def test_reply_length_directive(oai):
    completion = oai.chat.completions.create(
        model=MODEL, messages=_messages(), extra_headers={"x-fake-reply-tokens": "300"}
    )
    assert completion.usage.completion_tokens == 300


def test_reasoning_model_reports_reasoning_tokens(oai, recount):
    completion = oai.chat.completions.create(model="o4-mini", messages=_messages())
    usage = completion.usage
    reasoning = usage.completion_tokens_details.reasoning_tokens
    assert reasoning > 0
    visible = recount.tokens(completion.choices[0].message.content)
    assert usage.completion_tokens == visible + reasoning


def test_reasoning_stays_within_the_output_cap(oai):
    completion = oai.chat.completions.create(
        model="gpt-5-mini", messages=_messages(), max_completion_tokens=40
    )
    assert completion.usage.completion_tokens <= 40
    assert completion.usage.completion_tokens_details.reasoning_tokens > 0


def test_legacy_models_use_cl100k(oai, recount):
    messages = _messages("Counting with an older tokenizer: naïve café façade.")
    completion = oai.chat.completions.create(model="gpt-4", messages=messages)
    assert completion.usage.prompt_tokens == recount.chat_prompt(messages, "cl100k_base")


def test_tool_call_with_schema_valid_arguments(oai):
    completion = oai.chat.completions.create(
        model=MODEL, messages=_messages("Weather in Paris?"), tools=[WEATHER_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city", "unit", "days"}
    assert arguments["unit"] in ("celsius", "fahrenheit")
    assert isinstance(arguments["days"], int)


def test_tool_result_gets_a_text_answer_and_none_disables_tools(oai):
    first = oai.chat.completions.create(
        model=MODEL, messages=_messages("Weather?"), tools=[WEATHER_TOOL]
    )
    call = first.choices[0].message.tool_calls[0]
    follow_up = [
        *_messages("Weather?"),
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = oai.chat.completions.create(model=MODEL, messages=follow_up, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content
    assert second.usage.prompt_tokens > first.usage.prompt_tokens
    disabled = oai.chat.completions.create(
        model=MODEL, messages=_messages(), tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert disabled.choices[0].message.tool_calls is None


def test_streamed_tool_call_through_the_stream_helper(oai):
    with oai.chat.completions.stream(
        model=MODEL,
        messages=_messages("Weather?"),
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream_options={"include_usage": True},
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city", "unit", "days"}
    assert final.usage.completion_tokens > 0


def test_unknown_forced_tool_is_a_bad_request(oai):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(
            model=MODEL,
            messages=_messages(),
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "missing"}},
        )
    assert caught.value.body["param"] == "tool_choice"


class Answer(pydantic.BaseModel):
    city: str
    population: int
    tags: list[str]


def test_parse_with_structured_output(oai):
    completion = oai.chat.completions.parse(
        model=MODEL, messages=_messages("A city?"), response_format=Answer
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Answer)
    assert parsed.tags


def test_prompt_cache_after_the_same_long_prefix(oai, recount):
    messages = [{"role": "user", "content": recount.long_text(uuid.uuid4().hex)}]
    first = oai.chat.completions.create(model=MODEL, messages=messages)
    second = oai.chat.completions.create(model=MODEL, messages=messages)
    prompt = first.usage.prompt_tokens
    assert prompt >= 1152
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached == 1024 + (prompt - 1024) // 128 * 128
    assert cached <= prompt


def test_short_prompts_are_never_cached(oai):
    for _ in range(2):
        completion = oai.chat.completions.create(model=MODEL, messages=_messages())
        assert completion.usage.prompt_tokens_details.cached_tokens == 0


def test_async_client_streamed_and_not(fake_llm, recount):
    async def main() -> None:
        async with openai.AsyncOpenAI(
            base_url=f"{fake_llm.url}/v1", api_key="test-key", max_retries=0
        ) as client:
            plain = await client.chat.completions.create(model=MODEL, messages=_messages())
            assert plain.usage.prompt_tokens == recount.chat_prompt(_messages())
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=_messages(),
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens

    asyncio.run(main())
