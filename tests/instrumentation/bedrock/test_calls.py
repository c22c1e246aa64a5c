"""Every metered Bedrock operation yields one span whose counts are the fake server's truth."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from tollmeter.fakellm import ReportedUsage
from tollmeter.instrumentation import attribute
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv import metrics

CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
NOVA = "amazon.nova-micro-v1:0"
LLAMA = "meta.llama3-8b-instruct-v1:0"
TITAN = "amazon.titan-text-express-v1"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"
HELLO = [{"role": "user", "content": [{"text": "Name three colours of the rainbow."}]}]
LONG = (
    "Describe, in a few plain sentences, how a small river town wakes up on a market day: "
    "the bakers lighting their ovens before dawn, the fishermen pulling their boats to the "
    "quay, the first stalls going up in the square, children walking to school along the "
    "water, and the old people who sit on the bench by the bridge to watch it all begin."
)
BODIES: dict[str, dict[str, Any]] = {
    CLAUDE: {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 200,
        "system": "Answer briefly.",
        "messages": [{"role": "user", "content": LONG}],
    },
    LLAMA: {"prompt": LONG, "max_gen_len": 200},
    NOVA: {
        "messages": [{"role": "user", "content": [{"text": LONG}]}],
        "inferenceConfig": {"maxTokens": 200},
    },
    TITAN: {"inputText": LONG, "textGenerationConfig": {"maxTokenCount": 200}},
}
OPERATIONS = {CLAUDE: "chat", LLAMA: "text_completion", NOVA: "chat", TITAN: "text_completion"}


def assert_exact(values: dict[str, Any], truth: ReportedUsage | None) -> None:
    assert truth is not None
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == truth.input_tokens
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == truth.output_tokens
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "provider"


def assert_estimated(values: dict[str, Any], truth: ReportedUsage | None) -> None:
    assert truth is not None
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    estimated_in = values[attrs.GEN_AI_USAGE_INPUT_TOKENS]
    assert abs(estimated_in - truth.input_tokens) <= 0.1 * truth.input_tokens
    estimated_out = values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS]
    assert abs(estimated_out - truth.output_tokens) <= 0.1 * truth.output_tokens


def test_converse_span(client: Any, fake_llm: Any, wait_spans: Any, points: Any) -> None:
    reply = client.converse(modelId=NOVA, messages=HELLO, inferenceConfig={"maxTokens": 100})
    (span,) = wait_spans(1)
    values = dict(span.attributes or {})
    assert span.name == f"chat {NOVA}"
    assert span.kind is SpanKind.CLIENT
    assert values[attrs.GEN_AI_OPERATION_NAME] == "chat"
    assert values[attrs.GEN_AI_PROVIDER_NAME] == "aws.bedrock"
    assert values[attrs.GEN_AI_REQUEST_MODEL] == NOVA
    assert values[attrs.GEN_AI_REQUEST_MAX_TOKENS] == 100
    assert values[attrs.SERVER_ADDRESS] == "127.0.0.1"
    assert values[attrs.SERVER_PORT] == fake_llm.port
    assert values[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert attrs.GEN_AI_REQUEST_STREAM not in values
    assert_exact(values, fake_llm.last().usage)
    assert reply["usage"]["outputTokens"] == values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS]
    tokens = {
        p.attributes[attrs.GEN_AI_TOKEN_TYPE]: p.sum
        for p in points(metrics.GEN_AI_CLIENT_TOKEN_USAGE)
    }
    assert tokens == {
        "input": values[attrs.GEN_AI_USAGE_INPUT_TOKENS],
        "output": values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS],
    }


def test_converse_cache_counts_are_inside_the_input(
    client: Any, fake_llm: Any, span_exporter: Any
) -> None:
    # Past the 1024-token minimum, and unique to this test so that the first call writes.
    prefix = "bedrock-span: " + " ".join(["the cat sat on the warm mat by the door"] * 150)
    system = [{"text": prefix}, {"cachePoint": {"type": "default"}}]
    for _ in range(2):
        client.converse(modelId=CLAUDE, system=system, messages=HELLO)
    written, read = (dict(s.attributes or {}) for s in span_exporter.get_finished_spans())
    first, second = (e.usage for e in fake_llm.requests()[-2:])
    assert first.cache_write_tokens > 0
    assert written[attrs.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == first.cache_write_tokens
    assert written[attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 0
    assert read[attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == second.cache_read_tokens > 0
    assert_exact(written, first)
    assert_exact(read, second)


def test_converse_without_usage_is_estimated(client: Any, fake_llm: Any, one_span: Any) -> None:
    messages = [{"role": "user", "content": [{"text": LONG}]}]
    client.converse(modelId=f"{NOVA}?fault=no-usage", messages=messages)
    assert_estimated(one_span(), fake_llm.last().usage)


def test_converse_stream_span(client: Any, fake_llm: Any, one_span: Any, points: Any) -> None:
    stream = client.converse_stream(modelId=NOVA, messages=HELLO)["stream"]
    events = list(stream)
    assert "metadata" in events[-1]
    values = one_span()
    assert values[attrs.GEN_AI_REQUEST_STREAM] is True
    assert values[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert_exact(values, fake_llm.last().usage)
    assert len(points(metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK)) == 1


def test_converse_stream_without_usage_is_estimated(
    client: Any, fake_llm: Any, one_span: Any
) -> None:
    messages = [{"role": "user", "content": [{"text": LONG}]}]
    stream = client.converse_stream(modelId=f"{NOVA}?fault=no-usage", messages=messages)
    assert list(stream["stream"])
    assert_estimated(one_span(), fake_llm.last().usage)


@pytest.mark.parametrize("model", list(BODIES))
def test_invoke_model_reads_each_vendors_usage(
    client: Any, fake_llm: Any, one_span: Any, model: str
) -> None:
    reply = client.invoke_model(modelId=model, body=json.dumps(BODIES[model]))
    body = json.loads(reply["body"].read())
    assert body
    values = one_span()
    assert values[attrs.GEN_AI_OPERATION_NAME] == OPERATIONS[model]
    assert values[attrs.GEN_AI_REQUEST_MAX_TOKENS] == 200
    exchange = fake_llm.last()
    assert_exact(values, exchange.usage)
    if model == CLAUDE:
        assert values[attrs.GEN_AI_RESPONSE_ID] == exchange.response_id == body["id"]
        assert values[attrs.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)


@pytest.mark.parametrize("model", list(BODIES))
def test_invoke_model_without_usage_is_estimated(
    client: Any, fake_llm: Any, one_span: Any, model: str
) -> None:
    reply = client.invoke_model(modelId=f"{model}?fault=no-usage", body=json.dumps(BODIES[model]))
    reply["body"].read()
    assert_estimated(one_span(), fake_llm.last().usage)


@pytest.mark.parametrize("model", list(BODIES))
def test_invoke_stream_reads_each_vendors_usage(
    client: Any, fake_llm: Any, one_span: Any, model: str
) -> None:
    reply = client.invoke_model_with_response_stream(modelId=model, body=json.dumps(BODIES[model]))
    chunks = list(reply["body"])
    assert chunks
    values = one_span()
    assert values[attrs.GEN_AI_REQUEST_STREAM] is True
    assert values[attrs.GEN_AI_OPERATION_NAME] == OPERATIONS[model]
    assert_exact(values, fake_llm.last().usage)


@pytest.mark.parametrize("model", list(BODIES))
def test_invoke_stream_without_usage_is_estimated(
    client: Any, fake_llm: Any, one_span: Any, model: str
) -> None:
    reply = client.invoke_model_with_response_stream(
        modelId=f"{model}?fault=no-usage", body=json.dumps(BODIES[model])
    )
    assert list(reply["body"])
    assert_estimated(one_span(), fake_llm.last().usage)


def test_embeddings_meter_their_input(client: Any, fake_llm: Any, one_span: Any) -> None:
    body = json.dumps({"inputText": LONG, "dimensions": 8})
    client.invoke_model(modelId=TITAN_EMBED, body=body)["body"].read()
    values = one_span()
    assert values[attrs.GEN_AI_OPERATION_NAME] == "embeddings"
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 0
    assert_exact(values, fake_llm.last().usage)


def test_body_read_in_chunks_or_lines_is_metered(
    client: Any, fake_llm: Any, span_exporter: Any
) -> None:
    body = json.dumps(BODIES[NOVA])
    chunks = list(client.invoke_model(modelId=NOVA, body=body)["body"].iter_chunks(16))
    assert json.loads(b"".join(chunks))
    lines = list(client.invoke_model(modelId=NOVA, body=body)["body"].iter_lines())
    assert json.loads(b"".join(lines))
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 2
    for span, exchange in zip(spans, fake_llm.requests()[-2:], strict=True):
        assert_exact(dict(span.attributes or {}), exchange.usage)


def test_attribution_in_effect_at_request_start(client: Any, one_span: Any) -> None:
    with attribute(tenant="acme", feature="summary"):
        stream = client.converse_stream(modelId=NOVA, messages=HELLO)["stream"]
    list(stream)
    values = one_span()
    assert values[attrs.TOLLMETER_TENANT_ID] == "acme"
    assert values[attrs.TOLLMETER_FEATURE] == "summary"
