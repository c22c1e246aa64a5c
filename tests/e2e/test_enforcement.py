"""Enforcement through a real ``tollmeter collector`` process.

64 concurrent clients (4 processes of 16 threads) each check, wait until all have their
answer (the worst interleaving: everyone asks before anyone reports), then report the
call's actual usage as an OTLP span. With reservations exactly the quota's worth of
calls is admitted; the naive check-then-add strategy, run in the same test against
the same collector, admits all of them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tollmeter.instrumentation import Guard, QuotaExceeded, attribute
from tollmeter.instrumentation.openai import OpenAIInstrumentor

_TOLLMETER = Path(sys.executable).with_name("tollmeter")
_LISTENING = re.compile(r"tollmeter collector: (OTLP/HTTP|management API) listening on (\S+)")
QUOTA = 10_000
ESTIMATE = (400, 100)  # input estimate, max output: 500 tokens reserved per call

CLIENT = r"""
import json, os, random, sys, threading, time
import httpx

api, otlp, tenant, strategy, barrier_dir, first, count, total = sys.argv[1:9]
first, count, total = int(first), int(count), int(total)
results = []
lock = threading.Lock()


def wait_for(name, n):
    open(os.path.join(barrier_dir, f"{name}-{os.getpid()}-{threading.get_ident()}"), "w").close()
    deadline = time.monotonic() + 60
    while sum(1 for f in os.listdir(barrier_dir) if f.startswith(name + "-")) < n:
        if time.monotonic() > deadline:
            raise SystemExit("barrier timeout")
        time.sleep(0.005)


def span(client_id, rid, inp, out):
    attributes = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
        {"key": "gen_ai.response.id", "value": {"stringValue": f"{tenant}-{client_id}"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": str(inp)}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": str(out)}},
        {"key": "tollmeter.tenant.id", "value": {"stringValue": tenant}},
    ]
    if rid:
        attributes.append({"key": "tollmeter.reservation.id", "value": {"stringValue": rid}})
    now = time.time_ns()
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [{
        "traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(),
        "name": "chat gpt-4o-mini", "kind": 3,
        "startTimeUnixNano": str(now - 1000), "endTimeUnixNano": str(now),
        "attributes": attributes}]}]}]}


def client(client_id):
    with httpx.Client(timeout=30) as http:
        body = {"tenant": tenant, "estimated_input_tokens": 400, "max_output_tokens": 100,
                "dry_run": strategy == "naive"}
        answer = http.post(api + "/api/v1/check", json=body).json()
        wait_for("checked", total)
        if not answer["allowed"]:
            return
        inp, out = random.randint(300, 400), random.randint(20, 100)
        report = span(client_id, answer["reservation_id"], inp, out)
        sent = http.post(otlp + "/v1/traces", json=report)
        sent.raise_for_status()
        with lock:
            results.append(inp + out)


threads = [threading.Thread(target=client, args=(first + i,)) for i in range(count)]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
print(json.dumps(results))
"""


class CollectorProcess:
    """``tollmeter collector --config FILE`` on free ports."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.endpoints: dict[str, str] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLMETER_")}
        self.process = subprocess.Popen(
            [str(_TOLLMETER), "collector", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        while len(self.endpoints) < 2:
            line = self.process.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError("the collector did not start")
            if match := _LISTENING.search(line):
                self.endpoints[match.group(1)] = match.group(2).rstrip("/")

    @property
    def api(self) -> str:
        return self.endpoints["management API"]

    @property
    def otlp(self) -> str:
        return self.endpoints["OTLP/HTTP"]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=60)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


def _config(tmp_path: Path, limit: int = QUOTA) -> Path:
    path = tmp_path / "tollmeter.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "collector_id": "enforcement-e2e",
                "data_dir": str(tmp_path / "data"),
                "receivers": {
                    "grpc": {"endpoint": "127.0.0.1:0"},
                    "http": {"endpoint": "127.0.0.1:0"},
                },
                "management": {"endpoint": "127.0.0.1:0"},
                "limits": {
                    "reservation_ttl": "1h",
                    "rules": [{"name": "quota", "limit": limit, "window": "day"}],
                },
            }
        )
    )
    return path


@pytest.fixture
def collector_process(tmp_path):
    started: list[CollectorProcess] = []

    def start(limit: int = QUOTA) -> CollectorProcess:
        running = CollectorProcess(_config(tmp_path, limit))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop(signal.SIGKILL)


