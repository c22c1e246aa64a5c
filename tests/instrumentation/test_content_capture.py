"""Opt-in message content (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``), every SDK.

Each case makes one real call with the SDK against the fake LLM server under one capture mode,
set through the variable the way users set it, and checks that the mode gives exactly what it
promises: no content attribute and no log record when off; the prompt and the reply the SDK
returned, in the GenAI message structure, on the span and/or in one
``gen_ai.client.inference.operation.details`` log record linked to the span.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config
from google import genai
from google.genai import types
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs import export as logs_export
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from tollmeter.instrumentation._content import MAX_CHARS
from tollmeter.instrumentation.anthropic import AnthropicInstrumentor
from tollmeter.instrumentation.bedrock import BedrockInstrumentor
from tollmeter.instrumentation.google_genai import GoogleGenAIInstrumentor
from tollmeter.instrumentation.openai import OpenAIInstrumentor

VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
PROMPT = "Name three colours of the rainbow."
SYSTEM = "Answer in one line."
INPUT = "gen_ai.input.messages"
OUTPUT = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
EVENT = "gen_ai.client.inference.operation.details"

# The in-memory log exporter took its current name after OpenTelemetry 1.30, the floor;
# the old name now warns, so each release gets the name it knows.
InMemoryLogRecordExporter: Any = (
    getattr(logs_export, "InMemoryLogRecordExporter", None) or logs_export.InMemoryLogExporter
)


@pytest.fixture
def log_exporter() -> InMemoryLogRecordExporter:
    return InMemoryLogRecordExporter()


@pytest.fixture
def logger_provider(log_exporter: InMemoryLogRecordExporter) -> Iterator[LoggerProvider]:
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    yield provider
    provider.shutdown()


def _openai_chat(url: str, stream: bool) -> tuple[str, str | None]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    with openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
        if stream:
            chunks = client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return text, None
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        return reply.choices[0].message.content or "", None


def _openai_responses(url: str, stream: bool) -> tuple[str, str | None]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
        if stream:
            events = client.responses.create(
                model="gpt-4o-mini", input=PROMPT, instructions=SYSTEM, stream=True
            )
            deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
            return "".join(deltas), SYSTEM
        reply = client.responses.create(model="gpt-4o-mini", input=PROMPT, instructions=SYSTEM)
        return reply.output_text, SYSTEM


def _anthropic(url: str, stream: bool) -> tuple[str, str | None]:
    with anthropic.Anthropic(base_url=url, api_key="k", max_retries=0) as client:
        request: dict[str, Any] = {
            "model": "claude-test-small",
            "max_tokens": 100,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        if stream:
            with client.messages.stream(**request) as events:
                return events.get_final_text(), SYSTEM
        message = client.messages.create(**request)
        return "".join(block.text for block in message.content if block.type == "text"), SYSTEM


def _gemini(url: str, stream: bool) -> tuple[str, str | None]:
    with genai.Client(api_key="k", http_options=types.HttpOptions(base_url=url)) as client:
        config = types.GenerateContentConfig(system_instruction=SYSTEM)
        if stream:
            chunks = client.models.generate_content_stream(
                model="gemini-2.0-flash", contents=PROMPT, config=config
            )
            return "".join(chunk.text or "" for chunk in chunks), SYSTEM
        reply = client.models.generate_content(
            model="gemini-2.0-flash", contents=PROMPT, config=config
        )
        return reply.text or "", SYSTEM


def _bedrock(url: str, stream: bool) -> tuple[str, str | None]:
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    request: dict[str, Any] = {
        "modelId": "amazon.nova-micro-v1:0",
        "messages": [{"role": "user", "content": [{"text": PROMPT}]}],
        "system": [{"text": SYSTEM}],
    }
    try:
        if stream:
            events = client.converse_stream(**request)["stream"]
            texts = [
                e["contentBlockDelta"]["delta"].get("text", "")
                for e in events
                if "contentBlockDelta" in e
            ]
            return "".join(texts), SYSTEM
        reply = client.converse(**request)
        return "".join(b.get("text", "") for b in reply["output"]["message"]["content"]), SYSTEM
    finally:
        client.close()


CALLS: dict[str, tuple[Callable[[], BaseInstrumentor], Callable[[str, bool], Any]]] = {
    "openai-chat": (OpenAIInstrumentor, _openai_chat),
    "openai-responses": (OpenAIInstrumentor, _openai_responses),
    "anthropic": (AnthropicInstrumentor, _anthropic),
    "gemini": (GoogleGenAIInstrumentor, _gemini),
    "bedrock": (BedrockInstrumentor, _bedrock),
}


@pytest.fixture
def instrument(
    tracer_provider: TracerProvider, logger_provider: LoggerProvider
) -> Iterator[Callable[..., None]]:
    enabled: list[BaseInstrumentor] = []

    def enable(make: Callable[[], BaseInstrumentor], **options: Any) -> None:
        instrumentor = make()
        instrumentor.instrument(
            tracer_provider=tracer_provider, logger_provider=logger_provider, **options
        )
        enabled.append(instrumentor)

    yield enable
    for instrumentor in enabled:
        instrumentor.uninstrument()


def _text_of(messages: list[Any]) -> str:
    return "".join(
        part.get("content") or ""
        for item in messages
        for part in item["parts"]
        if part["type"] == "text"
    )


@pytest.mark.parametrize("mode", ["NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "span_and_event"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("sdk", sorted(CALLS))
def test_each_mode_gives_what_it_promises(
    sdk: str,
    stream: bool,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    instrument: Callable[..., None],
    fake_llm: Any,
    wait_spans: Callable[[int], tuple[ReadableSpan, ...]],
    log_exporter: InMemoryLogRecordExporter,
) -> None:
    make, call = CALLS[sdk]
    monkeypatch.setenv(VARIABLE, mode)
    instrument(make)
    # Read once, when enabled: a later change has no effect.
    monkeypatch.setenv(VARIABLE, "NO_CONTENT" if mode != "NO_CONTENT" else "SPAN_AND_EVENT")
    reply, system = call(fake_llm.url, stream)
    spans = wait_spans(1)
    assert len(spans) == 1
    span = spans[0]
    values = dict(span.attributes or {})
    records = [data.log_record for data in log_exporter.get_finished_logs()]
    on_span = mode.upper() in ("SPAN_ONLY", "SPAN_AND_EVENT")
    as_event = mode.upper() in ("EVENT_ONLY", "SPAN_AND_EVENT")

    captured: list[dict[str, Any]] = []
    if on_span:
        captured.append(
            {
                key: json.loads(str(values[key]))
                for key in (INPUT, OUTPUT, SYSTEM_INSTRUCTIONS)
                if key in values
            }
        )
    else:
        assert not {INPUT, OUTPUT, SYSTEM_INSTRUCTIONS} & set(values)
    if as_event:
        assert len(records) == 1
        record = records[0]
        assert record.event_name == EVENT
        assert (record.trace_id, record.span_id) == (span.context.trace_id, span.context.span_id)
        event = dict(record.attributes or {})
        assert event["gen_ai.usage.output_tokens"] == values["gen_ai.usage.output_tokens"]
        captured.append(
            json.loads(
                json.dumps(
                    {k: event[k] for k in (INPUT, OUTPUT, SYSTEM_INSTRUCTIONS) if k in event}
                )
            )
        )
    else:
        assert records == []

    for content in captured:
        inputs = content[INPUT]
        assert inputs[-1] == {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}
        if system is None:
            assert inputs[0] == {"role": "system", "parts": [{"type": "text", "content": SYSTEM}]}
            assert SYSTEM_INSTRUCTIONS not in content
        else:
            assert content[SYSTEM_INSTRUCTIONS] == [{"type": "text", "content": system}]
        outputs = content[OUTPUT]
        assert [item["role"] for item in outputs] == ["assistant"]
        assert outputs[0]["finish_reason"]
        assert reply
        assert _text_of(outputs) == reply


def test_an_invalid_value_warns_and_captures_nothing(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    instrument: Callable[..., None],
    fake_llm: Any,
    wait_spans: Callable[[int], tuple[ReadableSpan, ...]],
    log_exporter: InMemoryLogRecordExporter,
) -> None:
    monkeypatch.setenv(VARIABLE, "true")
    with caplog.at_level(logging.WARNING, logger="tollmeter"):
        instrument(OpenAIInstrumentor)
    assert [r.getMessage() for r in caplog.records if VARIABLE in r.getMessage()]
    _openai_chat(fake_llm.url, False)
    values = dict(wait_spans(1)[0].attributes or {})
    assert not {INPUT, OUTPUT} & set(values)
    assert log_exporter.get_finished_logs() == ()


def test_the_option_wins_over_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    instrument: Callable[..., None],
    fake_llm: Any,
    wait_spans: Callable[[int], tuple[ReadableSpan, ...]],
) -> None:
    monkeypatch.setenv(VARIABLE, "SPAN_ONLY")
    instrument(OpenAIInstrumentor, capture_message_content="NO_CONTENT")
    _openai_chat(fake_llm.url, False)
    assert INPUT not in dict(wait_spans(1)[0].attributes or {})


def test_a_bad_option_is_refused(instrument: Callable[..., None]) -> None:
    with pytest.raises(ValueError, match="capture_message_content"):
        instrument(OpenAIInstrumentor, capture_message_content="everything")


def test_content_is_bounded(
    instrument: Callable[..., None],
    fake_llm: Any,
    wait_spans: Callable[[int], tuple[ReadableSpan, ...]],
) -> None:
    instrument(OpenAIInstrumentor, capture_message_content="SPAN_ONLY")
    long_prompt = "word " * (MAX_CHARS // 2)
    history = [{"role": "user", "content": f"turn {i}"} for i in range(100)]
    with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="k", max_retries=0) as client:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[*history, {"role": "user", "content": long_prompt}]
        )
    inputs = json.loads(str(dict(wait_spans(1)[0].attributes or {})[INPUT]))
    assert len(inputs) == 64
    assert inputs[-1]["parts"][0]["content"].endswith("…")
    assert sum(len(p["content"]) for m in inputs for p in m["parts"]) == MAX_CHARS


def test_configure_refuses_a_bad_capture_mode() -> None:
    import tollmeter
    from tollmeter.semconv.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="capture_message_content"):
        tollmeter.configure(capture_message_content="all of it")
