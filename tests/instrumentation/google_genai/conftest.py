"""``google-genai`` clients against the fake LLM server, with the instrumentor enabled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google import genai
from google.genai import types
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from tollmeter.instrumentation.google_genai import GoogleGenAIInstrumentor


@pytest.fixture
def instrumentor(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> Iterator[GoogleGenAIInstrumentor]:
    instrumentor = GoogleGenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture
def gemini(fake_llm: Any) -> Iterator[genai.Client]:
    """A Gemini API client of the fake server (not instrumented by itself)."""
    options = types.HttpOptions(base_url=fake_llm.url)
    with genai.Client(api_key="test-key", http_options=options) as client:
        yield client


@pytest.fixture
def client(gemini: genai.Client, instrumentor: GoogleGenAIInstrumentor) -> genai.Client:
    return gemini


@pytest.fixture
def one_span(
    wait_spans: Callable[[int], tuple[ReadableSpan, ...]],
) -> Callable[[], dict[str, Any]]:
    """The attributes of the single span of the call just made (fails if there are several)."""

    def get() -> dict[str, Any]:
        spans = wait_spans(1)
        assert len(spans) == 1, [span.name for span in spans]
        return dict(spans[0].attributes or {})

    return get


def _directives(*names: str, **headers: str) -> types.HttpOptions:
    values = {f"x-fake-{key.replace('_', '-')}": value for key, value in headers.items()}
    if names:
        values["x-fake-fault"] = ",".join(names)
    return types.HttpOptions(headers=values)


@pytest.fixture
def faults() -> Callable[..., types.HttpOptions]:
    """``faults("no-usage", disconnect_after="2")``: per-request HTTP options asking the fake
    server for ``x-fake-*`` directives."""
    return _directives


def _call(client: genai.Client, mode: str, method: str, **kwargs: Any) -> list[Any]:
    if mode == "sync":
        result = getattr(client.models, method)(**kwargs)
        return list(result) if method == "generate_content_stream" else [result]

    async def run() -> list[Any]:
        try:
            result = await getattr(client.aio.models, method)(**kwargs)
            if method == "generate_content_stream":
                return [chunk async for chunk in result]
            return [result]
        finally:
            # The SDK keeps a connection pool per event loop; this loop ends here.
            await client.aio.aclose()

    return asyncio.run(run())


@pytest.fixture
def call() -> Callable[..., list[Any]]:
    """``call(client, "sync" | "async", method, **kwargs)``: the responses of one SDK call
    through ``client.models`` or ``client.aio.models`` (a stream's chunks, read to the end)."""
    return _call
