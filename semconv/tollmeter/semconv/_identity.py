"""What a span is: its provider, operation and models, read across instrumentation dialects."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from tollmeter.semconv import attributes as attrs
from tollmeter.semconv.attributes import GenAiOperationNameValues as Op
from tollmeter.semconv.attributes import GenAiProviderNameValues as Provider

__all__ = ["METERED_OPERATIONS", "is_metered_operation", "model_of", "operation_of", "provider_of"]

METERED_OPERATIONS: Final[frozenset[str]] = frozenset(
    {Op.CHAT, Op.TEXT_COMPLETION, Op.GENERATE_CONTENT, Op.EMBEDDINGS}
)
"""Operations that are model calls and therefore metered. Agent, workflow and tool spans
are not: their usage, where they report any, repeats that of the model calls under them."""

# Spellings seen in gen_ai.system (deprecated OTel values), OpenLLMetry (capitalised vendor
# names) and OpenInference (llm.provider / llm.system), keyed after _spelling().
_PROVIDERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "az.ai.openai": Provider.AZURE_AI_OPENAI,
        "azure": Provider.AZURE_AI_OPENAI,
        "azure_openai": Provider.AZURE_AI_OPENAI,
        "az.ai.inference": Provider.AZURE_AI_INFERENCE,
        "aws": Provider.AWS_BEDROCK,
        "bedrock": Provider.AWS_BEDROCK,
        "aws_bedrock": Provider.AWS_BEDROCK,
        "vertex_ai": Provider.GCP_VERTEX_AI,
        "vertexai": Provider.GCP_VERTEX_AI,
        "gemini": Provider.GCP_GEMINI,
        "google": Provider.GCP_GEN_AI,
        "mistralai": Provider.MISTRAL_AI,
        "mistral": Provider.MISTRAL_AI,
        "watsonx": Provider.IBM_WATSONX_AI,
        "xai": Provider.X_AI,
    }
)

# llm.request.type (OpenLLMetry), openinference.span.kind, traceloop.span.kind values.
_OPERATIONS: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "llm.request.type": {
            "chat": Op.CHAT,
            "completion": Op.TEXT_COMPLETION,
            "embedding": Op.EMBEDDINGS,
            "rerank": Op.RERANK,
        },
        "openinference.span.kind": {
            "LLM": Op.CHAT,
            "EMBEDDING": Op.EMBEDDINGS,
            "RERANKER": Op.RERANK,
            "AGENT": Op.INVOKE_AGENT,
            "CHAIN": Op.WORKFLOW,
            "TOOL": Op.EXECUTE_TOOL,
        },
        "traceloop.span.kind": {
            "workflow": Op.WORKFLOW,
            "agent": Op.INVOKE_AGENT,
            "tool": Op.EXECUTE_TOOL,
        },
    }
)


def provider_of(attributes: Mapping[str, object]) -> str | None:
    """The provider as a ``gen_ai.provider.name`` value, or None when no attribute names one.

    Reads ``gen_ai.provider.name``, else ``gen_ai.system``, else ``llm.provider`` or
    ``llm.system``; well-known spellings become the OpenTelemetry value (``Azure`` is
    ``azure.ai.openai``, ``vertexai`` is ``gcp.vertex_ai``), others are lower-cased.
    """
    for name in (attrs.GEN_AI_PROVIDER_NAME, *attrs.ALIASES[attrs.GEN_AI_PROVIDER_NAME]):
        value = _text(attributes.get(name))
        if value is not None:
            key = _spelling(value)
            return _PROVIDERS.get(key, key)
    return None


def operation_of(attributes: Mapping[str, object]) -> str | None:
    """The OpenTelemetry operation name of a span, or None when it is no known GenAI operation.

    ``gen_ai.operation.name`` is taken as it is; OpenLLMetry's ``llm.request.type``,
    OpenInference's ``openinference.span.kind`` and ``traceloop.span.kind`` are translated.
    """
    operation = _text(attributes.get(attrs.GEN_AI_OPERATION_NAME))
    if operation is not None:
        return operation
    for name in attrs.ALIASES[attrs.GEN_AI_OPERATION_NAME]:
        value = _text(attributes.get(name))
        if value is not None and (known := _OPERATIONS.get(name, {}).get(value)) is not None:
            return known
    return None


def is_metered_operation(operation: str | None) -> bool:
    """Whether spans of ``operation`` are model calls whose usage is metered."""
    return operation in METERED_OPERATIONS


def model_of(attributes: Mapping[str, object]) -> tuple[str | None, str | None]:
    """The (request model, response model) of a span; either is None when not reported."""
    return (
        _first_text(attributes, attrs.GEN_AI_REQUEST_MODEL),
        _first_text(attributes, attrs.GEN_AI_RESPONSE_MODEL),
    )


def _first_text(attributes: Mapping[str, object], name: str) -> str | None:
    for candidate in (name, *attrs.ALIASES.get(name, ())):
        value = _text(attributes.get(candidate))
        if value is not None:
            return value
    return None


def _text(value: object) -> str | None:
    """A usable string value: other types and blank strings count as absent."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _spelling(value: str) -> str:
    return value.lower().replace(" ", "_").replace("-", "_")
