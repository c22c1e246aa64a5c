"""Anthropic prompt caching, metered: the first call writes the cache, the second reads it.

A long system prompt carries a ``cache_control`` breakpoint. The first request pays for
writing it to the cache (``gen_ai.usage.cache_write.input_tokens``); the second, with
the same system prompt and another question, reads it back
(``gen_ai.usage.cache_read.input_tokens``). Anthropic's own ``input_tokens`` leaves
both out; the span's ``gen_ai.usage.input_tokens`` includes them, as OpenTelemetry
defines it, so totals add up the same way for every provider.

Run it against the offline fake LLM server and a collector::

    tollmeter fake-llm --port 8300 &
    tollmeter collector &
    ANTHROPIC_BASE_URL=http://127.0.0.1:8300 \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
        python examples/anthropic_caching/app.py
    tollmeter usage --tenant docs-team --group-by model

The span attributes are printed from an in-memory copy of each span; the same spans
go to the collector, whose usage API then shows the cache read and write tokens.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import anthropic
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tollmeter

MODEL = "claude-haiku-4-5"
# Over 1,024 tokens: shorter prefixes are never cached.
HANDBOOK = "\n".join(
    f"Section {n}: refunds above {n * 10} euros need a manager's approval and an invoice number."
    for n in range(1, 90)
)
QUESTIONS = (
    "Can I refund 120 euros without approval?",
    "Who approves a refund of 700 euros?",
)
USAGE_ATTRIBUTES = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.output_tokens",
    "tollmeter.usage.source",
)


def ask(client: anthropic.Anthropic, question: str) -> anthropic.types.Message:
    return client.messages.create(
        model=MODEL,
        max_tokens=100,
        system=[{"type": "text", "text": HANDBOOK, "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": question}],
    )


def model_call_attributes(spans: InMemorySpanExporter) -> tuple[str, Mapping[str, object]]:
    """Name and attributes of the latest span that carries token usage."""
    for span in reversed(spans.get_finished_spans()):
        values = span.attributes or {}
        if "gen_ai.usage.input_tokens" in values:
            return span.name, values
    raise LookupError("no span with token usage was recorded")


def main() -> None:
    telemetry = tollmeter.configure(service_name="anthropic-caching-example")
    spans = InMemorySpanExporter()
    if isinstance(telemetry.tracer_provider, TracerProvider):
        telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    try:
        with (
            anthropic.Anthropic(
                api_key=os.environ.get("ANTHROPIC_API_KEY", "unused-by-the-fake-server"),
                max_retries=0,
            ) as client,
            tollmeter.attribute(tenant="docs-team", feature="handbook-qa"),
        ):
            for number, question in enumerate(QUESTIONS, start=1):
                usage = ask(client, question).usage
                print(
                    f"call {number}: provider usage input_tokens={usage.input_tokens} "
                    f"cache_creation_input_tokens={usage.cache_creation_input_tokens} "
                    f"cache_read_input_tokens={usage.cache_read_input_tokens} "
                    f"output_tokens={usage.output_tokens}"
                )
                name, values = model_call_attributes(spans)
                print(f"call {number}: span {name!r}")
                for attribute in USAGE_ATTRIBUTES:
                    print(f"    {attribute} = {values.get(attribute)}")
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
