"""Per-call cost of tollmeter's instrumentation, next to the uninstrumented SDK and its peers.

Every variant runs in its own interpreter, so instrumentations never stack, and makes the same
SDK calls over an in-process transport (``httpx2.MockTransport`` returning canned JSON and SSE
bytes), so network noise does not swamp the figures. Spans go through a ``BatchSpanProcessor``
into an in-memory exporter; metrics into an in-memory reader.

Inside a variant's interpreter the uninstrumented baseline and the instrumented calls are timed
alternately (instrument, time, uninstrument, time the baseline, ... in ABBA order), so both see
the same machine load; the cost is CPU time of the calling thread (``time.thread_time_ns``),
which other processes on a busy machine do not inflate. Work a ``BatchSpanProcessor`` does on
its own thread is not counted: it is off the application's path.

Each variant's interpreter also times the *floor* in the same rounds: the uninstrumented
call inside a bare SDK span carrying the same 13 attributes tollmeter sets, plus the three
histogram records (operation duration, input and output token usage) with the attributes
tollmeter's records carry (operation, provider, request and response model, token type). No
OpenTelemetry-based instrumentation emitting that telemetry can cost less.

Per variant, from the fastest of ``--repeats`` rounds (interference only adds time):

- ``call_us``: added microseconds per non-streaming call;
- ``stream_us``: added microseconds per streaming call of ``--chunks`` content chunks;
- ``per_chunk_us``: added microseconds per streamed chunk (the slope between streams of
  ``--chunks`` and ``--chunks + EXTRA_CHUNKS`` chunks), over bare iteration of the SDK stream;
- ``floor_call_us``/``floor_stream_us``: what the floor adds, ``call_to_floor``: the
  instrumented call's total CPU over the floor's (1.0 would be the floor itself), and
  ``added_to_floor``: ``call_us`` over ``floor_call_us``, the figure the goal of at most 1.2
  is stated in;
- ``call_us_spread``: the added cost per call in every round (min, median, max of the
  round-by-round differences), to show how noisy the machine was.

``--instructions CHARS`` gives every call a system prompt of that many characters (the same
text each call, as applications send it), to show what instructions cost on the metered path.

``openai/thin-wrapper`` (``thin_wrapper.py``) is a reference rather than a peer: a wrapper
that only emits tollmeter's span and three records, so its ``call_us`` is the least an
OpenTelemetry wrapper of the call costs; it meters no streams.

Peers that are not installed are reported as ``"not installed"``;
``benchmarks/requirements.txt`` lists them.

Usage: ``python benchmarks/instrumentation_overhead.py [--calls N] [--repeats R]`` prints JSON.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

EXTRA_CHUNKS = 100
# Not a real model: the SDK warns on every call naming a deprecated one, which would add
# the warning machinery to both sides of the measured ratio once the name is retired.
CLAUDE = "claude-bench"


class Variant(NamedTuple):
    sdk: str
    instrumentor: str | None
    """``module:Class`` enabled for the measured calls, or ``None``."""
    native_spans: bool
    """Whether the Anthropic SDK's own spans are on for the measured calls."""
    baseline_native_spans: bool = False
    env: tuple[tuple[str, str], ...] = ()
    """Extra environment of the variant's interpreter."""


TOLLMETER_OPENAI = "tollmeter.instrumentation.openai:OpenAIInstrumentor"
TOLLMETER_ANTHROPIC = "tollmeter.instrumentation.anthropic:AnthropicInstrumentor"
OPENLLMETRY_OPENAI = "opentelemetry.instrumentation.openai:OpenAIInstrumentor"

VARIANTS: dict[str, Variant] = {
    "openai/tollmeter": Variant("openai", TOLLMETER_OPENAI, False),
    "openai/opentelemetry-openai-v2": Variant(
        "openai", "opentelemetry.instrumentation.openai_v2:OpenAIInstrumentor", False
    ),
    "openai/openllmetry": Variant("openai", OPENLLMETRY_OPENAI, False),
    "openai/thin-wrapper": Variant("openai", "thin_wrapper:ThinOpenAIInstrumentor", False),
    "openai/openllmetry-no-content": Variant(
        "openai", OPENLLMETRY_OPENAI, False, env=(("TRACELOOP_TRACE_CONTENT", "false"),)
    ),
    "anthropic/tollmeter": Variant("anthropic", TOLLMETER_ANTHROPIC, False),
    "anthropic/sdk-native-spans": Variant("anthropic", None, True),
    "anthropic/tollmeter-over-sdk-native-spans": Variant(
        "anthropic", TOLLMETER_ANTHROPIC, True, baseline_native_spans=True
    ),
    "anthropic/openllmetry": Variant(
        "anthropic", "opentelemetry.instrumentation.anthropic:AnthropicInstrumentor", False
    ),
}

