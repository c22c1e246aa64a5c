"""Bedrock instrumentation never changes what the application sees, and can be switched off."""

from __future__ import annotations

import gc
import json
import logging
from typing import Any

import botocore.client
import botocore.exceptions
import pytest
import urllib3.exceptions
from botocore.eventstream import EventStream
from botocore.response import StreamingBody
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import StatusCode

import tollmeter.instrumentation.bedrock.extract as extract
import tollmeter.instrumentation.bedrock.wrappers as wrappers
from tollmeter.instrumentation import budget, count_text_tokens
from tollmeter.instrumentation.bedrock import BedrockInstrumentor
from tollmeter.instrumentation.errors import BudgetExceeded
from tollmeter.semconv import attributes as attrs

from .conftest import make_client

NOVA = "amazon.nova-micro-v1:0"
LLAMA = "meta.llama3-8b-instruct-v1:0"
HELLO = [{"role": "user", "content": [{"text": "Tell a long story about a lighthouse keeper."}]}]
ORIGINAL = botocore.client.BaseClient._make_api_call


def _deltas(events: Any) -> str:
    return "".join(e["contentBlockDelta"]["delta"].get("text", "") for e in events)


def test_botocore_error_propagates_unchanged(client: Any, one_span: Any) -> None:
    with pytest.raises(client.exceptions.ThrottlingException) as caught:
        client.converse(modelId=f"{NOVA}?fault=429", messages=HELLO)
    assert type(caught.value) is client.exceptions.ThrottlingException
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    values = one_span()
    assert values[attrs.ERROR_TYPE] == "ThrottlingException"
    # Refused before any output: nothing was consumed, so nothing is metered.
    assert attrs.GEN_AI_USAGE_INPUT_TOKENS not in values


def test_botocore_retries_are_the_attempt_number(
    fake_llm: Any, instrumentor: Any, span_exporter: Any
) -> None:
    retrying = make_client(fake_llm, attempts=3)
    try:
        retrying.converse(modelId=f"{NOVA}?fault=500&attempts=1", messages=HELLO)
        with pytest.raises(retrying.exceptions.InternalServerException):
            retrying.converse(modelId=f"{NOVA}?fault=500", messages=HELLO)
    finally:
        retrying.close()
    answered, refused = (dict(s.attributes or {}) for s in span_exporter.get_finished_spans())
    assert answered[attrs.TOLLMETER_ATTEMPT] == 1
    assert answered[attrs.TOLLMETER_USAGE_SOURCE] == "provider"
    assert refused[attrs.TOLLMETER_ATTEMPT] == 2
    assert refused[attrs.ERROR_TYPE] == "InternalServerException"


def test_failed_call_has_an_error_status(client: Any, wait_spans: Any) -> None:
    with pytest.raises(client.exceptions.InternalServerException):
        client.invoke_model_with_response_stream(
            modelId=f"{LLAMA}?fault=500", body=json.dumps({"prompt": "Hi"})
        )
    (span,) = wait_spans(1)
    assert span.status.status_code is StatusCode.ERROR


def test_stream_cut_by_the_network_is_estimated_with_the_error(
    client: Any, fake_llm: Any, one_span: Any
) -> None:
    stream = client.converse_stream(
        modelId=f"{NOVA}?fault=disconnect&disconnect_after=6", messages=HELLO
    )["stream"]
    received: list[Any] = []

    def consume() -> None:
        for event in stream:
            received.append(event)

    # botocore lets urllib3's error out of an event stream as it is.
    with pytest.raises(urllib3.exceptions.ProtocolError):
        consume()
    values = one_span()
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == count_text_tokens(
        _deltas(e for e in received if "contentBlockDelta" in e), NOVA
    )
    assert attrs.ERROR_TYPE in values


def test_stream_closed_early(client: Any, one_span: Any) -> None:
    stream = client.converse_stream(modelId=NOVA, messages=HELLO)["stream"]
    first = [next(iter(stream)) for _ in range(4)]
    stream.close()
    stream.close()
    values = one_span()
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == count_text_tokens(
        _deltas(e for e in first if "contentBlockDelta" in e), NOVA
    )
    assert attrs.TOLLMETER_USAGE_ABANDONED not in values


