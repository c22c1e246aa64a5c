"""Streaming without ``include_usage``: the provider reports no usage, tollmeter estimates it.

An OpenAI chat completion streamed without ``stream_options={"include_usage": True}``
carries no token counts at all. tollmeter counts the prompt and the streamed reply with
tiktoken and marks the span ``tollmeter.usage.source=estimate``, so the call is still
metered and the estimate is told apart from reported usage (``usage_source`` in the
usage API and the Parquet export).

The offline fake LLM server knows the exact usage of every call and returns it in the
``x-fake-usage`` response header even when the stream reports none; the script compares
the estimate with it.

    tollmeter fake-llm --port 8300 &
    tollmeter collector &
    OPENAI_BASE_URL=http://127.0.0.1:8300/v1 \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
        python examples/streaming_estimate/app.py
    tollmeter usage --tenant news-digest
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import openai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tollmeter

PROMPTS = (
    "Summarize today's three most important headlines about energy prices.",
    "Write a two-paragraph digest of this week's central bank decisions, "
    "for readers who have no background in economics.",
)


def stream_reply(client: openai.OpenAI, prompt: str) -> dict[str, int] | None:
    """Stream one reply (printing it) and return the exact usage the fake server measured
    (``None`` from a real provider, which does not send it)."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=200,
        stream=True,
    )
    measured = raw.headers.get("x-fake-usage")
    truth: dict[str, int] | None = json.loads(measured) if measured else None
    with raw.parse() as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
    print()
    return truth


def model_call_attributes(spans: InMemorySpanExporter) -> Mapping[str, object]:
    """Attributes of the latest span that carries token usage."""
    for span in reversed(spans.get_finished_spans()):
        values = span.attributes or {}
        if "gen_ai.usage.input_tokens" in values:
            return values
    raise LookupError("no span with token usage was recorded")


def error_percent(estimate: object, actual: int) -> str:
    if not isinstance(estimate, int):
        return "n/a"
    return f"{100 * (estimate - actual) / actual:+.1f} %"


def main() -> None:
    telemetry = tollmeter.configure(service_name="streaming-estimate-example")
    spans = InMemorySpanExporter()
    if isinstance(telemetry.tracer_provider, TracerProvider):
        telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    try:
        with (
            openai.OpenAI(
                api_key=os.environ.get("OPENAI_API_KEY", "unused-by-the-fake-server"),
                max_retries=0,
            ) as client,
            tollmeter.attribute(tenant="news-digest", feature="stream"),
        ):
            for number, prompt in enumerate(PROMPTS, start=1):
                truth = stream_reply(client, prompt)
                values = model_call_attributes(spans)
                source = values.get("tollmeter.usage.source")
                print(f"call {number}: tollmeter.usage.source = {source}")
                for kind in ("input", "output"):
                    estimate = values.get(f"gen_ai.usage.{kind}_tokens")
                    if truth is None:
                        print(f"call {number}: {kind} tokens estimated {estimate}")
                        continue
                    actual = truth[f"{kind}_tokens"]
                    print(
                        f"call {number}: {kind} tokens estimated {estimate}, actual {actual}, "
                        f"error {error_percent(estimate, actual)}"
                    )
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
