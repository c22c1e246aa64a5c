"""``tollmeter export`` shows progress on long work: a bar on a terminal, plain lines in a
pipe, nothing when one batch does it all."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tollmeter.collector.storage import open_ledger

_TOLLMETER = Path(sys.executable).with_name("tollmeter")


@pytest.fixture
def config_file(tmp_path: Path, make_events) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    with open_ledger(f"sqlite:///{data / 'ledger.db'}") as ledger:
        ledger.append(make_events(50))
    path = tmp_path / "tollmeter.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(data), "export": {"batch_size": 10}}))
    return path


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TOLLMETER_")}


def test_plain_lines_in_a_pipe(config_file: Path) -> None:
    done = subprocess.run(
        [str(_TOLLMETER), "export", "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_environ(),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"] == 50
    lines = done.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["20%", "40%", "60%", "80%", "100%"]
    assert lines[-1].startswith("100%: 50/50 events, ")
    assert all("events/s" in line and "ETA" in line for line in lines)
    assert "\r" not in done.stderr
    assert "\x1b" not in done.stderr

    # Nothing left to do: no progress at all.
    again = subprocess.run(
        [str(_TOLLMETER), "export", "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_environ(),
    )
    assert (again.returncode, again.stderr) == (0, "")


def test_a_bar_on_a_terminal(config_file: Path) -> None:
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [str(_TOLLMETER), "export", "--config", str(config_file)],
        stdout=subprocess.PIPE,
        stderr=terminal,
        env=_environ(),
    ) as process:
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            chunks.append(chunk)
        stdout = process.stdout.read() if process.stdout else b""
        assert process.wait(timeout=60) == 0
    os.close(controller)
    shown = b"".join(chunks).decode()
    assert json.loads(stdout)["events"] == 50
    frames = [frame for frame in shown.split("\r") if frame.strip()]
    assert len(frames) == 5
    assert frames[-1].startswith("[########################] 100%  50/50 events")
    assert all("events/s" in frame and "ETA" in frame for frame in frames)
    assert shown.endswith("\n")
