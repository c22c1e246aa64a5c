"""`tollmeter demo` runs the whole product offline and reports what it metered."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
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
    console_line = r"^console +http://127\.0\.0\.1:\d+/ +\(admin key: demo-admin-key\)$"
    assert re.search(console_line, out.rstrip().splitlines()[-1])
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


@pytest.fixture(scope="module")
def shipped_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The installed ``tollmeter demo``, no arguments, run in a directory outside the checkout:
    that directory and what the command printed."""
    workdir = tmp_path_factory.mktemp("anywhere")
    result = subprocess.run(
        [str(Path(sys.executable).with_name("tollmeter")), "demo"],
        cwd=workdir,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir, result.stdout


def test_the_installed_command_runs_the_shipped_demo_from_any_directory(
    shipped_demo: tuple[Path, str],
) -> None:
    """No path into a checkout: the app and its configuration come with the package."""
    workdir, out = shipped_demo
    assert f"data directory     {workdir / 'demo-data'}\n" in out
    assert "denied before reaching the model" in out
    table = ds.dataset(workdir / "demo-data" / "export", partitioning="hive").to_table()
    assert sorted(set(table.column("tenant_id").to_pylist())) == ["acme", "globex", "initech"]


def _readme_invoice_query() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Export for billing\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sql\n(.*?)```", section, re.S)
    assert match is not None, "README's billing section has no SQL block"
    return match.group(1)


def test_the_readme_invoice_query_bills_the_demo_whenever_it_runs(
    shipped_demo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's query, run as written on the demo's files (it says to read demo-data),
    finds this month's calls: its dates are relative to today."""
    workdir, _ = shipped_demo
    query = _readme_invoice_query()
    assert query.count("tollmeter-data/export") == 1
    monkeypatch.chdir(workdir)
    with duckdb.connect() as con:
        cursor = con.execute(query.replace("tollmeter-data/export", "demo-data/export"))
        columns = [column[0] for column in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    exported = ds.dataset(workdir / "demo-data" / "export", partitioning="hive").to_table()
    assert {row["tenant_id"] for row in rows} == {"acme", "globex", "initech"}
    assert {row["month"] for row in rows} == {
        day[:7] for day in exported.column("date").to_pylist()
    }
    assert sum(row["calls"] for row in rows) == exported.num_rows
    assert any(row["cost"] for row in rows)


def test_the_quickstart_example_is_the_shipped_demo() -> None:
    """One copy: examples/quickstart links to the files the package ships."""
    for name, shipped in (("app.py", DEMO_APP), ("tollmeter.yaml", DEMO_CONFIG)):
        assert (ROOT / "examples" / "quickstart" / name).samefile(shipped)
    assert DEMO_APP.is_relative_to(ROOT / "collector" / "tollmeter")


def test_demo_serves_its_console_until_interrupted(tmp_path: Path) -> None:
    import signal
    import time

    import httpx

    demo = subprocess.Popen(
        [sys.executable, "-m", "tollmeter.collector.cli", "demo", "--serve"],
        cwd=tmp_path,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        console = next(line for line in lines if line.startswith("console"))
        match = re.search(r"(http://\S+)/\s+\(admin key: (\S+)\)", console)
        assert match is not None, console
        url, key = match.groups()
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.post("/console/login", data={"key": key}).status_code in (200, 303)
            page = http.get("/console/tenants").text
        assert all(tenant in page for tenant in ("acme", "globex", "initech"))
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
        if demo.stdout is not None:
            demo.stdout.close()
