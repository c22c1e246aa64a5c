"""``configure()``: argument checks, idempotence, and respect for providers the app set.

OpenTelemetry allows one global provider per process, so each scenario that installs one runs
in its own interpreter and reports back as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tollmeter.instrumentation import configure
from tollmeter.semconv.errors import ConfigurationError


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": "http/json"}, "protocol must be one of"),
        ({"instrument": ("openai", "cohere")}, "unknown instrumentor"),
        ({"instrument": "openai"}, "not a string"),
    ],
)
def test_bad_arguments_raise_before_anything_is_set_up(kwargs: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        configure(**kwargs)
    from opentelemetry import trace

    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"


def _run_script(body: str, tmp_path: Path, fake_llm: Any) -> dict[str, Any]:
    script = tmp_path / "scenario.py"
    script.write_text(textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ANTHROPIC_"))}
    env["FAKE_LLM_URL"] = fake_llm.url
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    last_line = done.stdout.strip().splitlines()[-1]
    result: dict[str, Any] = json.loads(last_line)
    result["stderr"] = done.stderr
    return result


PROVIDERS_SET_BY_THE_APP = """
    import json, os, warnings
    import anthropic
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from tollmeter.instrumentation import attribute, configure

    exporter = InMemorySpanExporter()
    app_tracer_provider = TracerProvider()
    app_tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(app_tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    handle = configure(service_name="ignored", endpoint="http://127.0.0.1:9")
    with warnings.catch_warnings(record=True) as same:
        warnings.simplefilter("always")
        again = configure(service_name="ignored", endpoint="http://127.0.0.1:9")
    with warnings.catch_warnings(record=True) as different:
        warnings.simplefilter("always")
        other = configure(service_name="other")

    client = anthropic.Anthropic(base_url=os.environ["FAKE_LLM_URL"], api_key="k", max_retries=0)
    prompt = [{"role": "user", "content": "Say hello."}]
    with attribute(tenant="kept-provider"):
        client.messages.create(model="claude-test-small", max_tokens=16, messages=prompt)
        # A span from any GenAI instrumentation gets the attribution via the span processor.
        tracer = trace.get_tracer("some.other.genai.instrumentation")
        genai = {"gen_ai.operation.name": "chat"}
        with tracer.start_as_current_span("chat other", attributes=genai):
            pass
    handle.shutdown()
    handle.shutdown()
    client.messages.create(model="claude-test-small", max_tokens=16, messages=prompt)
    spans = [
        {"name": s.name, "scope": s.instrumentation_scope.name, "attributes": dict(s.attributes)}
        for s in exporter.get_finished_spans()
    ]
    print(json.dumps({
        "same_handle": again is handle and other is handle,
        "same_warnings": [str(w.message) for w in same],
        "different_warnings": [str(w.category.__name__) for w in different],
        "kept": handle.tracer_provider is app_tracer_provider,
        "instrumented": list(handle.instrumented),
        "spans": spans,
    }))
"""


def test_providers_the_app_set_are_kept_and_configure_is_idempotent(
    tmp_path: Path, fake_llm: Any, anthropic_native_spans: bool
) -> None:
    result = _run_script(PROVIDERS_SET_BY_THE_APP, tmp_path, fake_llm)
    assert result["same_handle"] is True
    assert result["same_warnings"] == []
    assert result["different_warnings"] == ["RuntimeWarning"]
    assert result["kept"] is True
    assert result["instrumented"] == ["openai", "anthropic", "bedrock", "google_genai"]
    assert "does not add an exporter" in result["stderr"]
    spans = result["spans"]
    metered = [s for s in spans if "tollmeter.usage.source" in s["attributes"]]
    # One metered call before shutdown(); the call after it is not metered by tollmeter.
    assert len(metered) == 1
    assert metered[0]["attributes"]["tollmeter.tenant.id"] == "kept-provider"
    (other,) = [s for s in spans if s["name"] == "chat other"]
    assert other["attributes"]["tollmeter.tenant.id"] == "kept-provider"
    if anthropic_native_spans:
        after = spans[-1]
        assert after["scope"] == "com.anthropic.sdk.python"
        assert "tollmeter.usage.source" not in after["attributes"]
    else:
        # Without spans of the SDK's own, the uninstrumented call leaves no span at all.
        assert spans[-1]["name"] == "chat other"


PROVIDER_HOSTS = """
import json, os
import openai
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tollmeter.instrumentation import configure

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
configure(instrument=["openai"], provider_hosts={"127.0.0.1": "local_vllm"})
client = openai.OpenAI(base_url=os.environ["FAKE_LLM_URL"] + "/v1", api_key="k", max_retries=0)
client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
(span,) = exporter.get_finished_spans()
print(json.dumps({"provider": span.attributes["gen_ai.provider.name"]}))
"""


def test_provider_hosts_reach_the_openai_instrumentor(tmp_path: Path, fake_llm: Any) -> None:
    assert _run_script(PROVIDER_HOSTS, tmp_path, fake_llm)["provider"] == "local_vllm"
