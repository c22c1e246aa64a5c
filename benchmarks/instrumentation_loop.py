"""Per-call cost of tollmeter's wrapper with the SDK's request left out: a steadier view.

``instrumentation_overhead.py`` times whole SDK calls, whose own cost (hundreds of µs, and
noisy) dwarfs what is measured. Here the wrapper tollmeter installs on the SDK method is called
directly around a stand-in for that method, which returns a response built once (a
``ChatCompletion`` or a ``Message``), so that the figures are steady to a few tenths of a µs.
Timed in the same rounds, alternated, with the CPU time of the calling thread:

- ``floor``: the stand-in inside a bare span with the 13 attributes tollmeter sets, plus the
  three histogram records with tollmeter's metric attributes (as in the main benchmark);
- ``tollmeter``: the stand-in through tollmeter's wrapper;
- ``thin`` (OpenAI only): the stand-in through ``thin_wrapper.py``, which only emits the
  telemetry.

Each figure is CPU µs added per call over the bare stand-in (fastest of ``--repeats`` rounds),
and ``*_to_floor`` is that over the floor's. Modes, each in its own interpreter:

- ``warm``: the stand-in returns the response at once, so every call runs with hot caches;
- ``sdk_work``: the stand-in first does what the SDK does with every response, decoding its
  JSON body and validating the model from it, plus a deep copy of a few kB of request-like
  data. The SDK's work evicts the instrumentation's code and data from the CPU's caches between
  calls, which roughly doubles what each of them costs (the floor goes from about 39 to about
  48 µs here), as in the main benchmark;
- ``own``: warm, with no-op tracer and meter providers: tollmeter's own Python alone;
- ``together``: warm; each call runs the floor and then tollmeter's wrapper on no-op
  providers, to compare with the two timed apart. For reference, the floor is also followed
  by plain Python of about the same cost that does nothing of tollmeter's: a chain of 60
  distinct small functions (``plain_us`` alone, ``floor_then_plain_us`` after the floor).

Usage: ``python benchmarks/instrumentation_loop.py [--calls N] [--repeats R]`` prints JSON.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from instrumentation_overhead import (
    CLAUDE,
    _anthropic_body,
    _floor,
    _openai_body,
    _transport,
    run_child,
)

MODES = ("warm", "sdk_work", "own", "together")
SDKS = ("openai", "anthropic")
_REQUEST_LIKE = [{f"field-{i}": list(range(20))} for i in range(30)]
_PLAIN_STEPS = 60


def _plain_chain() -> Callable[[], int]:
    """Plain Python that runs through ``_PLAIN_STEPS`` distinct functions (each compiled from
    its own source, so none shares code with another), the shape of a call path through many
    small helpers, with a few dict and tuple operations in each."""
    namespace: dict[str, Any] = {}
    for step in range(_PLAIN_STEPS):
        source = (
            f"def step_{step}(values, x):\n"
            f"    value = values.get('k{step % 7}', {step})\n"
            f"    if isinstance(value, int) and value > -{step + 1}:\n"
            f"        values['k{step % 5}'] = value + x\n"
            f"    return len((x, value, {step})) + x\n"
        )
        exec(compile(source, f"<plain step {step}>", "exec"), namespace)
    steps = [namespace[f"step_{step}"] for step in range(_PLAIN_STEPS)]

    def run() -> int:
        values: dict[str, int] = {}
        x = 0
        for step in steps:
            x = step(values, x) & 1023
        return x

    return run


def _providers(noop: bool) -> tuple[Any, Any, Callable[[], None]]:
    """(tracer provider, meter provider, flush), the global ones as well."""
    from opentelemetry import metrics, trace

    if noop:
        tracer_provider: Any = trace.NoOpTracerProvider()
        meter_provider: Any = metrics.NoOpMeterProvider()
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        return tracer_provider, meter_provider, lambda: None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    processor = BatchSpanProcessor(exporter, max_queue_size=1_000_000)
    sdk_tracer_provider = TracerProvider()
    sdk_tracer_provider.add_span_processor(processor)
    sdk_meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    trace.set_tracer_provider(sdk_tracer_provider)
    metrics.set_meter_provider(sdk_meter_provider)

    def flush() -> None:
        processor.force_flush()
        exporter.clear()

    return sdk_tracer_provider, sdk_meter_provider, flush


def _wrapper_of(owner: type, method: str, instrumentor: Any, **kwargs: Any) -> Any:
    """The ``wrapt`` wrapper function ``instrumentor`` installs on ``owner.method``."""
    instrumentor.instrument(**kwargs)
    try:
        return owner.__dict__[method]._self_wrapper
    finally:
        instrumentor.uninstrument()


def _setup(sdk: str, mode: str) -> tuple[dict[str, Callable[[], None]], Callable[[], None]]:
    """The timed callables of ``mode`` for ``sdk``, and the flush to run between rounds."""
    import httpx2

    noop = mode == "own"
    tracer_provider, meter_provider, flush = _providers(noop)
    http_client = httpx2.Client(transport=_transport(sdk))
    prompt = [{"role": "user", "content": "Write a few words about the sea."}]
    if sdk == "openai":
        import openai
        from openai.resources.chat.completions import Completions
        from openai.types.chat import ChatCompletion

        from tollmeter.instrumentation.openai import OpenAIInstrumentor

        body = _openai_body(False, 16)
        model: Any = ChatCompletion
        instance: Any = openai.OpenAI(
            api_key="bench", base_url="http://bench.invalid/v1", http_client=http_client
        ).chat.completions
        kwargs: dict[str, Any] = {"model": "gpt-4o-mini", "messages": prompt, "max_tokens": 16}
        owner: type = Completions
        instrumentor: Any = OpenAIInstrumentor()
    else:
        import anthropic
        from anthropic.resources.messages import Messages
        from anthropic.types import Message

        from tollmeter.instrumentation.anthropic import AnthropicInstrumentor

        body = _anthropic_body(False, 16)
        model = Message
        instance = anthropic.Anthropic(
            api_key="bench",
            base_url="http://bench.invalid",
            http_client=http_client,
            open_telemetry=False,
        ).messages
        kwargs = {"model": CLAUDE, "max_tokens": 16, "messages": prompt}
        owner = Messages
        instrumentor = AnthropicInstrumentor()

    response = model.model_validate(json.loads(body))
    if mode == "sdk_work":

        def stand_in(*args: Any, **kwargs: Any) -> Any:
            copy.deepcopy(_REQUEST_LIKE)
            return model.model_validate(json.loads(body))

    else:

        def stand_in(*args: Any, **kwargs: Any) -> Any:
            return response

    method = "create"
    ours = _wrapper_of(owner, method, instrumentor, tracer_provider=tracer_provider)
    if mode == "together":
        from opentelemetry import metrics, trace

        own = _wrapper_of(
            owner,
            method,
            type(instrumentor)(),
            tracer_provider=trace.NoOpTracerProvider(),
            meter_provider=metrics.NoOpMeterProvider(),
        )
    # The hook on the SDK's request builder stays on, as in a real process.
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    floor = _floor({"call": lambda: stand_in(**kwargs)})["call"]
    fns: dict[str, Callable[[], None]] = {
        "base": lambda: stand_in(**kwargs),
        "floor": floor,
        "tollmeter": lambda: ours(stand_in, instance, (), kwargs),
    }
    if mode == "together":
        fns["tollmeter_own"] = lambda: own(stand_in, instance, (), kwargs)
        fns["floor_then_tollmeter_own"] = lambda: (floor(), own(stand_in, instance, (), kwargs))
        plain = _plain_chain()
        fns["plain"] = lambda: (stand_in(**kwargs), plain())
        fns["floor_then_plain"] = lambda: (floor(), plain())
    if sdk == "openai":
        from thin_wrapper import ThinOpenAIInstrumentor

        thin = _wrapper_of(owner, method, ThinOpenAIInstrumentor(), tracer_provider=tracer_provider)
        fns["thin"] = lambda: thin(stand_in, instance, (), kwargs)
    return fns, flush


def run_mode(sdk: str, mode: str, calls: int, repeats: int) -> dict[str, Any]:
    fns, flush = _setup(sdk, mode)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats):
        names = list(fns) if round_ % 2 == 0 else list(reversed(fns))
        for name in names:
            fn = fns[name]
            for _ in range(100):
                fn()
            gc.collect()
            started = time.thread_time_ns()
            for _ in range(calls):
                fn()
            samples[name].append((time.thread_time_ns() - started) / calls / 1000)
            flush()
    base = min(samples["base"])
    added = {name: min(values) - base for name, values in samples.items() if name != "base"}
    result: dict[str, Any] = {f"{name}_us": round(value, 2) for name, value in added.items()}
    if mode != "own" and added["floor"] > 0:
        for name in ("tollmeter", "thin"):
            if name in added:
                result[f"{name}_to_floor"] = round(added[name] / added["floor"], 3)
    return result


def _child(sdk: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        f"{sdk}:{mode}",
        "--calls",
        str(args.calls),
        "--repeats",
        str(args.repeats),
    ]
    return run_child(command, dict(os.environ))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per sample")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds per mode")
    parser.add_argument("--sdk", nargs="*", choices=SDKS, default=list(SDKS))
    parser.add_argument("--mode", nargs="*", choices=MODES, default=list(MODES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sdk, _, mode = args.child.partition(":")
        print(json.dumps(run_mode(sdk, mode, args.calls, args.repeats)))
        return
    report = {
        "benchmark": "instrumentation_loop",
        "unit": "CPU microseconds added per call on the calling thread (fastest round)",
        "python": sys.version.split()[0],
        "calls": args.calls,
        "repeats": args.repeats,
        "results": {sdk: {mode: _child(sdk, mode, args) for mode in args.mode} for sdk in args.sdk},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
