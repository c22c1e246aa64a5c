"""Pure extraction: request attributes, usage mapping, hostile and missing fields."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion
from openai.types.completion_usage import CompletionUsage
from openai.types.responses import Response

from tollmeter.instrumentation import estimate_chat_input_tokens
from tollmeter.instrumentation._telemetry import Usage
from tollmeter.instrumentation.openai import extract
from tollmeter.semconv import attributes as attrs

# The SDK's "argument not given" markers: ``NOT_GIVEN`` in every release, ``omit`` (and
# ``not_given``) only in newer ones.
SENTINELS = [
    getattr(openai, name) for name in ("NOT_GIVEN", "not_given", "omit") if hasattr(openai, name)
]


def test_server_attributes_use_default_ports() -> None:
    with openai.OpenAI(api_key="k", base_url="https://api.example.com/v1") as client:
        assert extract.server_attributes(client.chat.completions) == {
            attrs.SERVER_ADDRESS: "api.example.com",
            attrs.SERVER_PORT: 443,
        }
    with openai.OpenAI(api_key="k", base_url="http://10.0.0.7:8080/v1") as client:
        assert extract.server_attributes(client.embeddings) == {
            attrs.SERVER_ADDRESS: "10.0.0.7",
            attrs.SERVER_PORT: 8080,
        }
    assert extract.server_attributes(object()) == {}


def test_request_attributes() -> None:
    assert extract.request_attributes(
        {"stream": True, "max_completion_tokens": 100, "max_tokens": 5}
    ) == {attrs.GEN_AI_REQUEST_STREAM: True, attrs.GEN_AI_REQUEST_MAX_TOKENS: 100}
    assert extract.request_attributes(
        {"max_output_tokens": 64, "conversation": {"id": "conv_1"}}
    ) == {attrs.GEN_AI_REQUEST_MAX_TOKENS: 64, attrs.GEN_AI_CONVERSATION_ID: "conv_1"}
    for sentinel in SENTINELS:
        assert extract.request_attributes(
            {"stream": sentinel, "max_tokens": sentinel, "conversation": "conv_2"}
        ) == {attrs.GEN_AI_CONVERSATION_ID: "conv_2"}
    # Hostile values are dropped, not copied: a bool is not a token limit.
    assert extract.request_attributes({"stream": "yes", "max_tokens": True}) == {}


def test_given_treats_sdk_sentinels_as_absent() -> None:
    for sentinel in SENTINELS:
        assert extract.given(sentinel) is None
    assert extract.given(False) is False
    assert extract.given([]) == []


def test_chat_usage_with_every_detail() -> None:
    usage = CompletionUsage.model_validate(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 300,
            "total_tokens": 2300,
            "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 512},
            "completion_tokens_details": {"reasoning_tokens": 200},
        }
    )
    assert extract.usage_from_completion(usage) == Usage(
        input_tokens=2000,
        output_tokens=300,
        cache_read_input_tokens=1024,
        cache_write_input_tokens=512,
        reasoning_output_tokens=200,
    )
    assert extract.usage_from_completion(None) is None


def test_responses_usage_and_outcome() -> None:
    response = Response.model_validate(
        {
            "id": "resp_1",
            "object": "response",
            "created_at": 1,
            "model": "o3-mini-2025",
            "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "output": [
                {
                    "type": "message",
                    "id": "m1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Hello", "annotations": []}],
                },
                {
                    "type": "function_call",
                    "id": "f1",
                    "call_id": "c1",
                    "name": "lookup",
                    "arguments": '{"q":1}',
                },
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": 50,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 20,
                "output_tokens_details": {"reasoning_tokens": 12},
                "total_tokens": 70,
            },
        }
    )
    outcome = extract.responses_outcome(response)
    assert outcome.usage == Usage(50, 20, 0, 0, 12)
    assert outcome.response_id == "resp_1"
    assert outcome.response_model == "o3-mini-2025"
    assert outcome.finish_reasons == ("max_output_tokens",)
    assert outcome.output_text == 'Hello{"q":1}'


def test_chat_outcome_without_usage_keeps_text_for_the_estimate() -> None:
    completion = ChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "t",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                }
            ],
        }
    )
    outcome = extract.chat_outcome(completion)
    assert outcome.usage is None
    assert outcome.output_text == "f{}"
    assert outcome.finish_reasons == ("tool_calls",)


@pytest.mark.parametrize(
    "hostile",
    [None, {}, {"choices": "not a list", "usage": {"prompt_tokens": "12"}}, 42, "text"],
)
def test_outcomes_tolerate_malformed_responses(hostile: Any) -> None:
    for outcome in (
        extract.chat_outcome(hostile),
        extract.completion_outcome(hostile),
        extract.embedding_outcome(hostile),
        extract.responses_outcome(hostile),
    ):
        assert outcome.usage is None


def test_responses_input_estimate_counts_instructions_items_and_tools() -> None:
    tools = [{"type": "function", "name": "lookup", "parameters": {}}]
    estimate = extract.responses_input_estimate(
        {
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "What is 2+2?"}]},
                {"type": "function_call_output", "call_id": "c", "output": "4"},
            ],
            "tools": tools,
        },
        "gpt-4o",
    )()
    expected = estimate_chat_input_tokens(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "What is 2+2?"}]},
            {"content": "4"},
        ],
        "gpt-4o",
        tools,
    )
    assert estimate == expected


def test_input_estimates_ignore_one_shot_iterables() -> None:
    messages = iter([{"role": "user", "content": "consumed by the SDK"}])
    assert extract.chat_input_estimate({"messages": messages}, "gpt-4o")() == 3
    assert extract.prompt_input_estimate(iter(["x"]), "gpt-4o")() == 0
