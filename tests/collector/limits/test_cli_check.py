"""``tollmeter check``: dry runs against a configuration file and against a running API."""

from __future__ import annotations

import json
import socket

import pytest
import yaml
from click.testing import CliRunner
from starlette.applications import Starlette

from tollmeter.collector._cli_check import check_command
from tollmeter.collector.limits import CheckRequest, LimitsConfig, LimitsService, limits_routes

LIMITS = {
    "rules": [
        {"name": "daily", "limit": 1000, "window": "day"},
        {
            "name": "gpt4",
            "limit": 500,
            "window": "day",
            "match": {"model": "gpt-4*"},
            "action": "downgrade",
            "downgrade_model": "gpt-4o-mini",
        },
    ]
}


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tollmeter.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "limits": LIMITS}))
    return path


def _run(*args, env=None):
    return CliRunner().invoke(check_command, [*args], env=env, catch_exceptions=False)


def test_without_config_or_url_it_refuses_to_answer():
    result = _run("--tenant", "trial", env={"TOLLMETER_CONFIG": "", "TOLLMETER_URL": ""})
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "--config" in result.stderr
    assert "--url" in result.stderr


def test_saved_state_missing_is_said_with_the_path_looked_at(tmp_path, monkeypatch):
    # A relative data_dir, as in the quick start, read from another directory.
    config_dir = tmp_path / "deploy"
    config_dir.mkdir()
    path = config_dir / "tollmeter.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "state", "limits": LIMITS}))
    (config_dir / "state").mkdir()
    LimitsService(
        LimitsConfig.from_mapping(LIMITS), state_path=config_dir / "state" / "limits.db"
    ).close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = _run("--config", str(path), "--tenant", "acme")
    assert result.exit_code == 0
    assert result.stdout.startswith("ALLOWED")
    assert f"no saved limit state at {elsewhere / 'state' / 'limits.db'}" in result.stderr

    monkeypatch.chdir(config_dir)
    found = _run("--config", str(path), "--tenant", "acme")
    assert (found.exit_code, found.stderr) == (0, "")
    assert _run("--config", str(path), "--tenant", "acme", "--fresh").stderr == ""


def test_allowed_and_denied_against_a_config(config_file):
    ok = _run("--config", str(config_file), "--tenant", "acme", "--input-tokens", "900")
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith("ALLOWED (action: allow)")
    assert "daily" in ok.stdout
    denied = _run("--config", str(config_file), "--tenant", "acme", "--input-tokens", "1001")
    assert denied.exit_code == 1
    assert denied.stdout.startswith("DENIED (action: block) by limit daily")


def test_saved_state_counts_unless_fresh(config_file, tmp_path):
    service = LimitsService(
        LimitsConfig.from_mapping(LIMITS), state_path=tmp_path / "data" / "limits.db"
    )
    assert service.check(CheckRequest(tenant="acme", estimated_input_tokens=800)).allowed
    service.close()
    args = ["--config", str(config_file), "--tenant", "acme", "--input-tokens", "300"]
    assert _run(*args).exit_code == 1
    assert _run(*args, "--fresh").exit_code == 0
    # The dry runs reserved nothing.
    assert _run(*args[:-1], "200").exit_code == 0
    assert _run(*args[:-1], "200").exit_code == 0


def test_json_output_and_downgrade(config_file):
    result = _run(
        "--config",
        str(config_file),
        "--tenant",
        "acme",
        "--model",
        "gpt-4o",
        "--input-tokens",
        "600",
        "--json",
    )
    assert result.exit_code == 0
    decision = json.loads(result.stdout)
    assert (decision["action"], decision["downgrade_model"]) == ("downgrade", "gpt-4o-mini")
    assert decision["reservation_id"] is None


def test_invalid_config_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("limits:\n  rules:\n    - {name: x, limit: -1, window: day}\n")
    result = CliRunner().invoke(check_command, ["--config", str(path), "--tenant", "a"])
    assert result.exit_code == 2
    assert "limits.rules[0].limit" in result.output


def test_against_a_running_api(serve_app):
    service = LimitsService(LimitsConfig.from_mapping(LIMITS))
    try:
        with serve_app(Starlette(routes=limits_routes(service))) as server:
            ok = _run("--url", server.url, "--tenant", "acme", "--input-tokens", "10")
            assert ok.exit_code == 0, ok.output
            denied = _run("--url", server.url, "--tenant", "acme", "--input-tokens", "5000")
            assert denied.exit_code == 1
            assert service.status("acme")["active_reservations"] == 0
    finally:
        service.close()


def test_unreachable_collector_exits_3():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = CliRunner().invoke(check_command, ["--url", url, "--tenant", "a"])
    assert result.exit_code == 3
    assert "cannot reach" in result.output
