"""/v1/messages against the real anthropic SDK: usage, streams, tools, thinking, caching."""

from __future__ import annotations

import asyncio
import json
import uuid

import anthropic
import httpx

# A name no real model has: the SDK warns when a real one is deprecated; the fake server
# takes any name.
MODEL = "claude-test-large"
MESSAGES = [{"role": "user", "content": "Describe the market in town."}]
TOOL = {
    "name": "lookup",
    "description": "Look a word up",
    "input_schema": {
        "type": "object",
        "properties": {"word": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["word", "limit"],
    },
}


def _text(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_non_streamed_usage_matches_tiktoken(claude, fake_llm, recount):
    raw = claude.messages.with_raw_response.create(
        model=MODEL, max_tokens=256, system="Be brief.", messages=MESSAGES
    )
    message = raw.parse()
    usage = message.usage
    assert usage.input_tokens == recount.claude_prompt(MESSAGES, system="Be brief.")
    assert usage.output_tokens == recount.tokens(_text(message), "cl100k_base")
    assert usage.cache_read_input_tokens == 0
    assert usage.cache_creation_input_tokens == 0
    assert message.stop_reason == "end_turn"
    assert message.model == MODEL
    assert raw.headers["request-id"] == fake_llm.find(message.id).request_id
    assert json.loads(raw.headers["x-fake-usage"])["input_tokens"] == usage.input_tokens


def test_raw_stream_event_sequence(claude, fake_llm, recount):
    events = list(
        claude.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES, stream=True)
    )
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert kinds[1] == "content_block_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert kinds[-3] == "content_block_stop"
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    start, delta = events[0], events[-2]
    assert start.message.usage.input_tokens == recount.claude_prompt(MESSAGES)
    assert delta.usage.output_tokens == recount.tokens(text, "cl100k_base")
    assert delta.delta.stop_reason == "end_turn"
    assert fake_llm.find(start.message.id).reported is True


def test_stream_helper_accumulates_final_usage(claude):
    plain = claude.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES)
    with claude.messages.stream(model=MODEL, max_tokens=256, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert _text(final) == _text(plain)
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


def test_max_tokens_truncates(claude, recount):
    message = claude.messages.create(model=MODEL, max_tokens=4, messages=MESSAGES)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 4 == recount.tokens(_text(message), "cl100k_base")


def test_thinking_block_counts_as_output(claude, recount):
    message = claude.messages.create(
        model=MODEL,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=MESSAGES,
    )
    thinking, text = message.content
    assert thinking.type == "thinking"
    assert thinking.signature
    thought = recount.tokens(thinking.thinking, "cl100k_base")
    visible = recount.tokens(text.text, "cl100k_base")
    assert message.usage.output_tokens == thought + visible
    assert message.usage.output_tokens_details.thinking_tokens == thought


def test_streamed_thinking(claude):
    with claude.messages.stream(
        model=MODEL,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=MESSAGES,
    ) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_message()
    assert {"thinking", "signature", "text"} <= kinds
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].signature


def test_tool_use_then_text_after_the_result(claude):
    first = claude.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES, tools=[TOOL])
    assert first.stop_reason == "tool_use"
    (use,) = first.content
    assert use.type == "tool_use"
    assert use.name == "lookup"
    assert set(use.input) == {"word", "limit"}
    follow_up = [
        *MESSAGES,
        {"role": "assistant", "content": [use.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "found"}],
        },
    ]
    second = claude.messages.create(model=MODEL, max_tokens=256, messages=follow_up, tools=[TOOL])
    assert second.stop_reason == "end_turn"
    assert _text(second)


def test_streamed_tool_use(claude):
    with claude.messages.stream(
        model=MODEL,
        max_tokens=256,
        messages=MESSAGES,
        tools=[TOOL],
        tool_choice={"type": "tool", "name": "lookup"},
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use"
    assert isinstance(final.content[0].input["limit"], int)


def test_cache_write_then_read(claude, recount):
    system = [
        {
            "type": "text",
            "text": recount.long_text(uuid.uuid4().hex),
            "cache_control": {"type": "ephemeral"},
        }
    ]
    cached_tokens = recount.tokens(system[0]["text"], "cl100k_base")
    total = cached_tokens + recount.claude_prompt(MESSAGES)
    first = claude.messages.create(model=MODEL, max_tokens=64, system=system, messages=MESSAGES)
    assert first.usage.cache_creation_input_tokens == cached_tokens
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.input_tokens == total - cached_tokens
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == cached_tokens
    second = claude.messages.create(model=MODEL, max_tokens=64, system=system, messages=MESSAGES)
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.cache_read_input_tokens == cached_tokens
    assert second.usage.input_tokens == total - cached_tokens


def test_cache_extends_to_a_later_breakpoint(claude, recount):
    system = [
        {
            "type": "text",
            "text": recount.long_text(uuid.uuid4().hex),
            "cache_control": {"type": "ephemeral"},
        }
    ]
    prefix = recount.tokens(system[0]["text"], "cl100k_base")
    claude.messages.create(model=MODEL, max_tokens=8, system=system, messages=MESSAGES)
    turn = {"type": "text", "text": "More words here.", "cache_control": {"type": "ephemeral"}}
    longer = [{"role": "user", "content": [turn]}]
    message = claude.messages.create(model=MODEL, max_tokens=8, system=system, messages=longer)
    assert message.usage.cache_read_input_tokens == prefix
    assert message.usage.cache_creation_input_tokens == 3 + recount.tokens(
        turn["text"], "cl100k_base"
    )
    assert message.usage.input_tokens == 0


def test_one_hour_cache_writes_are_reported_apart(claude, recount):
    text = recount.long_text(uuid.uuid4().hex)
    system = [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    message = claude.messages.create(model=MODEL, max_tokens=8, system=system, messages=MESSAGES)
    written = recount.tokens(text, "cl100k_base")
    assert message.usage.cache_creation_input_tokens == written
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == written
    assert message.usage.cache_creation.ephemeral_5m_input_tokens == 0


def test_short_cached_prefixes_are_not_cached(claude):
    system = [{"type": "text", "text": "Short.", "cache_control": {"type": "ephemeral"}}]
    for _ in range(2):
        message = claude.messages.create(
            model=MODEL, max_tokens=8, system=system, messages=MESSAGES
        )
        assert message.usage.cache_creation_input_tokens == 0
        assert message.usage.cache_read_input_tokens == 0


def test_missing_max_tokens_is_a_bad_request(fake_llm):
    response = httpx.post(
        f"{fake_llm.url}/v1/messages",
        json={"model": MODEL, "messages": MESSAGES},
        headers={"anthropic-version": "2023-06-01"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_async_client(fake_llm, recount):
    async def main() -> None:
        async with anthropic.AsyncAnthropic(
            base_url=fake_llm.url, api_key="test-key", max_retries=0
        ) as client:
            message = await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
            async with client.messages.stream(
                model=MODEL, max_tokens=64, messages=MESSAGES
            ) as stream:
                final = await stream.get_final_message()
            assert final.usage.output_tokens == message.usage.output_tokens
            assert message.usage.input_tokens == recount.claude_prompt(MESSAGES)

    asyncio.run(main())
