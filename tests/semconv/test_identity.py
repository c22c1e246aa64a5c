"""provider_of, operation_of and model_of across dialects."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tollmeter.semconv import (
    METERED_OPERATIONS,
    is_metered_operation,
    model_of,
    operation_of,
    provider_of,
    usage_from_attributes,
)
from tollmeter.semconv import attributes as attrs


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"gen_ai.provider.name": "anthropic"}, "anthropic"),
        ({"gen_ai.provider.name": "aws.bedrock", "gen_ai.system": "anthropic"}, "aws.bedrock"),
        ({"gen_ai.system": "openai"}, "openai"),
        ({"gen_ai.system": "az.ai.inference"}, "azure.ai.inference"),
        ({"gen_ai.system": "az.ai.openai"}, "azure.ai.openai"),
        ({"gen_ai.system": "vertex_ai"}, "gcp.vertex_ai"),
        ({"gen_ai.system": "gemini"}, "gcp.gemini"),
        ({"gen_ai.system": "xai"}, "x_ai"),
        # OpenLLMetry before the current names used capitalised vendor names.
        ({"gen_ai.system": "OpenAI"}, "openai"),
        ({"gen_ai.system": "Anthropic"}, "anthropic"),
        ({"gen_ai.system": "MistralAI"}, "mistral_ai"),
        ({"gen_ai.system": "Vertex AI"}, "gcp.vertex_ai"),
        ({"gen_ai.system": "Bedrock"}, "aws.bedrock"),
        ({"gen_ai.system": "Watsonx"}, "ibm.watsonx.ai"),
        # openinference-instrumentation-anthropic 3.1.0 sets both; llm.provider wins.
        ({"llm.provider": "anthropic", "llm.system": "anthropic"}, "anthropic"),
        ({"llm.provider": "azure", "llm.system": "openai"}, "azure.ai.openai"),
        ({"llm.system": "vertexai"}, "gcp.vertex_ai"),
        ({"llm.provider": "google"}, "gcp.gen_ai"),
        ({"llm.provider": "Ollama"}, "ollama"),
        ({"gen_ai.provider.name": "", "gen_ai.system": "  openai "}, "openai"),
        ({"gen_ai.provider.name": 7, "llm.system": "cohere"}, "cohere"),
        ({}, None),
        ({"gen_ai.provider.name": ["openai"]}, None),
    ],
)
def test_provider_of(attributes: Mapping[str, object], expected: str | None) -> None:
    assert provider_of(attributes) == expected


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"gen_ai.operation.name": "chat"}, "chat"),
        ({"gen_ai.operation.name": "embeddings", "llm.request.type": "chat"}, "embeddings"),
        ({"gen_ai.operation.name": "invoke_agent"}, "invoke_agent"),
        ({"llm.request.type": "chat"}, "chat"),
        ({"llm.request.type": "completion"}, "text_completion"),
        ({"llm.request.type": "embedding"}, "embeddings"),
        ({"llm.request.type": "rerank"}, "rerank"),
        ({"llm.request.type": "unknown"}, None),
        ({"openinference.span.kind": "LLM"}, "chat"),
        ({"openinference.span.kind": "EMBEDDING"}, "embeddings"),
        ({"openinference.span.kind": "AGENT"}, "invoke_agent"),
        ({"openinference.span.kind": "CHAIN"}, "workflow"),
        ({"openinference.span.kind": "TOOL"}, "execute_tool"),
        ({"openinference.span.kind": "RETRIEVER"}, None),
        ({"traceloop.span.kind": "workflow"}, "workflow"),
        ({"traceloop.span.kind": "task"}, None),
        ({"openinference.span.kind": "RETRIEVER", "traceloop.span.kind": "tool"}, "execute_tool"),
        # anthropic 2.12 native span for count_tokens carries no operation: it is not a model call.
        ({"gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude"}, None),
        ({"gen_ai.operation.name": 3}, None),
        ({}, None),
    ],
)
def test_operation_of(attributes: Mapping[str, object], expected: str | None) -> None:
    assert operation_of(attributes) == expected


def test_metered_operations_are_model_calls_only() -> None:
    assert {"chat", "text_completion", "generate_content", "embeddings"} == METERED_OPERATIONS
    for operation in METERED_OPERATIONS:
        assert is_metered_operation(operation)
    for operation in ("invoke_agent", "create_agent", "execute_tool", "workflow", "rerank", None):
        assert not is_metered_operation(operation)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        (
            {"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06"},
            ("gpt-4o", "gpt-4o-2024-08-06"),
        ),
        # openinference-instrumentation-anthropic 3.1.0
        (
            {
                "llm.request.model_name": "claude-sonnet-4-5",
                "llm.model_name": "claude-sonnet-4-5",
                "llm.response.model_name": "claude-sonnet-4-5-20250929",
            },
            ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
        ),
        # openinference-instrumentation-openai 0.1.66: only the response's model
        ({"llm.model_name": "gpt-4o-2024-08-06"}, (None, "gpt-4o-2024-08-06")),
        ({"embedding.model_name": "text-embedding-3-small"}, (None, "text-embedding-3-small")),
        ({"llm.request.model": "gpt-3.5-turbo", "llm.response.model": "x"}, ("gpt-3.5-turbo", "x")),
        ({"gen_ai.request.model": "", "llm.request.model": "m"}, ("m", None)),
        ({"gen_ai.request.model": 1}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_model_of(
    attributes: Mapping[str, object], expected: tuple[str | None, str | None]
) -> None:
    assert model_of(attributes) == expected


def _reads(canonical: str, alias: str) -> bool:
    probes = {
        attrs.GEN_AI_PROVIDER_NAME: lambda: provider_of({alias: "openai"}) == "openai",
        attrs.GEN_AI_REQUEST_MODEL: lambda: model_of({alias: "m"})[0] == "m",
        attrs.GEN_AI_RESPONSE_MODEL: lambda: model_of({alias: "m"})[1] == "m",
        attrs.GEN_AI_OPERATION_NAME: lambda: any(
            operation_of({alias: value}) is not None
            for value in ("chat", "LLM", "workflow", "embedding")
        ),
    }
    probe = probes.get(canonical, lambda: usage_from_attributes({alias: 5}) is not None)
    return probe()


@pytest.mark.parametrize(
    ("canonical", "alias"),
    [(name, alias) for name, aliases in attrs.ALIASES.items() for alias in aliases],
)
def test_every_registered_alias_is_read(canonical: str, alias: str) -> None:
    assert _reads(canonical, alias)
