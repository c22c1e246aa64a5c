"""Every instrumentor reads its ``instrument()`` options the same way."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tollmeter.instrumentation.anthropic import AnthropicInstrumentor
from tollmeter.instrumentation.bedrock import BedrockInstrumentor
from tollmeter.instrumentation.google_genai import GoogleGenAIInstrumentor
from tollmeter.instrumentation.openai import OpenAIInstrumentor

INSTRUMENTORS = [
    AnthropicInstrumentor,
    BedrockInstrumentor,
    GoogleGenAIInstrumentor,
    OpenAIInstrumentor,
]


@pytest.mark.parametrize("instrumentor", INSTRUMENTORS, ids=lambda cls: cls.__name__)
def test_a_tenant_attribute_option_that_is_not_a_bool_is_refused(instrumentor):
    with pytest.raises(ValueError, match="metric_tenant_attribute must be a bool"):
        instrumentor().instrument(tracer_provider=TracerProvider(), metric_tenant_attribute="yes")
    assert not instrumentor().is_instrumented_by_opentelemetry
