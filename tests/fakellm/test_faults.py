"""Injected faults and hostile input: each raises the SDK's own exception, never a crash."""

from __future__ import annotations

import asyncio
import json

import anthropic
import httpx
import httpx2
import openai
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

GPT = "gpt-4o-mini"
# A name no real model has: the SDK warns when a real one is deprecated; the fake server
# takes any name.
CLAUDE = "claude-test-small"
MESSAGES = [{"role": "user", "content": "Hello"}]


def _chat(client, model: str = GPT, **kwargs):
    return client.chat.completions.create(model=model, messages=MESSAGES, **kwargs)


def _claude(client, model: str = CLAUDE, **kwargs):
    return client.messages.create(model=model, max_tokens=64, messages=MESSAGES, **kwargs)


def test_429_by_header_with_retry_after(oai, fake_llm):
    with pytest.raises(openai.RateLimitError) as caught:
        _chat(oai, extra_headers={"x-fake-fault": "429", "x-fake-retry-after": "7"})
    error = caught.value
    assert error.response.headers["retry-after"] == "7"
    assert error.code == "rate_limit_exceeded"
    exchange = fake_llm.state.journal.snapshot()[-1]
    assert exchange.request_id == error.response.headers["x-request-id"]
    assert (exchange.status, exchange.usage, exchange.faults) == (429, None, ["429"])


def test_429_by_model_suffix_for_anthropic(claude):
    with pytest.raises(anthropic.RateLimitError) as caught:
        _claude(claude, model=f"{CLAUDE}?fault=429&retry_after=2")
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.body["error"]["type"] == "rate_limit_error"


def test_500_for_both_providers(oai, claude):
    with pytest.raises(openai.InternalServerError):
        _chat(oai, model=f"{GPT}?fault=500")
    with pytest.raises(anthropic.InternalServerError):
        _claude(claude, extra_headers={"x-fake-fault": "500"})


def test_fault_limited_to_first_attempts_lets_the_sdk_retry(fake_llm):
    headers = {"x-fake-fault": "429", "x-fake-fault-attempts": "2", "x-fake-retry-after": "0.01"}
    with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="k", max_retries=3) as client:
        completion = _chat(client, extra_headers=headers)
    with anthropic.Anthropic(base_url=fake_llm.url, api_key="k", max_retries=3) as client:
        message = _claude(client, extra_headers=headers)
    attempts = [(e.attempt, e.status) for e in fake_llm.requests()[-6:]]
    assert attempts == [(0, 429), (1, 429), (2, 200)] * 2
    assert fake_llm.find(completion.id).attempt == 2
    assert fake_llm.find(message.id).attempt == 2


def test_slow_first_token_trips_a_client_timeout(oai, claude):
    slow = {"x-fake-fault": "slow", "x-fake-delay-ms": "2000"}
    with pytest.raises(openai.APITimeoutError):
        _chat(oai, extra_headers=slow, timeout=0.2)
    with pytest.raises(anthropic.APITimeoutError):
        _claude(claude, extra_headers=slow, timeout=0.2)
    long_wait = {"x-fake-fault": "slow", "x-fake-delay-ms": "30000"}
    stream = _chat(oai, stream=True, extra_headers=long_wait, timeout=openai.Timeout(30, read=2))
    with stream, pytest.raises(openai.APITimeoutError):
        next(iter(stream))


def test_slow_reply_still_arrives(oai, recount):
    completion = _chat(oai, model=f"{GPT}?fault=slow&delay_ms=20")
    assert completion.usage.prompt_tokens == recount.chat_prompt(MESSAGES)


def test_disconnect_mid_stream(oai, claude, fake_llm):
    stream = _chat(
        oai,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-fault": "disconnect", "x-fake-disconnect-after": "2"},
    )
    received = []
    with pytest.raises(openai.APIConnectionError):
        received.extend(stream)
    assert len(received) == 2
    exchange = fake_llm.find(received[0].id)
    assert exchange.reported is False
    assert exchange.usage.output_tokens > 0
    events = []
    with pytest.raises(httpx2.RemoteProtocolError):
        events.extend(_claude(claude, model=f"{CLAUDE}?fault=disconnect", stream=True))
    assert [e.type for e in events] == ["message_start", "content_block_start"]


