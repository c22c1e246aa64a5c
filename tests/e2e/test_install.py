"""What users install is what runs: the built wheel in fresh venvs, one per install line.

- The base install (instrumentation) beside the app's own ``openai``: ``opentelemetry-instrument``
  meters a call into a real collector, and the ``tollmeter`` command names the extra it lacks.
- ``[collector]`` alone, with no dev package: ``tollmeter collector`` starts, answers
  ``/readyz``, meters spans sent over gRPC and HTTP, forwards them to a second collector and
  exports Parquet.
- ``[collector,postgres,redis]``, the Dockerfile's install line: a replica's set-up (the ledger
  on PostgreSQL, the limits in Redis, the export on S3) meters a span, enforces a quota and
  exports it.

Each venv is built once per session with the lock's versions as constraints, so the result does
not change with an upstream release; constraints never add a package, so a dependency an extra
forgets to declare is still missing here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "dev.txt"
DEV_ONLY = ("pytest", "hypothesis", "mypy", "openai", "anthropic", "duckdb")

Install = Callable[..., Path]


def _uv() -> str:
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        pytest.fail(f"uv not found beside {sys.executable}: run `make install`", pytrace=False)
    return str(uv)


def dockerfile_extras() -> str:
    """The extras of the image's ``pip install ".[...]"`` line."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    (extras,) = re.findall(r'pip install [^\n]*"\.\[([a-z,]+)\]"', dockerfile)
    return extras


@pytest.fixture(scope="session")
def install(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Install:
    """``install("collector", "other-requirement")`` -> a fresh venv holding the wheel with
    those extras (and the extra requirements), made once per session."""
    made: dict[tuple[str, ...], Path] = {}

    def factory(extras: str, *requirements: str) -> Path:
        key = (extras, *requirements)
        if key not in made:
            venv = tmp_path_factory.mktemp("venv")
            run([_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)])
            wheel = f"tollmeter[{extras}] @ {built_wheel.as_uri()}" if extras else str(built_wheel)
            run(
                [_uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
                 "--constraint", str(LOCK), wheel, *requirements]
            )  # fmt: skip
            made[key] = venv
        return made[key]

    return factory


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no venv of the test run leaks in."""
    kept = ("PATH", "HOME", "LANG", "TMPDIR", "TIKTOKEN_CACHE_DIR")
    return {**{k: os.environ[k] for k in kept if k in os.environ}, **extra}


def importable(venv: Path, modules: tuple[str, ...]) -> list[str]:
    probe = (
        "import importlib.util, sys\n"
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    )
    out = run([str(venv / "bin" / "python"), "-c", probe, *modules], env=clean_env()).stdout
    return out.split()


def run_instrumented(
    venv: Path, app: str, service: str, otlp_endpoint: str, llm_url: str, tmp_path: Path
) -> None:
    """Run ``app`` with the venv's ``opentelemetry-instrument``, exporting to ``otlp_endpoint``
    over OTLP/HTTP, its SDK pointed at the fake LLM server (``FAKE_LLM_URL``)."""
    script = tmp_path / "app.py"
    script.write_text(app)
    env = clean_env(
        FAKE_LLM_URL=llm_url,
        OTEL_SERVICE_NAME=service,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_endpoint,
    )
    bin_dir = venv / "bin"
    run([str(bin_dir / "opentelemetry-instrument"), str(bin_dir / "python"), str(script)], env=env)


def assert_metered_as_served(
    events: list[dict[str, Any]], truths: list[Any], *, provider: str, tenant: str
) -> None:
    """Each event is its call, attributed, with the counts the fake server reported."""
    assert len(events) == len(truths)
    for event, truth in zip(events, truths, strict=True):
        assert event["provider"] == provider
        assert event["tenant_id"] == tenant
        assert event["usage_source"] == "provider"
        assert (event["input_tokens"], event["output_tokens"]) == (
            truth.input_tokens,
            truth.output_tokens,
        )


APP = """
import os
import openai
from tollmeter import attribute

client = openai.OpenAI(base_url=os.environ["FAKE_LLM_URL"] + "/v1", api_key="k", max_retries=0)
with attribute(tenant="base-install"):
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Name three rivers."}]
    )
