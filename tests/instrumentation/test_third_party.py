"""Other OpenAI instrumentations' spans get the attribution through the span processor."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetryInstrumentor
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OpenAIV2Instrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tollmeter.instrumentation import AttributionSpanProcessor, attribute
from tollmeter.semconv import attributes as attrs


@pytest.fixture(
    params=[
        pytest.param(OpenAIV2Instrumentor, id="openai-v2"),
        # OpenLLMetry's own models still use pydantic's deprecated class-based config.
        pytest.param(
            OpenLLMetryInstrumentor,
            id="openllmetry",
            marks=pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
        ),
    ]
)
def third_party(request: pytest.FixtureRequest) -> Iterator[tuple[InMemorySpanExporter, Any]]:
    saved = _openai_members()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(AttributionSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor: BaseInstrumentor = request.param()
    instrumentor.instrument(tracer_provider=provider)
    yield exporter, instrumentor
    instrumentor.uninstrument()
    provider.shutdown()
    # OpenLLMetry's uninstrument() leaves some of its wrappers in place; put the SDK back
    # so that later tests see it untouched.
    for (owner, name), member in saved.items():
        if vars(owner).get(name) is not member:
            setattr(owner, name, member)


def _openai_members() -> dict[tuple[Any, str], Any]:
    """Every class member and module function of the loaded ``openai`` modules."""
    members: dict[tuple[Any, str], Any] = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "openai" or module_name.startswith("openai.")):
            continue
        for name, value in list(vars(module).items()):
            if callable(value) and getattr(value, "__module__", None) == module_name:
                members[(module, name)] = value
            # ``type(value)``, not ``isinstance``: the latter loads the SDK's lazy proxies
            # (numpy, in older releases), which fail when the optional library is absent.
            if issubclass(type(value), type) and value.__module__ == module_name:
                for member_name, member in list(vars(value).items()):
                    members[(value, member_name)] = member
    return members


def test_third_party_spans_carry_the_attribution(
    third_party: tuple[InMemorySpanExporter, Any], fake_llm: Any
) -> None:
    exporter, _ = third_party
    with (
        openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="k", max_retries=0) as client,
        attribute(tenant="acme", project="search", feature="faq"),
    ):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello there"}]
        )
    (span,) = exporter.get_finished_spans()  # "chat gpt-4o-mini" or "openai.chat"
    values = dict(span.attributes or {})
    assert values[attrs.TOLLMETER_TENANT_ID] == "acme"
    assert values[attrs.TOLLMETER_PROJECT_ID] == "search"
    assert values[attrs.TOLLMETER_FEATURE] == "faq"
