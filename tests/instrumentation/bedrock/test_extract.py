"""Reading replies of vendors the fake server does not speak: Bedrock's own counts serve."""

from __future__ import annotations

import json

from tollmeter.instrumentation._telemetry import Usage
from tollmeter.instrumentation.bedrock.extract import body_outcome, converse_outcome, estimate_model
from tollmeter.instrumentation.bedrock.wrappers import InvokeStreamHandler

HEADERS = {
    "x-amzn-bedrock-input-token-count": "120",
    "x-amzn-bedrock-output-token-count": "30",
    "x-amzn-bedrock-cache-read-input-token-count": "100",
}


def test_an_unknown_body_is_metered_from_bedrocks_headers() -> None:
    mistral = {"outputs": [{"text": "Hello.", "stop_reason": "stop"}]}
    outcome = body_outcome(mistral, HEADERS)
    assert outcome.usage == Usage(input_tokens=220, output_tokens=30, cache_read_input_tokens=100)


def test_an_unknown_stream_is_metered_from_the_invocation_metrics() -> None:
    handler = InvokeStreamHandler("mistral.mistral-large-2407-v1:0")
    metrics = {"inputTokenCount": 12, "outputTokenCount": 5, "invocationLatency": 9}
    last = {"outputs": [], "amazon-bedrock-invocationMetrics": metrics}
    for payload in ({"outputs": [{"text": "Hi"}]}, last):
        # boto3 hands the chunk's bytes over already decoded from base64.
        handler.on_chunk({"chunk": {"bytes": json.dumps(payload).encode()}})
    outcome = handler.outcome()
    assert outcome.usage == Usage(input_tokens=12, output_tokens=5)
    assert outcome.source == "provider"


def test_model_ids_name_the_tokenizer_family() -> None:
    assert estimate_model("us.anthropic.claude-3-5-haiku-20241022-v1:0") == (
        "claude-3-5-haiku-20241022-v1:0"
    )
    arn = "arn:aws:bedrock:us-east-1:1:inference-profile/eu.anthropic.claude-3-haiku-v1:0"
    assert estimate_model(arn) == "claude-3-haiku-v1:0"
    assert estimate_model("meta.llama3-8b-instruct-v1:0") == "meta.llama3-8b-instruct-v1:0"


def test_converse_reasoning_counts_as_output_text() -> None:
    reply = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "Think.", "signature": "s"}}},
                    {"text": "Answer."},
                ],
            }
        },
        "stopReason": "end_turn",
    }
    assert converse_outcome(reply).output_text == "Think.Answer."