def test_disconnect_without_streaming(oai, claude):
    with pytest.raises(openai.APIConnectionError):
        _chat(oai, model=f"{GPT}?fault=disconnect")
    with pytest.raises(anthropic.APIConnectionError):
        _claude(claude, model=f"{CLAUDE}?fault=disconnect")


def test_no_usage_omits_usage_everywhere(oai, claude, fake_llm):
    plain = _chat(oai, model=f"{GPT}?fault=no-usage")
    assert plain.usage is None
    assert fake_llm.find(plain.id).reported is False
    chunks = list(
        _chat(
            oai, model=f"{GPT}?fault=no-usage", stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    response = oai.responses.create(model=f"{GPT}?fault=no-usage", input="Hi")
    assert response.usage is None
    embedding = oai.embeddings.create(model="text-embedding-3-small?fault=no-usage", input="x")
    assert embedding.usage is None
    raw = claude.messages.with_raw_response.create(
        model=f"{CLAUDE}?fault=no-usage", max_tokens=64, messages=MESSAGES
    )
    assert "usage" not in raw.http_response.json()
    assert json.loads(raw.headers["x-fake-usage"])["reported"] is False


def test_combined_faults(oai):
    with pytest.raises(openai.RateLimitError):
        _chat(oai, extra_headers={"x-fake-fault": "slow, 429", "x-fake-delay-ms": "1"})


@pytest.mark.parametrize(
    ("model", "headers"),
    [
        (f"{GPT}?fault=explode", {}),
        (GPT, {"x-fake-fault": "teapot"}),
        (GPT, {"x-fake-fault": "slow", "x-fake-delay-ms": "soon"}),
        (GPT, {"x-fake-fault": "slow", "x-fake-delay-ms": "-5"}),
        (GPT, {"x-fake-fault": "slow", "x-fake-delay-ms": "nan"}),
        (f"{GPT}?colour=red", {}),
    ],
)
def test_malformed_directives_are_bad_requests(oai, model, headers):
    with pytest.raises(openai.BadRequestError):
        _chat(oai, model=model, extra_headers=headers)


def _post(fake_llm, path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{fake_llm.url}{path}", content=content, headers=headers, timeout=10)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'"text"',
        b'{"messages": []}',
        b'{"model": "", "messages": [{"role": "user", "content": "x"}]}',
        b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}',
        b'{"model": "gpt-4o", "messages": []}',
        b'{"model": "gpt-4o", "messages": "hello"}',
        b'{"model": "gpt-4o", "messages": [{"content": "no role"}]}',
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": 0}',
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": true}',
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "tools": {}}',
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
        b"\xff\xfe\x00garbage",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_openai_bodies_get_400(fake_llm, body):
    response = _post(fake_llm, "/v1/chat/completions", body, **{"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", b'{"model": "c", "max_tokens": 5, "messages": [{"role": "bot"}]}'),
        ("/v1/messages", b'{"model": "c", "max_tokens": 5, "messages": [], "thinking": 1}'),
        ("/v1/messages", b"{oops"),
        ("/v1/responses", b'{"model": "gpt-4o", "input": 42}'),
        ("/v1/embeddings", b'{"model": "e", "input": [1, "mixed"]}'),
        ("/v1/embeddings", b'{"model": "e", "input": "x", "encoding_format": "int8"}'),
        ("/v1/embeddings", b'{"model": "e", "input": "x", "dimensions": 100000}'),
        ("/v1/completions", b'{"model": "d", "prompt": null}'),
    ],
)
def test_malformed_bodies_on_every_endpoint(fake_llm, path, body):
    response = _post(fake_llm, path, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"


def test_oversized_body_is_413_in_each_format(oai, claude):
    huge = "word " * 1_000_000
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": huge}])
    assert caught.value.status_code == 413
    with pytest.raises(anthropic.ContentTooLargeError):
        claude.messages.create(
            model=CLAUDE, max_tokens=8, messages=[{"role": "user", "content": huge}]
        )


def test_oversized_body_without_content_length(fake_llm):
    def chunks():
        yield b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'
        for _ in range(5):
            yield b"x" * 1024 * 1024
        yield b'"}]}'

    response = httpx.post(f"{fake_llm.url}/v1/chat/completions", content=chunks(), timeout=10)
    assert response.status_code == 413


def test_unknown_routes_and_methods_answer_json(fake_llm):
    missing = httpx.post(f"{fake_llm.url}/v1/nothing", json={}, timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "unknown_url"
    wrong = httpx.get(f"{fake_llm.url}/v1/chat/completions", timeout=10)
    assert wrong.status_code == 405
    anthropic_style = httpx.post(
        f"{fake_llm.url}/v1/nothing", json={}, headers={"anthropic-version": "x"}, timeout=10
    )
    assert anthropic_style.json()["type"] == "error"


def test_faults_with_async_clients(fake_llm):
    async def main() -> None:
        async with openai.AsyncOpenAI(
            base_url=f"{fake_llm.url}/v1", api_key="k", max_retries=0
        ) as client:
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model=f"{GPT}?fault=429", messages=MESSAGES)
        async with anthropic.AsyncAnthropic(
            base_url=fake_llm.url, api_key="k", max_retries=0
        ) as client:
            stream = await client.messages.create(
                model=f"{CLAUDE}?fault=disconnect&disconnect_after=1",
                max_tokens=64,
                messages=MESSAGES,
                stream=True,
            )
            with pytest.raises(httpx2.RemoteProtocolError):
                async for _ in stream:
                    pass

    asyncio.run(main())


def test_server_keeps_serving_after_faults(oai):
    assert _chat(oai).choices[0].message.content


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 2000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
_fields = st.sampled_from(
    [
        "messages", "input", "prompt", "tools", "tool_choice", "n", "max_tokens",
        "max_completion_tokens", "max_output_tokens", "stream", "stream_options", "system",
        "thinking", "response_format", "text", "encoding_format", "dimensions", "instructions",
    ]
)  # fmt: skip
_blocks = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["text", "image", "tool_use", "tool_result", "thinking", "image_url", "x"]
            )
        },
        optional={
            "text": _json_values,
            "content": _json_values,
            "input": _json_values,
            "name": _json_values,
            "cache_control": _json_values,
            "thinking": _json_values,
        },
    ),
    max_size=3,
)
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "x"])},
        optional={
            "content": _json_values | _blocks,
            "tool_calls": _json_values,
            "name": _json_values,
        },
    ),
    min_size=1,
    max_size=3,
)


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=10) as client:
        yield client


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(
        [
            "/v1/chat/completions",
            "/v1/responses",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/messages",
        ]
    ),
    messages=_messages,
    extra=st.dictionaries(_fields, _json_values, max_size=5),
)
@example(path="/v1/chat/completions", messages=[{"role": "user", "tool_calls": 1}], extra={})
@example(
    path="/v1/chat/completions",
    messages=[{"role": "assistant", "tool_calls": [{"function": "x"}, 3]}],
    extra={},
)
def test_hostile_bodies_never_crash_the_server(fake_llm, http, path, messages, extra):
    body = {"model": "gpt-4o", "messages": messages, "max_tokens": 16, **extra}
    response = http.post(f"{fake_llm.url}{path}", json=body)
    assert response.status_code in (200, 400), response.text


def test_replies_too_large_to_prepare_are_refused(oai):
    with pytest.raises(openai.BadRequestError):
        _chat(oai, n=100, extra_headers={"x-fake-reply-tokens": "30000"})
    with pytest.raises(openai.BadRequestError):
        _chat(oai, extra_headers={"x-fake-reply-tokens": "1000000"})


def test_chunk_delay_paces_a_stream(oai):
    stream = _chat(
        oai,
        stream=True,
        extra_headers={"x-fake-chunk-delay-ms": "30000"},
        timeout=openai.Timeout(30, read=3),
    )
    with stream:
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
        with pytest.raises(openai.APITimeoutError):
            next(iter(stream))