OPENAI_PEERS = ("openai/opentelemetry-openai-v2", "openai/openllmetry")
ANTHROPIC_PEERS = ("anthropic/openllmetry",)


# -- canned responses ------------------------------------------------------------------------


def _sse(events: list[tuple[str | None, dict[str, Any]]], done: bool = False) -> bytes:
    lines = []
    for event, data in events:
        head = f"event: {event}\n" if event else ""
        lines.append(f"{head}data: {json.dumps(data)}\n\n")
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def _openai_body(stream: bool, chunks: int) -> bytes:
    usage = {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}
    base = {"id": "chatcmpl-bench", "created": 1700000000, "model": "gpt-4o-mini-2024-07-18"}
    if not stream:
        body = {
            **base,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "word " * chunks},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        return json.dumps(body).encode()
    events: list[tuple[str | None, dict[str, Any]]] = []
    chunk = {**base, "object": "chat.completion.chunk"}
    events.append(
        (None, {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    )
    for _ in range(chunks):
        events.append((None, {**chunk, "choices": [{"index": 0, "delta": {"content": "word "}}]}))
    events.append(
        (None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    )
    events.append((None, {**chunk, "choices": [], "usage": usage}))
    return _sse(events, done=True)


def _anthropic_body(stream: bool, chunks: int) -> bytes:
    message = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": CLAUDE,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": chunks,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }
    if not stream:
        body = {**message, "content": [{"type": "text", "text": "word " * chunks}]}
        return json.dumps(body).encode()
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**message["usage"], "output_tokens": 1},
    }
    events: list[tuple[str | None, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "word "},
    }
    events.extend(("content_block_delta", delta) for _ in range(chunks))
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": chunks},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return _sse(events)


def _transport(sdk: str) -> Any:
    import httpx2

    cache: dict[tuple[bool, int], bytes] = {}
    build = _openai_body if sdk == "openai" else _anthropic_body

    def handle(request: Any) -> Any:
        body = json.loads(request.content)
        stream = bool(body.get("stream"))
        chunks = int(body.get("max_tokens") or 16)
        key = (stream, chunks)
        if key not in cache:
            cache[key] = build(stream, chunks)
        content_type = "text/event-stream" if stream else "application/json"
        return httpx2.Response(200, content=cache[key], headers={"content-type": content_type})

    return httpx2.MockTransport(handle)


# -- one variant, in this process --------------------------------------------------------------


def _load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _system_prompt(chars: int) -> str:
    sentence = "You are a concise assistant for a shipping company; answer in plain English. "
    return (sentence * (chars // len(sentence) + 1))[:chars]


def _calls(
    sdk: str, native: bool, chunks: int, instructions: int = 0
) -> dict[str, Callable[[], None]]:
    import httpx2

    http_client = httpx2.Client(transport=_transport(sdk))
    system = _system_prompt(instructions)
    prompt: list[dict[str, str]] = [{"role": "user", "content": "Write a few words about the sea."}]
    if sdk == "openai":
        if system:
            prompt = [{"role": "system", "content": system}, *prompt]
        import openai

        client = openai.OpenAI(
            api_key="bench", base_url="http://bench.invalid/v1", http_client=http_client
        )

        def call() -> None:
            client.chat.completions.create(model="gpt-4o-mini", messages=prompt, max_tokens=16)

        def stream(size: int) -> Callable[[], None]:
            def run() -> None:
                for _ in client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=prompt,
                    max_tokens=size,
                    stream=True,
                    stream_options={"include_usage": True},
                ):
                    pass

            return run

    else:
        import anthropic

        client_a = anthropic.Anthropic(
            api_key="bench",
            base_url="http://bench.invalid",
            http_client=http_client,
            open_telemetry=None if native else False,
        )

        extra: dict[str, Any] = {"system": system} if system else {}

        def call() -> None:
            client_a.messages.create(model=CLAUDE, max_tokens=16, messages=prompt, **extra)

        def stream(size: int) -> Callable[[], None]:
            def run() -> None:
                for _ in client_a.messages.create(
                    model=CLAUDE, max_tokens=size, messages=prompt, stream=True, **extra
                ):
                    pass

            return run

    return {"call": call, "stream": stream(chunks), "stream_long": stream(chunks + EXTRA_CHUNKS)}


_FLOOR_REQUEST: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.request.max_tokens": 16,
    "server.address": "bench.invalid",
    "server.port": 443,
}
_FLOOR_RESPONSE: dict[str, Any] = {
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.response.id": "chatcmpl-bench",
    "gen_ai.response.finish_reasons": ["stop"],
    "gen_ai.usage.input_tokens": 12,
    "gen_ai.usage.output_tokens": 16,
    "gen_ai.usage.cache_read.input_tokens": 0,
    "tollmeter.usage.source": "provider",
}


