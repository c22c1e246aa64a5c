"""Zero-code with every installed GenAI instrumentation left on, end to end.

``opentelemetry-instrument python app.py`` enables every installed instrumentor: tollmeter's
and its peers (openai-v2, OpenLLMetry, OpenInference, botocore) in whatever order the entry
points come. The app makes OpenAI, Anthropic, Bedrock and Gemini calls, streamed and not,
against the fake LLM server and reports to a real ``tollmeter collector`` process, which
forwards the traces to a receiver here. Every call must reach the collector as exactly one
GenAI span carrying its tenant, and the ledger's totals must equal the fake server's.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tollmeter.semconv import attributes as attrs

BIN = Path(sys.executable).parent
TENANT = "tenant-peers"
CALLS = 7

APP = """
import anthropic, boto3, openai, os
from botocore.config import Config
from google import genai
from google.genai import types
from tollmeter.instrumentation import attribute

url = os.environ["FAKE_LLM_URL"]
prompt = [{"role": "user", "content": "Write two sentences about tides."}]
with attribute(tenant=os.environ["TENANT"]):
    gpt = openai.OpenAI(base_url=url + "/v1", api_key="test-key", max_retries=0)
    gpt.chat.completions.create(model="gpt-4o-mini", messages=prompt)
    for _ in gpt.chat.completions.create(
        model="gpt-4o-mini", messages=prompt, stream=True, stream_options={"include_usage": True}
    ):
        pass
    claude = anthropic.Anthropic(base_url=url, api_key="test-key", max_retries=0)
    claude.messages.create(model="claude-test-small", max_tokens=64, messages=prompt)
    with claude.messages.stream(model="claude-test-small", max_tokens=64, messages=prompt) as s:
        s.until_done()
    bedrock = boto3.client(
        "bedrock-runtime", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    nova = [{"role": "user", "content": [{"text": "Write two sentences about tides."}]}]
    bedrock.converse(modelId="amazon.nova-micro-v1:0", messages=nova)
    for _ in bedrock.converse_stream(modelId="amazon.nova-micro-v1:0", messages=nova)["stream"]:
        pass
    gemini = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=url))
    gemini.models.generate_content(model="gemini-2.5-flash", contents="Tides, briefly.")
"""


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            with self.server.lock:
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            values = {
                                item.key: getattr(item.value, item.value.WhichOneof("value") or "")
                                if item.value.WhichOneof("value") in ("string_value", "int_value")
                                else None
                                for item in span.attributes
                            }
                            self.server.spans.append((scope_spans.scope.name, span.name, values))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.spans: list[tuple[str, str, dict[str, Any]]] = []

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


# An input count in any dialect the collector reads makes a span metered.
_INPUT_COUNTS = frozenset(
    {attrs.GEN_AI_USAGE_INPUT_TOKENS, *attrs.ALIASES[attrs.GEN_AI_USAGE_INPUT_TOKENS]}
)


def _metered(receiver: _Receiver) -> list[tuple[str, str, dict[str, Any]]]:
    with receiver.lock:
        return [span for span in receiver.spans if _INPUT_COUNTS & set(span[2])]


def test_every_call_is_one_span_with_every_peer_enabled(
    collector_process: Any, fake_llm: Any, receiver: _Receiver, tmp_path: Path
) -> None:
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "forward": [
                    {
                        "name": "here",
                        "protocol": "http/protobuf",
                        "endpoint": receiver.url,
                        "signals": ["traces"],
                        "batch": {"delay": "5ms"},
                    }
                ]
            }
        )
    )
    collector = collector_process(args=["--config", str(config)])
    before = len(fake_llm.requests())
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ANTHROPIC_"))}
    env.update(
        FAKE_LLM_URL=fake_llm.url,
        TENANT=TENANT,
        OTEL_SERVICE_NAME="peers-app",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{collector.grpc_endpoint}",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    done = subprocess.run(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(app)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    exchanges = fake_llm.requests()[before:]
    assert len(exchanges) == CALLS

    events = collector.wait_for_events(CALLS)
    deadline = time.monotonic() + 30
    while len(_metered(receiver)) < CALLS and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a duplicate would arrive in the same or the next batch
    metered = _metered(receiver)
    summary = sorted((scope, name) for scope, name, _ in metered)
    assert len(metered) == CALLS, summary
    providers = sorted(str(values[attrs.GEN_AI_PROVIDER_NAME]) for _, _, values in metered)
    assert providers == sorted(
        ["openai"] * 2 + ["anthropic"] * 2 + ["aws.bedrock"] * 2 + ["gcp.gen_ai"]
    ), summary
    for _, _, values in metered:
        assert values[attrs.TOLLMETER_TENANT_ID] == TENANT

    assert len(events) == CALLS, [(e["provider"], e["response_id"]) for e in events]
    assert {event["tenant_id"] for event in events} == {TENANT}
    for key in ("input_tokens", "output_tokens"):
        truth = sum(getattr(exchange.usage, key) for exchange in exchanges)
        assert sum(event[key] for event in events) == truth, key
