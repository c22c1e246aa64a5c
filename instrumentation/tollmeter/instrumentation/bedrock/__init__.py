"""Instrumentation of the Amazon Bedrock runtime through boto3/botocore.

Usage::

    from tollmeter.instrumentation.bedrock import BedrockInstrumentor

    BedrockInstrumentor().instrument()          # global tracer and meter providers
    client = boto3.client("bedrock-runtime")
    with tollmeter.instrumentation.attribute(tenant="acme"):
        client.converse(modelId="amazon.nova-micro-v1:0", messages=[...])

or without code: ``opentelemetry-instrument python app.py`` (entry point
``tollmeter_bedrock``).

Metered, on every ``bedrock-runtime`` client whenever it was created: ``converse``,
``converse_stream``, ``invoke_model`` and ``invoke_model_with_response_stream``. Each call
yields one CLIENT span ``"{operation} {modelId}"`` with ``gen_ai.provider.name=aws.bedrock``,
the model id as ``gen_ai.request.model``, ``server.address``/``server.port``,
``gen_ai.request.max_tokens`` and ``gen_ai.request.stream`` where given, the usage with
``gen_ai.usage.input_tokens`` *including* cache reads and writes (Bedrock reports them
apart from ``inputTokens``), the finish reasons, the attribution in effect at request start,
and the ``gen_ai.client.*`` metrics. The operation is ``chat`` for Converse and message
bodies, ``text_completion`` for a bare ``prompt``/``inputText`` body, ``embeddings`` for an
embedding model. ``invoke_model`` bodies are read in the vendor's format (Anthropic, Meta
Llama, Amazon Nova and Titan; see ``extract``), falling back on Bedrock's own token-count
headers and invocation metrics for any other vendor. When nothing reports usage (a stream
cut short, a proxy that strips it) the counts are estimated with tiktoken and flagged
``tollmeter.usage.source=estimate``.

The span of a streamed call, and of ``invoke_model`` (whose body the caller reads later),
ends when the caller is done with the stream or body: read to its end, closed, or dropped
(then ``tollmeter.usage.abandoned=true``). Prompt and reply text is recorded only when
content capture is on (``_content``).
botocore's exceptions propagate unchanged; tollmeter's own failures are logged once and
swallowed; ``suppress_instrumentation`` is honoured. aiobotocore's async clients are not
metered.

Zero-code: ``opentelemetry-instrument`` also enables OpenTelemetry's own botocore
instrumentation when it is installed; its Bedrock extension adds a GenAI span with usage of
its own for the same call, and Converse has no response id by which the collector could
count the two once. Keep one of them for Bedrock: ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=
botocore`` (which also ends its spans for other AWS services) or ``tollmeter_bedrock``.

Options of ``instrument()`` (keyword-only): ``tracer_provider``, ``meter_provider``,
``metric_tenant_attribute=False`` (see ``OpenAIInstrumentor``).
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap

from tollmeter.instrumentation._instrumentor import telemetry_for
from tollmeter.instrumentation.bedrock.package import MAKE_API_CALL, _instruments
from tollmeter.instrumentation.bedrock.patch import make_api_call_wrapper

__all__ = ["BedrockInstrumentor"]


class BedrockInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Meters every Bedrock runtime model call made through boto3; see the module docstring."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        telemetry = telemetry_for(__name__, kwargs)
        module, method = MAKE_API_CALL
        wrapt.wrap_function_wrapper(module, method, make_api_call_wrapper(telemetry))

    def _uninstrument(self, **kwargs: Any) -> None:
        module, method = MAKE_API_CALL
        owner, name = method.split(".")
        unwrap(getattr(importlib.import_module(module), owner), name)