"""


def test_base_install_meters_a_call_under_opentelemetry_instrument(
    install, collector_process, fake_llm, tmp_path
):
    venv = install("", "openai")
    assert importable(venv, DEV_ONLY) == ["openai"]
    collector = collector_process()
    run_instrumented(venv, APP, "base-install-app", collector.http_endpoint, fake_llm.url, tmp_path)

    events = collector.wait_for_events(1)
    truths = [fake_llm.last().usage]
    assert_metered_as_served(events, truths, provider="openai", tenant="base-install")
    assert events[0]["service_name"] == "base-install-app"


BEDROCK_APP = """
import json, os
import boto3
from tollmeter import attribute

# Explicit region and dummy credentials: no lookup of real ones, no metadata service.
client = boto3.client(
    "bedrock-runtime", endpoint_url=os.environ["FAKE_LLM_URL"], region_name="us-east-1",
    aws_access_key_id="test", aws_secret_access_key="test",
)
hello = [{"role": "user", "content": [{"text": "Name three rivers."}]}]
with attribute(tenant="bedrock-install"):
    client.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=hello)
    list(client.converse_stream(modelId="amazon.nova-micro-v1:0", messages=hello)["stream"])
    body = json.dumps({"prompt": "Name three rivers.", "max_gen_len": 64})
    client.invoke_model(modelId="meta.llama3-8b-instruct-v1:0", body=body)["body"].read()
    body = json.dumps({"inputText": "Name three rivers."})
    stream = client.invoke_model_with_response_stream(
        modelId="amazon.titan-text-express-v1", body=body
    )
    list(stream["body"])
    client.converse(modelId="acme.house-model-v1", messages=hello)
"""


def test_base_install_meters_bedrock_calls_under_opentelemetry_instrument(
    install, collector_process, fake_llm, tmp_path
):
    venv = install("", "boto3")
    collector = collector_process()
    run_instrumented(
        venv, BEDROCK_APP, "bedrock-app", collector.http_endpoint, fake_llm.url, tmp_path
    )

    events = collector.wait_for_events(5)
    truths = [exchange.usage for exchange in fake_llm.requests()[-5:]]
    assert_metered_as_served(events, truths, provider="aws.bedrock", tenant="bedrock-install")
    *known, unknown = events
    operations = ["chat", "chat", "text_completion", "text_completion", "chat"]
    assert [e["operation"] for e in events] == operations
    for event in known:
        assert event["cost"] is not None, event
        assert "(aws/" in event["price_source"], event
    assert unknown["request_model"] == "acme.house-model-v1"
    assert unknown["cost"] is None
    assert unknown["price_source"].startswith("unpriced"), unknown


def test_base_install_command_names_the_collector_extra(install):
    venv = install("", "openai")
    result = subprocess.run(
        [str(venv / "bin" / "tollmeter"), "collector"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "tollmeter[collector]" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def _span_sender(exporter: SpanExporter) -> Callable[[str], None]:
    provider = TracerProvider(resource=Resource.create({"service.name": "install-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("install-test")

    def send(response_id: str) -> None:
        with tracer.start_as_current_span("chat gpt-4o-mini") as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.response.id": response_id,
                    "gen_ai.usage.input_tokens": 120,
                    "gen_ai.usage.output_tokens": 30,
                    "tollmeter.tenant.id": "docker-image",
                }
            )
        provider.force_flush()

    return send


def test_collector_extra_alone_ingests_forwards_and_exports(install, collector_process, tmp_path):
    venv = install("collector")
    assert importable(venv, (*DEV_ONLY, "psycopg", "redis")) == []

    downstream = collector_process()
    export_dir = tmp_path / "billing"
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "export": {"directory": str(export_dir), "interval": "1h"},
                "forward": [
                    {
                        "name": "downstream",
                        "protocol": "grpc",
                        "endpoint": downstream.grpc_endpoint,
                        "tls": {"insecure": True},
                        "batch": {"delay": "10ms"},
                    }
                ],
            }
        )
    )
    collector = collector_process(
        args=["--config", str(config)], command=str(venv / "bin" / "tollmeter"), env=clean_env()
    )
    assert httpx.get(f"{collector.management_url}/readyz", timeout=10).status_code == 200

    _span_sender(GrpcExporter(endpoint=collector.grpc_endpoint, insecure=True))("resp-grpc")
    _span_sender(HttpExporter(endpoint=f"{collector.http_endpoint}/v1/traces"))("resp-http")
    events = collector.wait_for_events(2)
    assert sorted(e["response_id"] for e in events) == ["resp-grpc", "resp-http"]
    forwarded = downstream.wait_for_events(2)
    assert sorted(e["response_id"] for e in forwarded) == ["resp-grpc", "resp-http"]

    assert collector.stop() == 0  # a graceful stop writes the last Parquet file
    table = ds.dataset(export_dir, format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("response_id").to_pylist()) == ["resp-grpc", "resp-http"]
    assert sum(table.column("total_tokens").to_pylist()) == 300

    # Shared storage without its extra: one line naming the extra, not a traceback.
    for section, extra in (
        ({"storage": {"url": "postgresql://tollmeter@127.0.0.1:9/ledger"}}, "postgres"),
        ({"limits": {"storage": "redis://127.0.0.1:9/0"}}, "redis"),
    ):
        config.write_text(yaml.safe_dump({**section, "data_dir": str(tmp_path / extra)}))
        result = subprocess.run(
            [str(venv / "bin" / "tollmeter"), "collector", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
        )
        assert result.returncode != 0
        assert f"tollmeter[{extra}]" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr + result.stdout


def test_replica_extras_share_postgresql_redis_and_s3(
    install, collector_process, postgres_url, redis_url, s3_server, s3_bucket, tmp_path
):
    extras = dockerfile_extras()
    assert extras == "collector,postgres,redis"
    venv = install(extras)
    assert importable(venv, ("psycopg", "redis", "grpc")) == ["psycopg", "redis", "grpc"]
    assert importable(venv, (*DEV_ONLY, "boto3", "moto")) == []
    config = tmp_path / "replica.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"url": postgres_url},
                "limits": {
                    "storage": redis_url,
                    "rules": [
                        {"name": "quota", "limit": 1, "measure": "requests", "window": "day"}
                    ],
                },
                "export": {
                    "url": f"s3://{s3_bucket}/usage",
                    "s3": s3_server.settings(),
                    "interval": "1h",
                },
            }
        )
    )
    collector = collector_process(
        args=["--config", str(config)], command=str(venv / "bin" / "tollmeter"), env=clean_env()
    )
    api = collector.management_url

    _span_sender(GrpcExporter(endpoint=collector.grpc_endpoint, insecure=True))("resp-replica")
    assert [e["response_id"] for e in collector.wait_for_events(1)] == ["resp-replica"]

    def check() -> bool:
        reply = httpx.post(f"{api}/api/v1/check", json={"tenant": "acme"}, timeout=10)
        assert reply.status_code == 200, reply.text
        allowed: bool = reply.json()["allowed"]
        return allowed

    assert [check(), check()] == [True, False]  # the quota of one lives in Redis

    assert httpx.post(f"{api}/api/v1/export", timeout=60).status_code == 200
    filesystem = s3_server.filesystem()
    selector = pafs.FileSelector(f"{s3_bucket}/usage", recursive=True)
    keys = [i.path for i in filesystem.get_file_info(selector) if i.path.endswith(".parquet")]
    assert len(keys) == 1
    with filesystem.open_input_file(keys[0]) as stream:
        assert pq.read_table(stream).column("response_id").to_pylist() == ["resp-replica"]


GEMINI_APP = """
import os
from google import genai
from google.genai import types
from tollmeter import attribute

