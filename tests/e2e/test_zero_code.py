"""Both ways of enabling tollmeter, end to end: an app in a subprocess, the real SDKs, the
fake LLM server and a real OTLP/HTTP receiver.

1. zero-code: ``opentelemetry-instrument python app.py`` finds the ``tollmeter_openai`` and
   ``tollmeter_anthropic`` entry points; exporters come from ``OTEL_*`` variables.
2. one line: ``tollmeter.instrumentation.configure(service_name=..., endpoint=...)``.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tollmeter.semconv import attributes as attrs
from tollmeter.semconv import metrics

BIN = Path(sys.executable).parent
MAX_BODY = 16 * 1024 * 1024


@dataclass
class Received:
    spans: list[tuple[dict[str, Any], str, dict[str, Any]]] = field(default_factory=list)
    """(resource attributes, span name, span attributes) of every span received."""
    metric_names: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        if not 0 <= length <= MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length)
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/v1/traces":
            traces = ExportTraceServiceRequest.FromString(body)
            with self.server.received.lock:
                for resource_spans in traces.resource_spans:
                    resource = _attributes(resource_spans.resource.attributes)
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            self.server.received.spans.append(
                                (resource, span.name, _attributes(span.attributes))
                            )
            reply = ExportTraceServiceResponse().SerializeToString()
        elif self.path == "/v1/metrics":
            request = ExportMetricsServiceRequest.FromString(body)
            with self.server.received.lock:
                for resource_metrics in request.resource_metrics:
                    for scope_metrics in resource_metrics.scope_metrics:
                        for metric in scope_metrics.metrics:
                            self.server.received.metric_names.add(metric.name)
            reply = ExportMetricsServiceResponse().SerializeToString()
        else:
            reply = b""
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received = Received()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


APP = """
import anthropic, openai, os
from opentelemetry import trace
from tollmeter.instrumentation import attribute
{setup}
url = os.environ["FAKE_LLM_URL"]
prompt = [{{"role": "user", "content": "Write two sentences about tides."}}]
with attribute(tenant="tenant-e2e"):
    claude = anthropic.Anthropic(base_url=url, api_key="test-key", max_retries=0)
    claude.messages.create(model="claude-test-small", max_tokens=64, messages=prompt)
    with claude.messages.stream(model="claude-test-small", max_tokens=64, messages=prompt) as s:
        s.until_done()
    gpt = openai.OpenAI(base_url=url + "/v1", api_key="test-key", max_retries=0)
    gpt.chat.completions.create(model="gpt-4o-mini", messages=prompt)
    # A span of some other GenAI instrumentation gets the attribution too.
    genai = {{"gen_ai.operation.name": "chat", "gen_ai.provider.name": "other"}}
    with trace.get_tracer("other.genai").start_as_current_span("chat other", attributes=genai):
        pass
{teardown}
"""


def _other_instrumentors() -> str:
    """Entry point names of every installed instrumentor that is not tollmeter's."""
    names = {ep.name for ep in entry_points(group="opentelemetry_instrumentor")}
    return ",".join(sorted(name for name in names if not name.startswith("tollmeter_")))


def _env(fake_llm: Any, receiver: _Receiver, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ANTHROPIC_"))}
    env.update(
        FAKE_LLM_URL=fake_llm.url,
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=_other_instrumentors(),
        OTEL_METRIC_EXPORT_INTERVAL="60000",
        OTEL_BSP_SCHEDULE_DELAY="100",
        **extra,
    )
    return env


def _run(command: list[str], env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]


def _assert_metered(received: Received, service: str) -> None:
    with received.lock:
        spans = list(received.spans)
        names = set(received.metric_names)
    chat = [
        (resource, name, values)
        for resource, name, values in spans
        if values.get(attrs.GEN_AI_OPERATION_NAME) == "chat"
        and attrs.GEN_AI_USAGE_INPUT_TOKENS in values
    ]
    providers = sorted(str(values[attrs.GEN_AI_PROVIDER_NAME]) for _, _, values in chat)
    # Exactly one metered span per call: two Anthropic calls and one OpenAI call.
    assert providers == ["anthropic", "anthropic", "openai"], [name for _, name, _ in spans]
    for resource, _, values in chat:
        assert resource["service.name"] == service
        assert values[attrs.TOLLMETER_TENANT_ID] == "tenant-e2e"
        assert values[attrs.TOLLMETER_USAGE_SOURCE] == "provider"
        assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] > 0
    (other,) = [values for _, name, values in spans if name == "chat other"]
    assert other[attrs.TOLLMETER_TENANT_ID] == "tenant-e2e"
    assert metrics.GEN_AI_CLIENT_TOKEN_USAGE in names
    assert metrics.GEN_AI_CLIENT_OPERATION_DURATION in names


CONFIGURE_TOO = """
from tollmeter.instrumentation import configure
handle = configure()
assert set(handle.instrumented) == {"openai", "anthropic", "bedrock", "google_genai"}, (
    handle.instrumented
)
# The instrumentors belong to opentelemetry-instrument: this shutdown leaves them on.
handle.shutdown()
"""


@pytest.mark.parametrize("setup", ["", CONFIGURE_TOO], ids=["plain", "with-configure"])
def test_opentelemetry_instrument_finds_the_entry_points(
    fake_llm: Any, receiver: _Receiver, tmp_path: Path, setup: str
) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP.format(setup=setup, teardown=""))
    env = _env(
        fake_llm,
        receiver,
        OTEL_SERVICE_NAME="zero-code-app",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="none",
    )
    _run([str(BIN / "opentelemetry-instrument"), sys.executable, str(app)], env, tmp_path)
    _assert_metered(receiver.received, "zero-code-app")


def test_configure_in_one_line(fake_llm: Any, receiver: _Receiver, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        APP.format(
            setup=(
                "from tollmeter.instrumentation import configure\n"
                "handle = configure(service_name='one-line-app', endpoint=os.environ['SINK'],"
                " protocol='http/protobuf')\n"
                "assert configure() is handle\n"
            ),
            teardown="assert handle.force_flush(10)\nhandle.shutdown()\n",
        )
    )
    env = _env(fake_llm, receiver, SINK=receiver.url)
    _run([sys.executable, str(app)], env, tmp_path)
    _assert_metered(receiver.received, "one-line-app")


def test_configure_reads_the_standard_variables(
    fake_llm: Any, receiver: _Receiver, tmp_path: Path
) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        APP.format(
            setup="from tollmeter.instrumentation import configure\nhandle = configure()\n",
            teardown="handle.shutdown()\n",
        )
    )
    env = _env(
        fake_llm,
        receiver,
        OTEL_SERVICE_NAME="from-env-app",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
    )
    _run([sys.executable, str(app)], env, tmp_path)
    _assert_metered(receiver.received, "from-env-app")
