"""Provider failures: recorded on the span, raised unchanged, partial output counted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from opentelemetry.trace import StatusCode

from tollmeter.instrumentation import count_text_tokens
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv import metrics

MODEL = "gpt-4o-mini"
MESSAGES: Any = [{"role": "user", "content": "Explain how tides work, in plain English."}]

pytestmark = pytest.mark.usefixtures("instrumented")


def _fault(name: str) -> dict[str, str]:
    return {"x-fake-fault": name}


@pytest.mark.parametrize(
    ("fault", "error_type"), [("429", openai.RateLimitError), ("500", openai.InternalServerError)]
)
def test_http_error_is_recorded_and_raised_unchanged(
    client: openai.OpenAI, one_span: Any, points: Any, fault: str, error_type: type[Exception]
) -> None:
    with pytest.raises(error_type) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=_fault(fault))
    assert type(caught.value) is error_type
    span, attributes = one_span()
    assert attributes[attrs.ERROR_TYPE] == error_type.__qualname__
    assert span.status.status_code is StatusCode.ERROR
    assert attrs.GEN_AI_USAGE_INPUT_TOKENS not in attributes
    assert points(metrics.GEN_AI_CLIENT_TOKEN_USAGE) == []
    (duration,) = points(metrics.GEN_AI_CLIENT_OPERATION_DURATION)
    assert dict(duration.attributes)[attrs.ERROR_TYPE] == error_type.__qualname__


def test_rate_limit_on_a_stream_request(client: openai.OpenAI, one_span: Any) -> None:
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, extra_headers=_fault("429")
        )
    _, attributes = one_span()
    assert attributes[attrs.ERROR_TYPE] == "RateLimitError"


def test_retried_call_is_one_span(fake_llm: Any, one_span: Any) -> None:
    with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="k", max_retries=2) as client:
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            extra_headers={**_fault("500"), "x-fake-fault-attempts": "1"},
        )
    _, attributes = one_span()
    assert attrs.ERROR_TYPE not in attributes
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "provider"


def test_disconnect_mid_stream_estimates_partial_output(
    client: openai.OpenAI, one_span: Any, exchange_of: Any
) -> None:
    received: list[str] = []
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={**_fault("disconnect"), "x-fake-disconnect-after": "5"},
    )

    def consume() -> None:
        for chunk in stream:
            received.extend(choice.delta.content or "" for choice in chunk.choices)

    with pytest.raises(Exception) as caught:  # noqa: PT011 - the SDK's own type is the subject
        consume()
    span, attributes = one_span()
    assert attributes[attrs.ERROR_TYPE] == type(caught.value).__qualname__
    assert span.status.status_code is StatusCode.ERROR
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    text = "".join(received)
    assert text
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == count_text_tokens(text, MODEL)
    true_input = exchange_of(attributes).usage.input_tokens
    assert abs(attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] - true_input) <= 0.1 * true_input


def test_missing_usage_in_a_complete_response_is_estimated(
    client: openai.OpenAI, one_span: Any, exchange_of: Any
) -> None:
    client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=_fault("no-usage"))
    _, attributes = one_span()
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    exchange = exchange_of(attributes)
    assert not exchange.reported
    for key, value in (
        (attrs.GEN_AI_USAGE_INPUT_TOKENS, exchange.usage.input_tokens),
        (attrs.GEN_AI_USAGE_OUTPUT_TOKENS, exchange.usage.output_tokens),
    ):
        assert abs(attributes[key] - value) <= 0.1 * value


def test_async_http_error(
    async_client_factory: Callable[[], openai.AsyncOpenAI], one_span: Any
) -> None:
    async def run() -> None:
        async with async_client_factory() as client:
            await client.responses.create(model=MODEL, input="hi", extra_headers=_fault("500"))

    with pytest.raises(openai.InternalServerError):
        asyncio.run(run())
    _, attributes = one_span()
    assert attributes[attrs.ERROR_TYPE] == "InternalServerError"


class Interrupted(BaseException):
    """Raised by the transport below; the SDK lets ``BaseException`` pass untouched."""


@pytest.fixture
def interrupting_client(
    fake_llm: Any, sdk_http: Any
) -> Iterator[tuple[openai.OpenAI, Interrupted]]:
    error = Interrupted("stop now")
    http = sdk_http(openai)

    class Transport(http.HTTPTransport):
        def handle_request(self, request: Any) -> Any:
            if "x-test-interrupt" in request.headers:
                raise error
            return super().handle_request(request)

    http_client = http.Client(transport=Transport())
    with openai.OpenAI(
        base_url=f"{fake_llm.url}/v1", api_key="k", max_retries=0, http_client=http_client
    ) as client:
        yield client, error


def test_exception_object_propagates_unchanged(
    interrupting_client: tuple[openai.OpenAI, Interrupted], one_span: Any
) -> None:
    client, error = interrupting_client
    with pytest.raises(Interrupted) as caught:
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers={"x-test-interrupt": "1"}
        )
    assert caught.value is error
    _, attributes = one_span()
    assert attributes[attrs.ERROR_TYPE] == "Interrupted"


def test_async_disconnect_mid_stream(
    async_client_factory: Callable[[], openai.AsyncOpenAI], one_span: Any
) -> None:
    received: list[str] = []

    async def run() -> None:
        async with async_client_factory() as client:
            stream = await client.responses.create(
                model=MODEL,
                input="Explain how tides work.",
                stream=True,
                extra_headers={**_fault("disconnect"), "x-fake-disconnect-after": "6"},
            )
            async for event in stream:
                if event.type == "response.output_text.delta":
                    received.append(event.delta)

    with pytest.raises(Exception) as caught:  # noqa: PT011 - the SDK's own type is the subject
        asyncio.run(run())
    assert received
    span, attributes = one_span()
    assert attributes[attrs.ERROR_TYPE] == type(caught.value).__qualname__
    assert span.status.status_code is StatusCode.ERROR
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == count_text_tokens(
        "".join(received), MODEL
    )