client = genai.Client(
    api_key="test-key", http_options=types.HttpOptions(base_url=os.environ["FAKE_LLM_URL"])
)
with attribute(tenant="gemini-install"):
    client.models.generate_content(model="gemini-2.5-flash", contents="Name three rivers.")
    list(client.models.generate_content_stream(model="gemini-2.0-flash", contents="Hi there."))
    client.models.embed_content(model="gemini-embedding-001", contents=["rivers", "lakes"])
    client.models.generate_content(model="gemini-house-model", contents="Name three rivers.")
"""


def test_base_install_meters_gemini_calls_under_opentelemetry_instrument(
    install, collector_process, fake_llm, tmp_path
):
    venv = install("", "google-genai")
    collector = collector_process()
    run_instrumented(
        venv, GEMINI_APP, "gemini-app", collector.http_endpoint, fake_llm.url, tmp_path
    )

    events = collector.wait_for_events(4)
    truths = [exchange.usage for exchange in fake_llm.requests()[-4:]]
    assert_metered_as_served(events, truths, provider="gcp.gen_ai", tenant="gemini-install")
    *known, unknown = events
    operations = ["generate_content", "generate_content", "embeddings", "generate_content"]
    assert [e["operation"] for e in events] == operations
    for event in known:
        assert event["cost"] is not None, event
        assert "(google/" in event["price_source"], event
    assert unknown["request_model"] == "gemini-house-model"
    assert unknown["cost"] is None
    assert unknown["price_source"].startswith("unpriced"), unknown
