"""The collector's CLI commands: validate-config, usage, collector start-up failures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import datetime, time
from pathlib import Path

import pytest
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tollmeter.collector._cli_group import cli
from tollmeter.collector._cli_usage import TABLE_WIDTH, format_table

TOLLMETER = str(Path(sys.executable).with_name("tollmeter"))


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def export(running, spans) -> None:
    exporter = OTLPSpanExporter(endpoint=running.grpc_endpoint, insecure=True)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


class TestValidateConfig:
    def test_ok(self, tmp_path):
        path = tmp_path / "ok.yaml"
        path.write_text("receivers: {grpc: {endpoint: '127.0.0.1:5317'}}\n")
        result = invoke("validate-config", str(path))
        assert result.exit_code == 0
        assert result.output == f"OK: {path}\n"

    def test_every_problem_and_exit_2(self, tmp_path):
        path = tmp_path / "bad.yaml"
        path.write_text("receivers: {grpc: {endpoint: nope}}\ningest: {dedupe_windw: 1d}\n")
        result = invoke("validate-config", str(path))
        assert result.exit_code == 2
        assert f"{path}: receivers.grpc.endpoint: expected 'host:port'" in result.output
        assert f"{path}: ingest.dedupe_windw: unknown key" in result.output

    def test_the_environment_does_not_leak_into_validation(self, tmp_path):
        path = tmp_path / "ok.yaml"
        path.write_text("log_level: info\n")
        result = invoke("validate-config", str(path), env={"TOLLMETER_GRPC_ENDPOINT": "bad"})
        assert result.exit_code == 0


def test_collector_help_shows_defaults_and_variables():
    result = invoke("collector", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for fragment in [
        "--grpc-endpoint",
        "env var: TOLLMETER_GRPC_ENDPOINT",
        "default: 127.0.0.1:4317",
        "env var: TOLLMETER_MANAGEMENT_ENDPOINT",
        "env var: TOLLMETER_DATA_DIR",
        "default: ./tollmeter-data",
        "env var: TOLLMETER_CONFIG",
    ]:
        assert fragment in text


class TestUsageCommand:
    def test_table_and_json(self, collector, make_spans):
        export(collector, make_spans(3, tenant="acme", input_tokens=1500))
        export(collector, make_spans(1, tenant="globex", id_prefix="g"))
        result = invoke("usage", "--url", collector.management_url)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        header = ["tenant", "requests", "input", "output", "cached", "total", "cost"]
        assert lines[0].split() == header
        acme = next(line for line in lines if line.startswith("acme"))
        assert "4,500" in acme.split()
        assert all(len(line) <= TABLE_WIDTH for line in lines)

        result = invoke(
            "usage", "--url", collector.management_url, "--json", "--group-by", "tenant,model"
        )
        document = json.loads(result.output)
        rows = {row["tenant"]: row for row in document["rows"]}
        assert rows["acme"]["input_tokens"] == 4500
        assert rows["acme"]["model"] == "gpt-4o-mini"
        assert rows["globex"]["requests"] == 1

    def test_filters_and_since(self, collector, make_spans):
        export(collector, make_spans(2, tenant="acme"))
        result = invoke(
            "usage", "--url", collector.management_url, "--tenant", "nobody", "--since", "1h"
        )
        assert result.exit_code == 0
        assert result.output.strip() == "(no usage)"
        result = invoke("usage", "--url", collector.management_url, "--since", "yesterday")
        assert result.exit_code == 2
        assert "ISO 8601" in result.output

    def test_window_and_model_filter(self, collector, make_spans):
        export(collector, make_spans(2, tenant="acme", model="gpt-4o"))
        export(collector, make_spans(1, tenant="acme", model="o3", id_prefix="o"))
        result = invoke(
            "usage", "--url", collector.management_url, "--json", "--window", "day",
            "--model", "gpt-4o",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        [row] = json.loads(result.output)["rows"]
        assert (row["tenant"], row["requests"]) == ("acme", 2)
        assert row["window_start"].endswith("T00:00:00+00:00")
        week = invoke("usage", "--url", collector.management_url, "--json", "--window", "week")
        assert week.exit_code == 0, week.output
        [row] = json.loads(week.output)["rows"]
        start = datetime.fromisoformat(row["window_start"])
        assert (start.weekday(), start.time(), row["requests"]) == (0, time(0), 3)

    def test_admin_key_from_the_environment(self, collector_factory):
        running = collector_factory(management={"admin_keys": ["s3cret"]})
        denied = invoke("usage", "--url", running.management_url)
        assert denied.exit_code == 1
        assert "HTTP 401" in denied.output
        allowed = invoke(
            "usage", "--url", running.management_url, env={"TOLLMETER_ADMIN_KEY": "s3cret"}
        )
        assert allowed.exit_code == 0, allowed.output

    def test_bad_group_by_is_reported(self, collector):
        result = invoke("usage", "--url", collector.management_url, "--group-by", "planet")
        assert result.exit_code == 2
        assert "HTTP 400" in result.output

    def test_unreachable_collector(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        result = invoke("usage", "--url", f"http://127.0.0.1:{port}", "--timeout", "5")
        assert result.exit_code == 1
        assert "cannot reach" in result.output


def _row(**values: object) -> dict[str, object]:
    row: dict[str, object] = {
        "window_start": None, "tenant": None, "project": None, "model": None, "feature": None,
        "api_key": None, "usage_source": None, "input_tokens": 0, "uncached_input_tokens": 0,
        "cache_read_input_tokens": 0, "cache_write_input_tokens": 0, "output_tokens": 0,
        "non_reasoning_output_tokens": 0, "reasoning_output_tokens": 0, "total_tokens": 0,
        "requests": 0, "cost": None, "currency": None,
    }  # fmt: skip
    row.update(values)
    return row


def test_format_table():
    rows = [
        _row(tenant="acme", input_tokens=1234567, total_tokens=1234600, requests=3,
             cost="12.345", currency="USD"),
        _row(tenant="b", input_tokens=5, total_tokens=5, requests=1, cost="0.000021750000",
             currency="USD"),
        _row(tenant="c", requests=1, cost="1200", currency="JPY"),
        _row(tenant="d", requests=1),
    ]  # fmt: skip
    assert format_table(rows).splitlines() == [
        "tenant  requests      input  output  cached      total          cost",
        "------  --------  ---------  ------  ------  ---------  ------------",
        "acme           3  1,234,567       0       0  1,234,600        $12.35",
        "b              1          5       0       0          5    $0.0000218",
        "c              1          0       0       0          0  1,200.00 JPY",
        "d              1          0       0       0          0",
    ]
    assert format_table([]) == "(no usage)"


def test_format_table_fits_100_columns_unless_wide():
    long = {name: name * 12 for name in ("tenant", "project", "model", "feature")}
    rows = [
        _row(**long, input_tokens=10**9, total_tokens=10**9, requests=10**6, cost="1e6",
             currency="USD")
    ]  # fmt: skip
    narrow = format_table(rows).splitlines()
    assert max(len(line) for line in narrow) <= TABLE_WIDTH
    assert "1,000,000,000" in narrow[2]  # numbers are never shortened
    assert "$1,000,000.00" in narrow[2]
    assert "…" in narrow[2]
    wide = format_table(rows, wide=True).splitlines()
    assert wide[0].split()[4:] == [
        "requests", "input", "uncached", "cache", "read", "cache", "write", "output",
        "reasoning", "total", "cost",
    ]  # fmt: skip
    assert "tenant" * 12 in wide[2]


def test_format_table_names_each_window():
    rows = [_row(window_start="2026-11-30T00:00:00+00:00", tenant="acme", requests=2)]
    assert format_table(rows, window="week").splitlines()[2].startswith("2026-11-30  acme")
    assert format_table(rows, window="month").splitlines()[0].split()[:2] == ["month", "tenant"]


def run_collector(*args: str, env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [TOLLMETER, "collector", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_address_in_use_exits_1_with_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_collector(
            "--grpc-endpoint",
            f"127.0.0.1:{port}",
            "--http-endpoint",
            "127.0.0.1:0",
            "--management-endpoint",
            "127.0.0.1:0",
            env_extra={},
            cwd=tmp_path,
        )
    assert result.returncode == 1
    errors = [
        line for line in result.stderr.splitlines() if line.startswith("tollmeter collector:")
    ]
    assert errors == [
        f"tollmeter collector: cannot start: cannot listen on 127.0.0.1:{port} (gRPC): "
        "address in use or unavailable"
    ]


@pytest.mark.parametrize(
    ("args", "env_extra", "message"),
    [
        (["--config", "missing.yaml"], {}, "missing.yaml: <file>: cannot read"),
        (
            [],
            {"TOLLMETER_HTTP_ENDPOINT": "nope"},
            "environment variable TOLLMETER_HTTP_ENDPOINT: receivers.http.endpoint",
        ),
        (["--management-endpoint", "x"], {}, "command line: management.endpoint"),
    ],
)
def test_invalid_configuration_exits_2(tmp_path, args, env_extra, message):
    result = run_collector(*args, env_extra=env_extra, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "tollmeter-data").exists()


def test_help_lists_each_command_with_its_own_summary():
    from tollmeter.collector._cli_group import SUBCOMMANDS

    context = cli.make_context("tollmeter", ["--help"], resilient_parsing=True)
    for name, entry in SUBCOMMANDS.items():
        command = cli.get_command(context, name)
        assert command is not None
        assert command.name == name
        assert command.get_short_help_str(limit=200) == entry.summary


def test_help_and_the_fake_server_load_none_of_the_collector():
    probe = (
        "import sys\n"
        "from tollmeter.collector.cli import main\n"
        "for args in (['--help'], ['fake-llm', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, exit.code\n"
        "heavy = {'grpc', 'pyarrow', 'tollmeter.collector._server'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