def _floor(plan: dict[str, Callable[[], None]]) -> dict[str, Callable[[], None]]:
    """``plan``'s calls, each in a bare span with 13 attributes plus three histogram records,
    the attributes of each what tollmeter sets."""
    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind

    tracer = trace.get_tracer("bench.floor")
    meter = metrics.get_meter("bench.floor")
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    # The attributes tollmeter's records carry: the conventions' required and conditionally
    # required ones, and the response model.
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    }
    inputs = {**base, "gen_ai.token.type": "input"}
    outputs = {**base, "gen_ai.token.type": "output"}

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            started = time.perf_counter()
            span = tracer.start_span(
                "chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=_FLOOR_REQUEST
            )
            fn()
            span.set_attributes(_FLOOR_RESPONSE)
            span.end()
            duration.record(time.perf_counter() - started, base)
            tokens.record(12, inputs)
            tokens.record(16, outputs)

        return run

    return {kind: wrap(fn) for kind, fn in plan.items()}


def _cpu_us(fn: Callable[[], None], calls: int) -> float:
    """Mean CPU microseconds of the calling thread per call of ``fn``."""
    gc.collect()
    start = time.thread_time_ns()
    for _ in range(calls):
        fn()
    return (time.thread_time_ns() - start) / calls / 1000


