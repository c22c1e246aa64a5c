"""The runnable examples, run as a user runs them: each script in a child process, with
the standard environment variables pointing at a real fake LLM server and a real
``tollmeter collector`` process (configured with ``examples/limits/tollmeter.yaml``).
Every test checks what the script prints and what really happened: the usage the
collector metered and the requests the fake server received."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TOLLMETER = str(Path(sys.executable).with_name("tollmeter"))
LIMITS_CONFIG = EXAMPLES / "limits" / "tollmeter.yaml"
SCRIPTS = (
    "anthropic_caching",
    "streaming_estimate",
    "agent_budget",
    "limits",
    "concurrency",
    "organisations",
    "gateway_429",
)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class RunningCollector:
    otlp_endpoint: str
    url: str
    log: Path

    def usage(self, **params: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/usage", params=params, timeout=10)
        answer.raise_for_status()
        rows: list[dict[str, Any]] = answer.json()["rows"]
        return rows


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    """``tollmeter collector --config examples/limits/tollmeter.yaml`` on free ports."""
    workdir = tmp_path_factory.mktemp("collector")
    grpc_port, http_port, management_port = free_ports(3)
    url = f"http://127.0.0.1:{management_port}"
    command = [
        TOLLMETER, "collector", "--config", str(LIMITS_CONFIG),
        "--grpc-endpoint", f"127.0.0.1:{grpc_port}",
        "--http-endpoint", f"127.0.0.1:{http_port}",
        "--management-endpoint", f"127.0.0.1:{management_port}",
        "--data-dir", str(workdir / "data"),
    ]  # fmt: skip
    with open(workdir / "stderr.txt", "wb") as err:
        process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "stderr.txt").read_text())
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        yield RunningCollector(
            otlp_endpoint=f"http://127.0.0.1:{grpc_port}", url=url, log=workdir / "stderr.txt"
        )
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def llm(fake_llm: Any) -> Any:
    """The session's fake LLM server with an empty prompt cache and request log, so that
    ``llm.requests()`` is exactly what the example sent."""
    httpx.post(f"{fake_llm.url}/_fake/reset", timeout=10).raise_for_status()
    return fake_llm


def run_example(name: str, fake_llm: Any, collector: RunningCollector) -> str:
    """Run ``examples/<name>/app.py`` with the standard variables; return what it printed."""
    env = {
        **os.environ,
        "OPENAI_BASE_URL": f"{fake_llm.url}/v1",
        "ANTHROPIC_BASE_URL": fake_llm.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_endpoint,
        "TOLLMETER_GUARD_URL": collector.url,
    }
    for secret in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        env.pop(secret, None)
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", str(EXAMPLES / name / "app.py")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def numbers(pattern: str, text: str) -> list[int]:
    return [int(value) for value in re.findall(pattern, text)]


def test_anthropic_caching_writes_then_reads_the_cache(llm, collector) -> None:
    output = run_example("anthropic_caching", llm, collector)

    written = numbers(r"gen_ai\.usage\.cache_write\.input_tokens = (\d+)", output)
    read = numbers(r"gen_ai\.usage\.cache_read\.input_tokens = (\d+)", output)
    assert written[0] > 1024
    assert read == [0, written[0]]
    assert written[1] == 0
    truth = [exchange.usage for exchange in llm.requests()]
    assert [usage.cache_write_tokens for usage in truth] == written
    assert [usage.cache_read_tokens for usage in truth] == read
    assert numbers(r"gen_ai\.usage\.input_tokens = (\d+)", output) == [
        usage.input_tokens for usage in truth
    ]
    (row,) = collector.usage(tenant="docs-team")
    assert row["requests"] == 2
    assert row["cache_write_input_tokens"] == written[0]
    assert row["cache_read_input_tokens"] == written[0]
    assert row["input_tokens"] == sum(usage.input_tokens for usage in truth)


def test_streaming_estimate_is_flagged_and_close_to_the_truth(llm, collector) -> None:
    output = run_example("streaming_estimate", llm, collector)

    assert output.count("tollmeter.usage.source = estimate") == 2
    estimates = re.findall(r"(input|output) tokens estimated (\d+), actual (\d+)", output)
    assert len(estimates) == 4
    exchanges = llm.requests()
    assert len(exchanges) == 2
    assert all(exchange.stream and not exchange.reported for exchange in exchanges)
    truths = [
        (kind, getattr(exchange.usage, f"{kind}_tokens"))
        for exchange in exchanges
        for kind in ("input", "output")
    ]
    assert [(kind, int(actual)) for kind, _, actual in estimates] == truths
    for _, estimated, actual in estimates:
        assert abs(int(estimated) - int(actual)) <= 0.1 * int(actual)
    (row,) = collector.usage(tenant="news-digest", group_by="usage_source")
    assert row["usage_source"] == "estimate"
    assert row["requests"] == 2
    assert row["input_tokens"] == sum(int(e) for kind, e, _ in estimates if kind == "input")


def test_agent_budget_stops_the_loop_before_the_call_that_would_pass_it(llm, collector) -> None:
    output = run_example("agent_budget", llm, collector)

    normal, stuck = output.split("stuck in a tool loop:\n", 1)
    assert "answered" in normal
    assert "stopped" not in normal
    steps = numbers(r"step (\d+): model calls", stuck)
    assert steps == list(range(1, len(steps) + 1))
    assert len(steps) >= 2
    (kind, used, limit) = re.findall(r"kind=(\w+) used=(\d+) limit=(\d+)", stuck)[0]
    assert (kind, limit) == ("tokens", "2500")
    assert int(used) <= 2500
    (next_call,) = numbers(r"this call may use up to (\d+)", stuck)
    assert int(used) + next_call > 2500
    normal_calls = len(re.findall(r"step \d+:", normal))
    # The stopped call never reached the model.
    assert len(llm.requests()) == normal_calls + len(steps)
    (row,) = collector.usage(tenant="support-bot")
    assert row["requests"] == normal_calls + len(steps)
    # Actual usage replaced each reservation: the budgets counted what was metered.
    budgets_used = numbers(r"budget used: (\d+) tokens", output)
    assert budgets_used[1] == int(used)
    assert int(used) == sum(numbers(r"model calls 1 tool\(s\) \((\d+) tokens", stuck))
    assert sum(budgets_used) == row["total_tokens"]


def test_limits_config_validates() -> None:
    done = subprocess.run(
        [TOLLMETER, "validate-config", str(LIMITS_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK")


def test_limits_deny_one_tenant_while_another_keeps_working(llm, collector) -> None:
    output = run_example("limits", llm, collector)

    trial_allowed = numbers(r"round (\d+): trial allowed", output)
    trial_denied = numbers(r"round (\d+): trial DENIED", output)
    enterprise = numbers(r"round (\d+): enterprise allowed", output)
    assert enterprise == list(range(1, 7))
    assert trial_allowed
    assert trial_denied
    assert max(trial_allowed) < min(trial_denied)
    assert "by 'trial-daily-tokens'" in output
    assert "GET /api/v1/tenants/trial/status" in output
    assert re.search(r"trial-daily-tokens: \d+ of 300 tokens left", output)
    # Denied calls never reached the model.
    assert len(llm.requests()) == len(trial_allowed) + len(enterprise)
    (trial,) = collector.usage(tenant="trial")
    assert trial["requests"] == len(trial_allowed)
    assert trial["total_tokens"] <= 300
    (other,) = collector.usage(tenant="enterprise")
    assert other["requests"] == 6
    status = httpx.get(f"{collector.url}/api/v1/tenants/trial/status", timeout=10).json()
    (daily,) = [limit for limit in status["limits"] if limit["name"] == "trial-daily-tokens"]
    assert daily["remaining"] == 300 - trial["total_tokens"]
    # The log hook of the example's configuration reported the denial (hooks run behind).
    deadline = time.monotonic() + 30
    while '"event": "request_denied"' not in collector.log.read_text():
        assert time.monotonic() < deadline, collector.log.read_text()
        time.sleep(0.05)


def test_concurrency_lets_two_calls_of_a_tenant_fly_at_once(llm, collector) -> None:
    output = run_example("concurrency", llm, collector)

    assert sorted(numbers(r"call (\d+): done", output)) == [1, 2, 3, 4, 5, 6]
    # Six checks at once against two slots: the others were denied and tried again.
    assert 1 <= len(numbers(r"call (\d+): done after 1 attempt", output)) <= 2
    assert "DENIED by 'research-in-flight'" in output
    # Denied calls never reached the model, and every slot was given back.
    assert len(llm.requests()) == 6
    # (A counter at rest may have been swept from the status already: no line then.)
    assert not re.search(r"research-in-flight: [1-9]", output)
    (row,) = collector.usage(tenant="research")
    assert row["requests"] == 6


def test_organisations_share_one_pool_between_their_tenants(llm, collector) -> None:
    output = run_example("organisations", llm, collector)

    allowed = re.findall(r"round \d+: (acme-\w+) allowed", output)
    denied = re.findall(r"round \d+: (acme-\w+) DENIED by 'acme-daily-tokens'", output)
    # Both tenants spent from the pool, and once it ran dry both were refused.
    assert set(allowed) == set(denied) == {"acme-search", "acme-support"}
    assert len(llm.requests()) == len(allowed)
    rows = {row["tenant"]: row for row in collector.usage(group_by="tenant")}
    spent = sum(rows[t]["total_tokens"] for t in ("acme-search", "acme-support"))
    assert spent <= 600
    assert f"acme {len(allowed)} calls, {spent} tokens" in output
    policy = re.search(r"policy of the last call of acme-\w+: (\{.*\})", output)
    assert policy is not None
    assert '"limits":["tenant-tokens-per-minute","acme-daily-tokens"]' in policy.group(1)


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_example_says_how_to_run_it(name: str) -> None:
    script = EXAMPLES / name / "app.py"
    docstring = ast.get_docstring(ast.parse(script.read_text())) or ""
    assert "tollmeter fake-llm" in docstring
    assert f"python examples/{name}/app.py" in docstring
    guide = (ROOT / "docs" / "examples.md").read_text()
    assert f"python examples/{name}/app.py" in guide


def test_grants_burn_then_block_the_prepaid_tenant(llm, collector) -> None:
    output = run_example("grants", llm, collector)

    balances = numbers(r"call \d+: ok, balance (\d+)", output)
    assert balances == sorted(balances, reverse=True)
    assert balances[-1] == 0
    assert all(balance > 0 for balance in balances[:-1])
    assert "DENIED by 'grants'" in output
    # Only the admitted calls reached the model; the denied one never did.
    assert len(llm.requests()) == len(balances)
    (row,) = collector.usage(tenant="prepaid")
    consumed = -sum(numbers(r"consumed\s+(-\d+) tokens", output))
    overage = -sum(numbers(r"overage\s+(-\d+) tokens", output))
    assert consumed == 200
    assert consumed + overage == row["total_tokens"]


def test_gateway_answers_429_once_the_tenant_quota_is_used_up(llm, collector) -> None:
    output = run_example("gateway_429", llm, collector)

    statuses = numbers(r"request \d+: (\d+)", output)
    assert statuses[-1] == 429
    assert set(statuses[:-1]) == {200}
    # The refused request never reached the model.
    assert len(llm.requests()) == len(statuses) - 1
    (row,) = collector.usage(tenant="gateway-demo")
    assert row["requests"] == len(statuses) - 1
    (retry_after,) = numbers(r"Retry-After: (\d+)", output)
    assert 0 < retry_after <= 86400  # the daily window ends by then
    body = json.loads(output.split("body: ", 1)[1])
    assert body == {
        "error": "quota exceeded",
        "code": "quota_exceeded",
        "limit": "gateway-daily-tokens",
        "tenant": "gateway-demo",
        "retry_after": retry_after,
    }


def test_an_upgraded_plan_admits_the_tenant_its_free_plan_refused(llm, collector) -> None:
    output = run_example("plans", llm, collector)

    assert "plan-demo is on plan free" in output
    assert "DENIED by 'plan-monthly-tokens'" in output
    assert "plan-demo is now on plan pro" in output
    plans = re.findall(r"event: \d+ tokens on plan (\w+)", output)
    admitted = len(re.findall(r"call \d+: ok", output))
    # The refused call never reached the model; the two after the upgrade did.
    assert len(llm.requests()) == admitted == len(plans)
    assert plans == ["free"] * (admitted - 2) + ["pro"] * 2
    (row,) = collector.usage(tenant="plan-demo")
    # The free plan let through no more than its 300 tokens a month.
    free_tokens = sum(numbers(r"event: (\d+) tokens on plan free", output))
    assert 0 < free_tokens <= 300
    assert row["total_tokens"] == sum(numbers(r"event: (\d+) tokens on plan \w+", output))
