"""The Bedrock runtime endpoints, checked against botocore itself.

Every reply is parsed by a real boto3 client, plain bodies and event-stream events are
validated strictly against the shapes of botocore's own bedrock-runtime service model, and the
event-stream framing is decoded by botocore's parser, CRCs included.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import boto3
import botocore.session
import httpx
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.model import Shape

from tollmeter.fakellm._eventstream import event_message, message

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-micro-v1:0"
LLAMA = "meta.llama3-8b-instruct-v1:0"
TITAN = "amazon.titan-text-express-v1"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"
HELLO = [{"role": "user", "content": [{"text": "Say hello to the green field."}]}]
TOOL = {
    "toolSpec": {
        "name": "f",
        "inputSchema": {"json": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    }
}
BODIES = {
    CLAUDE: {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "Say hello."}],
    },
    LLAMA: {"prompt": "Say hello.", "max_gen_len": 200},
    NOVA: {"messages": HELLO, "inferenceConfig": {"maxTokens": 200}},
    TITAN: {"inputText": "Say hello.", "textGenerationConfig": {"maxTokenCount": 200}},
}

_MODEL = botocore.session.get_session().get_service_model("bedrock-runtime")
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "boolean": (bool,),
    "float": (int, float),
    "double": (int, float),
    "blob": (str,),
}


def _conforms(value: Any, shape: Shape, path: str = "$") -> None:
    """Raise AssertionError unless ``value`` (wire JSON) matches ``shape`` exactly."""
    kind = shape.type_name
    if kind == "structure" and shape.is_document_type:
        return
    if kind == "structure":
        assert isinstance(value, dict), path
        members = shape.members
        unknown = set(value) - set(members)
        assert not unknown, f"{path}: not in {shape.name}: {unknown}"
        if shape.metadata.get("union"):
            assert len(value) == 1, f"{path}: a union sets one member"
        for name in shape.required_members:
            assert name in value, f"{path}: {shape.name} requires {name}"
        for name, item in value.items():
            _conforms(item, members[name], f"{path}.{name}")
    elif kind == "list":
        assert isinstance(value, list), path
        for index, item in enumerate(value):
            _conforms(item, shape.member, f"{path}[{index}]")
    elif kind == "map":
        assert isinstance(value, dict), path
    else:
        assert isinstance(value, _PY_TYPES[kind]), f"{path}: {value!r} is no {kind}"
        assert kind != "integer" or not isinstance(value, bool), path
        assert kind != "string" or not shape.enum or value in shape.enum, f"{path}: {value!r}"


def _events(raw: bytes) -> list[tuple[dict[str, Any], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    return [(event.headers, event.payload) for event in buffer]


def _client(fake_llm, attempts: int = 1) -> Any:
    """Explicit dummy credentials and region: no credential lookup, no metadata service."""
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=fake_llm.url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
    )


@pytest.fixture
def bedrock(fake_llm):
    client = _client(fake_llm)
    yield client
    client.close()


def _post(fake_llm, path: str, body: dict[str, Any]) -> httpx.Response:
    response = httpx.post(f"{fake_llm.url}{path}", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response


def test_framing_decodes_with_botocore_and_its_checksums_are_real():
    raw = event_message("messageStop", {"stopReason": "end_turn"})
    ((headers, payload),) = _events(raw)
    assert headers == {
        ":event-type": "messageStop",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(payload) == {"stopReason": "end_turn"}
    total, header_length = struct.unpack(">II", raw[:8])
    assert total == len(raw)
    assert header_length == len(raw) - 16 - len(payload)
    corrupted = raw[:-5] + bytes([raw[-5] ^ 1]) + raw[-4:]
    with pytest.raises(ChecksumMismatch):
        _events(corrupted)
    # Several messages in one read, split anywhere, decode the same.
    two = message({":message-type": "event", ":event-type": "a"}, b"{}") + raw
    buffer = EventStreamBuffer()
    buffer.add_data(two[:7])
    assert list(buffer) == []
    buffer.add_data(two[7:])
    assert [event.headers[":event-type"] for event in buffer] == ["a", "messageStop"]


@pytest.mark.parametrize(
    "body",
    [
        {"messages": HELLO},
        {"messages": HELLO, "toolConfig": {"tools": [TOOL]}},
        {"messages": HELLO, "system": [{"text": "Be brief."}], "inferenceConfig": {"maxTokens": 3}},
    ],
)
def test_converse_bodies_and_stream_events_match_the_service_model(fake_llm, body):
    output = _MODEL.operation_model("Converse").output_shape
    reply = _post(fake_llm, f"/model/{CLAUDE}/converse", body)
    _conforms(reply.json(), output)
    streamed = _post(fake_llm, f"/model/{CLAUDE}/converse-stream", body)
    assert streamed.headers["content-type"] == "application/vnd.amazon.eventstream"
    union = _MODEL.shape_for("ConverseStreamOutput")
    kinds = []
    for headers, payload in _events(streamed.content):
        kind = headers[":event-type"]
        kinds.append(kind)
        _conforms(json.loads(payload), union.members[kind], kind)
    assert kinds[0] == "messageStart"
    assert kinds[-2:] == ["messageStop", "metadata"]


@pytest.mark.parametrize("model", list(BODIES))
def test_invoke_stream_chunks_match_the_service_model(fake_llm, model):
    streamed = _post(fake_llm, f"/model/{model}/invoke-with-response-stream", BODIES[model])
    chunk_shape = _MODEL.shape_for("ResponseStream").members["chunk"]
    payloads = []
    for headers, payload in _events(streamed.content):
        assert headers[":event-type"] == "chunk"
        data = json.loads(payload)
        _conforms(data, chunk_shape)
        payloads.append(json.loads(base64.b64decode(data["bytes"])))
    truth = fake_llm.last().usage
    metrics = payloads[-1]["amazon-bedrock-invocationMetrics"]
    assert (metrics["inputTokenCount"], metrics["outputTokenCount"]) == (
        truth.input_tokens,
        truth.output_tokens,
    )


def test_anthropic_bodies_on_bedrock_validate_as_the_anthropic_sdks_types(fake_llm):
    body = BODIES[CLAUDE]
    Message.model_validate(_post(fake_llm, f"/model/{CLAUDE}/invoke", body).json())
    streamed = _post(fake_llm, f"/model/{CLAUDE}/invoke-with-response-stream", body)
    adapter = pydantic.TypeAdapter(RawMessageStreamEvent)
    for _, payload in _events(streamed.content):
        chunk = json.loads(base64.b64decode(json.loads(payload)["bytes"]))
        chunk.pop("amazon-bedrock-invocationMetrics", None)  # Bedrock's own addition
        adapter.validate_python(chunk)


def test_converse_through_boto3_reports_the_journal_usage(bedrock, fake_llm):
    reply = bedrock.converse(modelId=NOVA, messages=HELLO)
    exchange = fake_llm.last()
    assert exchange.request_id == reply["ResponseMetadata"]["RequestId"]
    assert exchange.provider == "bedrock"
    assert exchange.model == NOVA
    truth = exchange.usage
    assert reply["usage"] == {
        "inputTokens": truth.input_tokens,
        "outputTokens": truth.output_tokens,
        "totalTokens": truth.total_tokens,
    }
    assert reply["stopReason"] == "end_turn"
    text = reply["output"]["message"]["content"][0]["text"]
    assert len(text.split()) == truth.output_tokens  # one token per vocabulary word


def test_converse_stream_through_boto3_equals_the_plain_reply(bedrock, fake_llm):
    plain = bedrock.converse(modelId=NOVA, messages=HELLO)
    events = list(bedrock.converse_stream(modelId=NOVA, messages=HELLO)["stream"])
    text = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )
    assert text == plain["output"]["message"]["content"][0]["text"]
    assert events[-1]["metadata"]["usage"] == plain["usage"]
    assert fake_llm.last().stream is True


def test_converse_tool_use_streams_its_input_as_json(bedrock):
    events = list(
        bedrock.converse_stream(modelId=NOVA, messages=HELLO, toolConfig={"tools": [TOOL]})[
            "stream"
        ]
    )
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "f"
    pieces = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events[2:-3]]
    assert set(json.loads("".join(pieces))) == {"x"}
    assert {"messageStop": {"stopReason": "tool_use"}} in events


def test_cache_points_are_written_then_read(bedrock, fake_llm, recount):
    system = [{"text": recount.long_text("bedrock-cache")}, {"cachePoint": {"type": "default"}}]
    first = bedrock.converse(modelId=CLAUDE, system=system, messages=HELLO)["usage"]
    second = bedrock.converse(modelId=CLAUDE, system=system, messages=HELLO)["usage"]
    prefix = recount.tokens(system[0]["text"], "cl100k_base")
    assert first["cacheWriteInputTokens"] == prefix
    assert first["cacheReadInputTokens"] == 0
    assert second["cacheReadInputTokens"] == prefix
    assert second["cacheWriteInputTokens"] == 0
    # Bedrock's inputTokens leaves the cache out; totalTokens counts it.
    truth = fake_llm.last().usage
    assert second["inputTokens"] == truth.input_tokens - prefix
    assert second["totalTokens"] == truth.total_tokens


@pytest.mark.parametrize("model", list(BODIES))
def test_invoke_bodies_carry_each_vendors_usage(bedrock, fake_llm, model):
    reply = bedrock.invoke_model(modelId=model, body=json.dumps(BODIES[model]))
    body = json.loads(reply["body"].read())
    truth = fake_llm.last().usage
    counts = {
        CLAUDE: lambda: (body["usage"]["input_tokens"], body["usage"]["output_tokens"]),
        LLAMA: lambda: (body["prompt_token_count"], body["generation_token_count"]),
        NOVA: lambda: (body["usage"]["inputTokens"], body["usage"]["outputTokens"]),
        TITAN: lambda: (body["inputTextTokenCount"], body["results"][0]["tokenCount"]),
    }[model]()
    assert counts == (truth.input_tokens, truth.output_tokens)
    headers = reply["ResponseMetadata"]["HTTPHeaders"]
    assert int(headers["x-amzn-bedrock-input-token-count"]) == truth.input_tokens
    assert int(headers["x-amzn-bedrock-output-token-count"]) == truth.output_tokens
    assert reply["contentType"] == "application/json"


def test_titan_embeddings_count_the_input(bedrock, fake_llm, recount):
    text = "Count these few words."
    body = json.dumps({"inputText": text, "dimensions": 8})
    reply = json.loads(bedrock.invoke_model(modelId=TITAN_EMBED, body=body)["body"].read())
    assert len(reply["embedding"]) == 8
    assert reply["inputTextTokenCount"] == recount.tokens(text, "cl100k_base")
    assert fake_llm.last().usage.input_tokens == reply["inputTextTokenCount"]


def test_faults_reach_boto3_as_its_own_errors_and_missing_usage(bedrock, fake_llm):
    throttled = bedrock.exceptions.ThrottlingException
    with pytest.raises(throttled):
        bedrock.converse(modelId=f"{NOVA}?fault=429", messages=HELLO)
    with pytest.raises(bedrock.exceptions.InternalServerException):
        bedrock.converse(modelId=f"{NOVA}?fault=500", messages=HELLO)
    with pytest.raises(bedrock.exceptions.ValidationException):
        bedrock.converse(modelId=NOVA, messages=[])
    reply = bedrock.converse(modelId=f"{NOVA}?fault=no-usage", messages=HELLO)
    assert "usage" not in reply
    assert fake_llm.last().reported is False
    events = list(
        bedrock.converse_stream(modelId=f"{NOVA}?fault=no-usage", messages=HELLO)["stream"]
    )
    assert not any("metadata" in event for event in events)


def test_botocore_retries_are_counted_as_attempts(fake_llm):
    client = _client(fake_llm, attempts=3)
    try:
        client.converse(modelId=f"{NOVA}?fault=500&attempts=1", messages=HELLO)
    finally:
        client.close()
    failed, answered = fake_llm.requests()[-2:]
    assert (failed.status, failed.attempt) == (500, 0)
    assert (answered.status, answered.attempt) == (200, 1)