def test_user_exception_inside_the_loop_propagates_unchanged(client: Any, one_span: Any) -> None:
    error = LookupError("raised by the application")
    stream = client.converse_stream(modelId=NOVA, messages=HELLO)["stream"]

    def consume() -> None:
        for _ in stream:
            raise error

    with pytest.raises(LookupError) as caught:
        consume()
    assert caught.value is error
    stream.close()
    assert one_span()[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


def test_dropped_stream_and_unread_body_are_abandoned(client: Any, wait_spans: Any) -> None:
    stream = client.invoke_model_with_response_stream(
        modelId=LLAMA, body=json.dumps({"prompt": "Hi"})
    )["body"]
    next(iter(stream))
    body = client.invoke_model(modelId=LLAMA, body=json.dumps({"prompt": "Hi"}))["body"]
    # The HTTP responses outlive what the caller drops, so that the test can close their
    # sockets afterwards (an application that drops them leaks them, instrumented or not).
    connections = [stream.__wrapped__._raw_stream, body._raw_stream.__wrapped__]
    del stream, body
    gc.collect()
    spans = wait_spans(2)
    for connection in connections:
        connection.close()
    assert len(spans) == 2
    for span in spans:
        assert (span.attributes or {})[attrs.TOLLMETER_USAGE_ABANDONED] is True


def test_body_closed_unread_is_metered_from_bedrocks_headers(
    client: Any, fake_llm: Any, one_span: Any
) -> None:
    reply = client.invoke_model(modelId=LLAMA, body=json.dumps({"prompt": "Hi"}))
    reply["body"].close()
    values = one_span()
    truth = fake_llm.last().usage
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "provider"
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == truth.input_tokens
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == truth.output_tokens
    assert attrs.TOLLMETER_USAGE_ABANDONED not in values


def test_span_is_current_for_the_request_but_not_the_loop(
    client: Any, tracer_provider: TracerProvider, wait_spans: Any
) -> None:
    tracer = tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handler") as parent:
        stream = client.converse_stream(modelId=NOVA, messages=HELLO)["stream"]
        for _ in stream:
            assert trace.get_current_span() is parent
    call, handler = wait_spans(2)
    assert call.parent is not None
    assert call.parent.span_id == handler.context.span_id


def test_clients_made_before_instrument_are_metered_and_uninstrument_restores(
    fake_llm: Any,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    span_exporter: Any,
) -> None:
    before = make_client(fake_llm)
    instrumentor = BedrockInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        after = make_client(fake_llm)
        before.converse(modelId=NOVA, messages=HELLO)
        after.converse(modelId=NOVA, messages=HELLO)
        assert len(span_exporter.get_finished_spans()) == 2  # twice instrumented, one span each
    finally:
        instrumentor.uninstrument()
    assert botocore.client.BaseClient._make_api_call is ORIGINAL
    before.converse(modelId=NOVA, messages=HELLO)
    assert len(span_exporter.get_finished_spans()) == 2
    before.close()
    after.close()


def test_other_services_and_operations_pass_through(
    fake_llm: Any, instrumentor: Any, span_exporter: Any
) -> None:
    s3 = make_client(fake_llm, "s3")
    with pytest.raises(botocore.exceptions.ClientError):
        s3.list_buckets()
    s3.close()
    runtime = make_client(fake_llm)
    with pytest.raises(botocore.exceptions.ClientError):
        runtime.apply_guardrail(
            guardrailIdentifier="g",
            guardrailVersion="1",
            source="INPUT",
            content=[{"text": {"text": "Hi"}}],
        )
    runtime.close()
    assert span_exporter.get_finished_spans() == ()


def test_suppressed_instrumentation_makes_no_span(client: Any, span_exporter: Any) -> None:
    with suppress_instrumentation():
        client.converse(modelId=NOVA, messages=HELLO)
    assert span_exporter.get_finished_spans() == ()


def test_budget_refuses_the_call_before_it_is_sent(client: Any, fake_llm: Any) -> None:
    sent = len(fake_llm.requests())
    with budget(max_calls=1):
        client.converse(modelId=NOVA, messages=HELLO)
        with pytest.raises(BudgetExceeded):
            client.converse(modelId=NOVA, messages=HELLO)
    assert len(fake_llm.requests()) == sent + 1


class ExtractBug(Exception):
    """Stands for a bug in tollmeter's own extraction code."""


def test_failure_in_extraction_does_not_break_the_call(
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
    span_exporter: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any) -> Any:
        raise ExtractBug("bug")

    monkeypatch.setattr(extract, "converse_outcome", broken)
    monkeypatch.setattr(wrappers, "converse_usage", broken)
    monkeypatch.setattr(wrappers, "body_outcome", broken)
    with caplog.at_level(logging.WARNING, logger="tollmeter.instrumentation"):
        for _ in range(2):
            assert client.converse(modelId=NOVA, messages=HELLO)["usage"]
        events = list(client.converse_stream(modelId=NOVA, messages=HELLO)["stream"])
        assert "metadata" in events[-1]
        reply = client.invoke_model(modelId=LLAMA, body=json.dumps({"prompt": "Hi"}))
        assert json.loads(reply["body"].read())["generation"]
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 4
    sources = [dict(span.attributes or {})[attrs.TOLLMETER_USAGE_SOURCE] for span in spans]
    assert sources == ["estimate"] * 4
    reports = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ExtractBug]
    assert len(reports) == 3  # once per failing site, not once per call


def test_failure_before_the_request_leaves_the_call_unmetered(
    client: Any, monkeypatch: pytest.MonkeyPatch, span_exporter: Any
) -> None:
    def broken(*args: Any) -> Any:
        raise ExtractBug("bug")

    monkeypatch.setattr(extract, "server_attributes", broken)
    assert client.converse(modelId=NOVA, messages=HELLO)["usage"]
    assert span_exporter.get_finished_spans() == ()


def test_invoke_stream_cut_keeps_the_input_the_vendor_reported(
    client: Any, fake_llm: Any, one_span: Any
) -> None:
    claude = "anthropic.claude-3-haiku-20240307-v1:0"
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "Tell a long story about a lighthouse."}],
    }
    stream = client.invoke_model_with_response_stream(
        modelId=f"{claude}?fault=disconnect&disconnect_after=8", body=json.dumps(body)
    )["body"]
    texts: list[str] = []

    def consume() -> None:
        for event in stream:
            delta = json.loads(event["chunk"]["bytes"]).get("delta", {})
            texts.append(delta.get("text", ""))

    with pytest.raises(urllib3.exceptions.ProtocolError):
        consume()
    values = one_span()
    # message_start gave the input; the output is counted on the text that arrived.
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == fake_llm.last().usage.input_tokens
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == count_text_tokens("".join(texts), "claude")
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


def test_the_proxies_are_transparent(client: Any) -> None:
    stream = client.converse_stream(modelId=NOVA, messages=HELLO)["stream"]
    assert isinstance(stream, EventStream)
    list(stream)
    reply = client.invoke_model(modelId=LLAMA, body=json.dumps({"prompt": "Hi"}))
    assert isinstance(reply["body"], StreamingBody)
    assert reply["body"].readable()
    assert json.loads(reply["body"].read())["generation"]
