"""Hidden input tokens of Anthropic, Gemini and Bedrock Converse calls (real SDKs, fake server).

Each equals tiktoken's count of the system instruction's text plus each tool definition as
compact JSON, in the encoding the estimates use for the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest
from google import genai
from google.genai import types
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from tests.instrumentation.bedrock.conftest import make_client
from tollmeter.fakellm._tokens import count
from tollmeter.instrumentation._estimate import encoding_name_for_model
from tollmeter.instrumentation.anthropic import AnthropicInstrumentor
from tollmeter.instrumentation.bedrock import BedrockInstrumentor
from tollmeter.instrumentation.bedrock.extract import estimate_model
from tollmeter.instrumentation.google_genai import GoogleGenAIInstrumentor
from tollmeter.semconv import attributes as attrs

SYSTEM = "You are a terse assistant for an online bookshop. Answer in one sentence."
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}}}
HIDDEN = attrs.TOLLMETER_USAGE_HIDDEN_INPUT_TOKENS


def _tiktoken(model: str | None, texts: list[str], tools: list[Any]) -> int:
    encoding = encoding_name_for_model(model)
    compact = [json.dumps(tool, separators=(",", ":"), sort_keys=True) for tool in tools]
    return sum(count(text, encoding) for text in (*texts, *compact))


@pytest.fixture
def instrumented(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Iterator[None]:
    instrumentors = [AnthropicInstrumentor(), GoogleGenAIInstrumentor(), BedrockInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield
    for instrumentor in instrumentors:
        instrumentor.uninstrument()


def _attributes(wait_spans: Callable[[int], tuple[ReadableSpan, ...]]) -> dict[str, Any]:
    spans = wait_spans(1)
    assert len(spans) == 1, [span.name for span in spans]
    return dict(spans[0].attributes or {})


def test_anthropic_system_blocks_and_tools(fake_llm: Any, instrumented: None, wait_spans) -> None:
    model = "claude-test-small"
    tool = {"name": "find_book", "description": "Look a book up", "input_schema": SCHEMA}
    system = [{"type": "text", "text": SYSTEM}, {"type": "text", "text": "Be brief."}]
    with anthropic.Anthropic(base_url=fake_llm.url, api_key="k", max_retries=0) as client:
        client.messages.create(
            model=model,
            max_tokens=50,
            system=system,  # type: ignore[arg-type]
            tools=[tool],  # type: ignore[list-item]
            messages=[{"role": "user", "content": "Do you have Middlemarch?"}],
        )
    values = _attributes(wait_spans)
    assert values[HIDDEN] == _tiktoken(model, [SYSTEM, "Be brief."], [tool])
    assert values[HIDDEN] < values[attrs.GEN_AI_USAGE_INPUT_TOKENS]


def test_gemini_system_instruction_and_function_declarations(
    fake_llm: Any, instrumented: None, wait_spans
) -> None:
    model = "gemini-2.5-flash"
    declaration = {"name": "find_book", "description": "Look a book up", "parameters": SCHEMA}
    with genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fake_llm.url)) as client:
        client.models.generate_content(
            model=model,
            contents="Do you have Middlemarch?",
            config={
                "system_instruction": SYSTEM,
                "tools": [{"function_declarations": [declaration]}],
            },
        )
    values = _attributes(wait_spans)
    sent = types.FunctionDeclaration.model_validate(declaration).model_dump(
        exclude_none=True, by_alias=True
    )
    assert values[HIDDEN] == _tiktoken(model, [SYSTEM], [sent])


def test_bedrock_converse_system_and_tool_specs(
    fake_llm: Any, instrumented: None, wait_spans
) -> None:
    model = "anthropic.claude-3-5-haiku-20241022-v1:0"
    spec = {"name": "find_book", "description": "Look a book up", "inputSchema": {"json": SCHEMA}}
    client = make_client(fake_llm)
    try:
        client.converse(
            modelId=model,
            system=[{"text": SYSTEM}],
            toolConfig={"tools": [{"toolSpec": spec}]},
            messages=[{"role": "user", "content": [{"text": "Do you have Middlemarch?"}]}],
        )
    finally:
        client.close()
    values = _attributes(wait_spans)
    assert values[HIDDEN] == _tiktoken(estimate_model(model), [SYSTEM], [spec])