def run_variant(
    name: str, calls: int, repeats: int, chunks: int, instructions: int = 0
) -> dict[str, Any]:
    variant = VARIANTS[name]
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    processor = BatchSpanProcessor(exporter)
    tracer_provider.add_span_processor(processor)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))

    instrumentor: Any = None
    if variant.instrumentor is not None:
        try:
            instrumentor = _load(variant.instrumentor)()
        except ImportError:
            return {"status": "not installed"}

    stream_calls = max(1, calls // 4)
    plans = {
        "baseline": _calls(variant.sdk, variant.baseline_native_spans, chunks, instructions),
        "measured": _calls(variant.sdk, variant.native_spans, chunks, instructions),
        "floor": _floor(_calls(variant.sdk, variant.baseline_native_spans, chunks, instructions)),
    }
    samples: dict[str, dict[str, list[float]]] = {
        which: {"call": [], "stream": [], "stream_long": []} for which in plans
    }

    def measure(which: str) -> None:
        if which == "measured" and instrumentor is not None:
            instrumentor.instrument(tracer_provider=tracer_provider)
        try:
            fns = plans[which]
            for fn in fns.values():
                for _ in range(3):
                    fn()
            samples[which]["call"].append(_cpu_us(fns["call"], calls))
            samples[which]["stream"].append(_cpu_us(fns["stream"], stream_calls))
            samples[which]["stream_long"].append(_cpu_us(fns["stream_long"], stream_calls))
        finally:
            if which == "measured" and instrumentor is not None:
                instrumentor.uninstrument()
            processor.force_flush()
            exporter.clear()

    kinds = ("baseline", "floor", "measured")
    for round_ in range(repeats):
        # Rotate, then reverse every other round, so each kind runs early and late alike.
        order = kinds[round_ % 3 :] + kinds[: round_ % 3]
        for which in order if round_ % 2 == 0 else tuple(reversed(order)):
            measure(which)

    # Interference from other processes only ever adds time, so the fastest round of each
    # kind is the best estimate of its cost.
    def fastest(which: str, kind: str) -> float:
        return min(samples[which][kind])

    def per_chunk(which: str) -> float:
        return (fastest(which, "stream_long") - fastest(which, "stream")) / EXTRA_CHUNKS

    added = sorted(
        m - b for m, b in zip(samples["measured"]["call"], samples["baseline"]["call"], strict=True)
    )

    return {
        "status": "ok",
        "baseline_call_us": round(fastest("baseline", "call"), 2),
        "baseline_stream_us": round(fastest("baseline", "stream"), 2),
        "baseline_per_chunk_us": round(per_chunk("baseline"), 3),
        "call_us": round(fastest("measured", "call") - fastest("baseline", "call"), 2),
        "stream_us": round(fastest("measured", "stream") - fastest("baseline", "stream"), 2),
        "per_chunk_us": round(per_chunk("measured") - per_chunk("baseline"), 3),
        "floor_call_us": round(fastest("floor", "call") - fastest("baseline", "call"), 2),
        "floor_stream_us": round(fastest("floor", "stream") - fastest("baseline", "stream"), 2),
        "call_to_floor": round(fastest("measured", "call") / fastest("floor", "call"), 3),
        "added_to_floor": round(
            (fastest("measured", "call") - fastest("baseline", "call"))
            / (fastest("floor", "call") - fastest("baseline", "call")),
            3,
        ),
        "call_us_spread": [
            round(added[0], 1),
            round(added[len(added) // 2], 1),
            round(added[-1], 1),
        ],
    }


# -- the whole comparison --------------------------------------------------------------------


def _child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, **dict(VARIANTS[name].env)}
    env.pop("ANTHROPIC_OPEN_TELEMETRY", None)
    command = [
        sys.executable,
        __file__,
        "--variant",
        name,
        "--calls",
        str(args.calls),
        "--repeats",
        str(args.repeats),
        "--chunks",
        str(args.chunks),
        "--instructions",
        str(args.instructions),
    ]
    return run_child(command, env)


def run_child(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """The JSON object a benchmark's child interpreter prints last, or its failure."""
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        return {"status": "failed", "error": done.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _ratios(
    results: dict[str, dict[str, Any]], ours: str, peers: tuple[str, ...]
) -> dict[str, Any]:
    """Our added cost divided by each peer's (below 1 means cheaper than the peer)."""
    ratios: dict[str, Any] = {}
    if results.get(ours, {}).get("status") != "ok":
        return ratios
    for peer in peers:
        if results.get(peer, {}).get("status") != "ok":
            continue
        ratios[peer] = {
            key: round(results[ours][key] / results[peer][key], 3)
            if results[peer][key] > 0
            else None
            for key in ("call_us", "stream_us", "per_chunk_us")
        }
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="non-streaming calls per sample")
    parser.add_argument("--repeats", type=int, default=8, help="alternating rounds per variant")
    parser.add_argument("--chunks", type=int, default=10, help="content chunks per stream")
    parser.add_argument(
        "--instructions", type=int, default=0, help="characters of system prompt per call"
    )
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="run one variant here")
    parser.add_argument("--only", nargs="*", default=None, help="variants to compare")
    args = parser.parse_args()
    if args.variant:
        result = run_variant(args.variant, args.calls, args.repeats, args.chunks, args.instructions)
        print(json.dumps(result))
        return
    names = args.only or list(VARIANTS)
    results = {name: _child(name, args) for name in names}
    report = {
        "benchmark": "instrumentation_overhead",
        "unit": "CPU microseconds added on the calling thread (fastest of alternating rounds)",
        "python": sys.version.split()[0],
        "calls": args.calls,
        "repeats": args.repeats,
        "chunks": args.chunks,
        "instructions": args.instructions,
        "variants": results,
        "ratio_to_peers": {
            "openai/tollmeter": _ratios(results, "openai/tollmeter", OPENAI_PEERS),
            "anthropic/tollmeter": _ratios(results, "anthropic/tollmeter", ANTHROPIC_PEERS),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