def _remaining(api: str, tenant: str) -> float:
    limits = httpx.get(f"{api}/api/v1/tenants/{tenant}/status", timeout=10).json()["limits"]
    return limits[0]["remaining"] if limits else float(QUOTA)


def _hammer(running: CollectorProcess, tenant: str, strategy: str, barrier: Path) -> list[int]:
    barrier.mkdir()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CLIENT,
                running.api,
                running.otlp,
                tenant,
                strategy,
                str(barrier),
                str(p * 16),
                "16",
                "64",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for p in range(4)
    ]
    admitted: list[int] = []
    for process in processes:
        out, _ = process.communicate(timeout=180)
        assert process.returncode == 0
        admitted += json.loads(out)
    return admitted


def test_reservations_hold_the_quota_where_check_then_add_overruns(collector_process, tmp_path):
    running = collector_process()
    reserved = _hammer(running, "reserved-tenant", "reserve", tmp_path / "barrier-reserve")
    naive = _hammer(running, "naive-tenant", "naive", tmp_path / "barrier-naive")

    assert len(reserved) == QUOTA // sum(ESTIMATE)
    assert sum(reserved) <= QUOTA
    assert len(naive) == 64
    assert sum(naive) > 2 * QUOTA
    # The collector counted the actual usage the spans reported, replacing the reservations.
    assert _remaining(running.api, "reserved-tenant") == QUOTA - sum(reserved)
    status = httpx.get(f"{running.api}/api/v1/tenants/reserved-tenant/status", timeout=10).json()
    assert status["active_reservations"] == 0
    assert _remaining(running.api, "naive-tenant") == 0


def test_limit_state_survives_kill_9_and_sighup_reloads_keeping_it(collector_process, tmp_path):
    running = collector_process(limit=1000)
    check = {"tenant": "acme", "estimated_input_tokens": 700}
    assert httpx.post(f"{running.api}/api/v1/check", json=check, timeout=10).json()["allowed"]
    threading.Event().wait(0.5)  # longer than the state flush interval
    assert running.stop(signal.SIGKILL) == -signal.SIGKILL

    running = collector_process(limit=1000)
    denied = httpx.post(f"{running.api}/api/v1/check", json=check, timeout=10).json()
    assert (denied["allowed"], denied["denied_by"]) == (False, "quota")

    _config(tmp_path, limit=2000)
    running.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rules = httpx.get(f"{running.api}/api/v1/limits", timeout=10).json()["limits"]["rules"]
        if rules[0]["limit"] == 2000:
            break
        threading.Event().wait(0.05)
    assert _remaining(running.api, "acme") == 1300
    assert running.stop() == 0


@pytest.fixture
def openai_app(fake_llm, collector_process):
    """An app with the real OpenAI SDK, instrumented, exporting spans to a real collector
    whose limits admit 2,000 tokens per tenant per day, and guarded by it."""
    running = collector_process(limit=2000)
    exporter = OTLPSpanExporter(endpoint=f"{running.otlp}/v1/traces", timeout=10)
    provider = TracerProvider()
    # Spans leave only on force_flush: the test decides when the collector hears of a call.
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider, meter_provider=MeterProvider())
    guard = Guard(running.api).install()
    client = openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=0)
    yield running, client, provider
    client.close()
    guard.uninstall()
    instrumentor.uninstrument()
    provider.shutdown()


def _chat(client, max_tokens: int):
    return client.chat.completions.create(
        model="gpt-4o-mini",
        max_tokens=max_tokens,
        messages=[{"role": "user", "content": "How many tokens is this?"}],
    )


def test_guard_stops_the_openai_call_before_it_reaches_the_provider(openai_app, fake_llm):
    running, client, provider = openai_app
    with attribute(tenant="acme"):
        reply = _chat(client, max_tokens=1500)
        before = len(fake_llm.requests())
        with pytest.raises(QuotaExceeded) as denied:
            _chat(client, max_tokens=1500)
    assert len(fake_llm.requests()) == before
    assert denied.value.limit == "quota"
    assert denied.value.retry_after is not None
    # Once the allowed call's span reaches the collector it replaces the reservation.
    assert provider.force_flush(10_000)
    used = reply.usage.prompt_tokens + reply.usage.completion_tokens
    deadline = time.monotonic() + 30
    while _remaining(running.api, "acme") != 2000 - used and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    assert _remaining(running.api, "acme") == 2000 - used
    # With the reservation replaced by the (smaller) actual usage, the same call fits again.
    with attribute(tenant="acme"):
        assert _chat(client, max_tokens=1500).choices
