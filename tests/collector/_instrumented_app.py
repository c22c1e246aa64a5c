"""An application instrumented by tollmeter that exports its spans over OTLP/gRPC to a
real collector with an ingest key, keeping a copy of each span it sent."""

from __future__ import annotations

from typing import Any

import openai
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.collector.conftest import RunningCollector
from tollmeter.instrumentation.openai import OpenAIInstrumentor


class InstrumentedApp:
    """The real OpenAI SDK against the fake LLM server, instrumented, exporting with
    ``key``; ``seen`` holds what was exported."""

    def __init__(self, collector: RunningCollector, fake_llm: Any, key: str) -> None:
        self.exporter = OTLPSpanExporter(
            endpoint=collector.grpc_endpoint,
            insecure=True,
            headers={"x-tollmeter-key": key},
            timeout=10,
        )
        self.seen = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.provider.add_span_processor(SimpleSpanProcessor(self.seen))
        self.instrumentor = OpenAIInstrumentor()
        self.instrumentor.instrument(tracer_provider=self.provider, meter_provider=MeterProvider())
        self.client = openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=0)

    def close(self) -> None:
        self.client.close()
        self.instrumentor.uninstrument()
        self.provider.shutdown()
