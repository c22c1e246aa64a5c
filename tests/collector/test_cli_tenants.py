"""``tollmeter tenants`` and ``tollmeter status`` against a real collector, and the help
of every command."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import click
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tollmeter.collector._cli_group import SUBCOMMANDS, cli
from tollmeter.collector._cli_tenants import format_status
from tollmeter.collector._cli_usage import TABLE_WIDTH

LIMITS = {
    "rules": [
        {"name": "daily", "limit": 1000, "window": "day", "measure": "total"},
        {"name": "trial-cap", "limit": 100, "window": "month", "match": {"tenant": "trial"}},
    ]
}


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def export(running, spans) -> None:
    exporter = OTLPSpanExporter(endpoint=running.grpc_endpoint, insecure=True)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_tenants_and_status(collector_factory, make_spans):
    running = collector_factory(limits=LIMITS, management={"admin_keys": ["k"]})
    export(running, make_spans(2, tenant="acme", input_tokens=100, output_tokens=20))
    export(running, make_spans(1, tenant="trial", input_tokens=150, output_tokens=0, id_prefix="t"))
    env = {"TOLLMETER_URL": running.management_url, "TOLLMETER_ADMIN_KEY": "k"}
    # Limits count a commit after the ledger has it.
    wait_for(
        lambda: running.collector.limits.status("trial")["limits"][0]["used_fraction"] > 0,
        "trial's usage reached its limits",
    )

    listed = invoke("tenants", env=env)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split()[:4] == ["tenant", "requests", "total", "tokens"]
    acme = next(line for line in lines if line.startswith("acme"))
    assert acme.split()[1:3] == ["2", "240"]
    assert "24% of daily" in acme
    trial = next(line for line in lines if line.startswith("trial"))
    assert "BLOCKED by trial-cap" in trial
    assert all(len(line) <= TABLE_WIDTH for line in lines)

    first = invoke("tenants", "--sort", "total_tokens", "--limit", "1", "--json", env=env)
    document = json.loads(first.output)
    assert [entry["tenant"] for entry in document["tenants"]] == ["acme"]
    assert document["total"] == 2

    status = invoke("status", "trial", env=env)
    assert status.exit_code == 0, status.output
    assert status.output.startswith("tenant trial: BLOCKED, 0 open reservations")
    cap = next(line for line in status.output.splitlines() if line.startswith("trial-cap"))
    assert "150%" in cap.split()
    assert "resets in" in cap or "unblocks in" in cap

    denied = invoke("status", "trial", env={"TOLLMETER_URL": running.management_url})
    assert denied.exit_code == 1
    assert "HTTP 401" in denied.output


def test_status_reads_like_a_sentence():
    now = datetime(2026, 12, 4, 5, 19, tzinfo=timezone.utc).timestamp()
    document = {
        "tenant": "acme",
        "blocked": False,
        "active_reservations": 2,
        "limits": [
            {
                "name": "daily",
                "key": {"tenant": "acme"},
                "measure": "total",
                "action": "block",
                "limit": 100000.0,
                "remaining": 88000.0,
                "reset_at": "2026-12-05T00:00:00Z",
                "blocked": False,
                "used_fraction": 0.12,
            },
            {
                "name": "spend",
                "key": {},
                "measure": "cost",
                "action": "alert",
                "limit": 50.0,
                "remaining": 12.345,
                "reset_at": "2027-01-01T00:00:00Z",
                "blocked": False,
                "used_fraction": 0.7531,
            },
        ],
    }
    lines = format_status(document, now=now).splitlines()
    assert lines[0] == "tenant acme: not blocked, 2 open reservations (counted as used)"
    daily = next(line for line in lines if line.startswith("daily"))
    assert daily.split() == [
        "daily", "tenant=acme", "total", "12%", "88,000", "100,000", "block", "resets", "in",
        "18h", "41m",
    ]  # fmt: skip
    spend = next(line for line in lines if line.startswith("spend"))
    assert spend.split()[3:] == ["75%", "$12.35", "$50.00", "alert", "resets", "in", "27d", "18h"]
    assert format_status({"tenant": "x", "limits": []}, now=now).endswith(
        "no limit applies to this tenant"
    )


def test_every_option_of_every_command_names_its_variable():
    context = cli.make_context("tollmeter", ["--help"], resilient_parsing=True)
    for name in SUBCOMMANDS:
        command = cli.get_command(context, name)
        assert command is not None
        with click.Context(command, info_name=name, parent=context) as sub:
            options = [p for p in command.params if isinstance(p, click.Option)]
            for option in options:
                record = option.get_help_record(sub)
                assert record is not None, (name, option.name)
                assert "env var: TOLLMETER_" in record[1], (name, option.name, record)


def test_fake_llm_help_is_plain_text():
    result = invoke("fake-llm", "--help")
    assert result.exit_code == 0
    for markup in ("``", ":func:", ":class:", ".. ", "::"):
        assert markup not in result.output, markup
