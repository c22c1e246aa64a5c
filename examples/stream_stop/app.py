"""A runaway stream cut at its budget: the reply stops where the output tokens run out.

The app streams a chat completion without ``max_tokens`` inside
``tollmeter.budget(max_output_tokens=120)``. Nothing caps the reply up front, so the
instrumentation counts the streamed output as it arrives; when it reaches the 120 tokens
the budget has left, it closes the stream (releasing the HTTP connection), ends the span
with what was read, flagged ``tollmeter.stream.stopped=true``, and raises
``BudgetExceeded`` at the next chunk. A second stream under ``overrun="warn"`` is only
flagged and read to its end.

The fake LLM server is asked for a 2,000-token reply with its ``x-fake-reply-tokens``
header (a real provider ignores it and answers at its own length).

    tollmeter fake-llm --port 8300 &
    tollmeter collector &
    OPENAI_BASE_URL=http://127.0.0.1:8300/v1 \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
        python examples/stream_stop/app.py
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import openai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tollmeter
from tollmeter.instrumentation.errors import BudgetExceeded

MODEL = "gpt-4o-mini"
BUDGET = 120
LONG_REPLY = {"x-fake-reply-tokens": "2000"}
PROMPT = [{"role": "user", "content": "Tell me everything about the history of tea."}]


def stream_story(client: openai.OpenAI) -> int:
    """Print a streamed reply; return the chunks with text that were read."""
    chunks = 0
    stream = client.chat.completions.create(
        model=MODEL, messages=PROMPT, stream=True, extra_headers=LONG_REPLY
    )
    with stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                chunks += 1
    return chunks


def last_call(spans: InMemorySpanExporter) -> Mapping[str, object]:
    for span in reversed(spans.get_finished_spans()):
        values = span.attributes or {}
        if "gen_ai.usage.output_tokens" in values:
            return values
    raise LookupError("no span with token usage was recorded")


def main() -> None:
    telemetry = tollmeter.configure(service_name="stream-stop-example")
    spans = InMemorySpanExporter()
    if isinstance(telemetry.tracer_provider, TracerProvider):
        telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    client = openai.OpenAI(api_key=os.environ.get("OPENAI_API_KEY", "sk-fake"))
    try:
        with tollmeter.attribute(tenant="story-bot"):
            with tollmeter.budget(max_output_tokens=BUDGET):
                try:
                    stream_story(client)
                    print("stop: the stream ended by itself")
                except BudgetExceeded as exc:
                    print(f"stop: BudgetExceeded after {exc.used} of {exc.limit} output tokens")
            values = last_call(spans)
            for key in ("gen_ai.usage.output_tokens", "tollmeter.stream.stopped"):
                print(f"stop: {key} = {values.get(key)}")
            with tollmeter.budget(max_output_tokens=BUDGET, overrun="warn"):
                read = stream_story(client)
            values = last_call(spans)
            print(f"warn: read {read} chunks")
            for key in ("gen_ai.usage.output_tokens", "tollmeter.stream.stopped"):
                print(f"warn: {key} = {values.get(key)}")
    finally:
        client.close()
        telemetry.shutdown()


if __name__ == "__main__":
    main()
