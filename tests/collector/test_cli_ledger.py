"""The commands that read the ledger fail the same way on a bad configuration or a
missing ledger, and never create a ledger by looking for one."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tollmeter.collector._cli_group import cli

COMMANDS = {
    "export": [],
    "verify": [],
    "focus-export": ["--from", "2026-11-01", "--to", "2026-11-02", "--out", "focus.parquet"],
    "reconcile-report": [
        "--from", "2026-11-01", "--to", "2026-11-02", "--provider", "openai", "--stored"
    ],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_ledger_is_one_line_and_nothing_is_created(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "empty"
    result = CliRunner().invoke(
        cli, [command, "--data-dir", str(data), *COMMANDS[command]], catch_exceptions=False
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"tollmeter {command}: no ledger in {data}"]
    assert not (data / "ledger.db").exists()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_configuration_problem_is_listed(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Path("bad.yaml")
    config.write_text("shutdown_grace: soon\nexport: {batch_size: -1}\n")
    result = CliRunner().invoke(
        cli, [command, "--config", str(config), *COMMANDS[command]], catch_exceptions=False
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[0] == "invalid configuration:"
    assert any("shutdown_grace" in line for line in lines[1:])
    assert any("export.batch_size" in line for line in lines[1:])
