from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from tollmeter.collector.storage import open_ledger

_TOLLMETER = Path(sys.executable).with_name("tollmeter")


def _export(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOLLMETER_")}
    environ.update(env or {})
    return subprocess.run(
        [str(_TOLLMETER), "export", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=environ,
    )


@pytest.fixture
def data_dir(tmp_path: Path, make_events) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    with open_ledger(f"sqlite:///{data / 'ledger.db'}") as ledger:
        ledger.append(make_events(40))
    return data


def test_export_command_writes_the_data_dir_export(tmp_path: Path, data_dir: Path) -> None:
    done = _export("--data-dir", str(data_dir), "--collector-id", "cli", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["status"], summary["events"], summary["cursor"]) == ("success", 40, 40)
    assert summary["directory"] == str(data_dir / "export")
    assert all(name.split("/")[1].startswith("cli-") for name in summary["files"])
    query = f"SELECT count(*), sum(cost) FROM read_parquet('{data_dir}/export/*/*.parquet')"
    with duckdb.connect() as con:
        count, cost = con.execute(query).fetchone()
    assert count == 40
    assert isinstance(cost, Decimal)

    again = _export("--data-dir", str(data_dir), "--collector-id", "cli", cwd=tmp_path)
    assert json.loads(again.stdout)["events"] == 0

    rebuilt = _export(
        "--data-dir", str(data_dir), "--collector-id", "cli", "--rebuild", cwd=tmp_path
    )
    assert json.loads(rebuilt.stdout)["events"] == 40
    with duckdb.connect() as con:
        assert con.execute(query).fetchone()[0] == 40


def test_export_command_reads_the_config_file(tmp_path: Path, data_dir: Path) -> None:
    config = tmp_path / "tollmeter.yaml"
    config.write_text(
        f"collector_id: from-file\n"
        f"data_dir: {data_dir}\n"
        f"export:\n  directory: {tmp_path / 'billing'}\n  timezone: America/New_York\n"
    )
    done = _export("--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["directory"] == str(tmp_path / "billing")
    # 2026-11-01 00:00 UTC is still October 31 in New York.
    assert summary["files"], done.stdout
    assert any(name.startswith("date=2026-10-31/from-file-") for name in summary["files"]), summary


def test_export_command_rejects_bad_config_and_missing_ledger(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("export:\n  interval: sometimes\n")
    bad = _export("--config", str(config), cwd=tmp_path)
    assert bad.returncode == 2
    assert "export.interval" in bad.stderr

    missing = _export("--data-dir", str(tmp_path / "nothing-here"), cwd=tmp_path)
    assert missing.returncode == 1
    assert "no ledger" in missing.stderr
    assert not (tmp_path / "nothing-here").exists()
