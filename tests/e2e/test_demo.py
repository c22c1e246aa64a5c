"""`tollmeter demo` runs the whole product offline and reports what it metered."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tollmeter.collector._demo import DEMO_APP, DEMO_CONFIG, DemoError, _prepare_data_dir

ROOT = Path(__file__).resolve().parents[2]


def test_demo_prints_usage_a_denial_and_a_parquet_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tollmeter.collector.cli",
            "demo",
            "--config",
            str(ROOT / "examples/quickstart/tollmeter.yaml"),
            "--app",
            str(ROOT / "examples/quickstart/app.py"),
        ],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "denied before reaching the model" in out
    rows = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^\s+(acme|globex|initech)\s+(\d+)", out, re.M)
    }
    assert set(rows) == {"acme", "globex", "initech"}
    (parquet_line,) = [line for line in out.splitlines() if line.strip().endswith("rows)")]
    assert ".parquet" in parquet_line
    table = ds.dataset(tmp_path / "demo-data" / "export", partitioning="hive").to_table()
    assert table.num_rows == sum(rows.values())
    # The denied call never reached the provider, so it was never metered.
    assert sorted(set(table.column("tenant_id").to_pylist())) == ["acme", "globex", "initech"]


def test_demo_never_wipes_a_directory_it_did_not_create(tmp_path: Path) -> None:
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "ledger.db").write_text("not the demo's")
    with pytest.raises(DemoError, match="not made by the demo"):
        _prepare_data_dir(precious)
    assert (precious / "ledger.db").read_text() == "not the demo's"


def test_demo_data_dir_is_reset_between_runs(tmp_path: Path) -> None:
    data = tmp_path / "demo-data"
    _prepare_data_dir(data)
    (data / "old.parquet").write_text("stale")
    _prepare_data_dir(data)
    assert not (data / "old.parquet").exists()


def test_the_installed_command_runs_the_shipped_demo_from_any_directory(tmp_path: Path) -> None:
    """No path into a checkout: the app and its configuration come with the package."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("tollmeter")), "demo"],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"data directory     {tmp_path / 'demo-data'}\n" in result.stdout
    assert "denied before reaching the model" in result.stdout
    table = ds.dataset(tmp_path / "demo-data" / "export", partitioning="hive").to_table()
    assert sorted(set(table.column("tenant_id").to_pylist())) == ["acme", "globex", "initech"]


def test_the_quickstart_example_is_the_shipped_demo() -> None:
    """One copy: examples/quickstart links to the files the package ships."""
    for name, shipped in (("app.py", DEMO_APP), ("tollmeter.yaml", DEMO_CONFIG)):
        assert (ROOT / "examples" / "quickstart" / name).samefile(shipped)
    assert DEMO_APP.is_relative_to(ROOT / "collector" / "tollmeter")
