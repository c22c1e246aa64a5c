"""The instrumentation benchmarks run and report what their docs say (tiny samples: the
figures themselves are never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_the_loop_benchmark_reports_floor_tollmeter_and_thin_for_each_mode():
    report = _run(
        "instrumentation_loop.py",
        "--calls",
        "20",
        "--repeats",
        "1",
        "--mode",
        "warm",
        "own",
        "together",
    )
    openai, anthropic = report["results"]["openai"], report["results"]["anthropic"]
    assert {"floor_us", "tollmeter_us", "thin_us", "tollmeter_to_floor"} <= set(openai["warm"])
    assert {"floor_us", "tollmeter_us", "tollmeter_to_floor"} <= set(anthropic["warm"])
    assert "tollmeter_to_floor" not in openai["own"]
    for result in (openai["own"], anthropic["own"]):
        assert result["tollmeter_us"] > 0
    for result in (openai["together"], anthropic["together"]):
        assert {
            "floor_us",
            "tollmeter_own_us",
            "floor_then_tollmeter_own_us",
            "plain_us",
            "floor_then_plain_us",
        } <= set(result)


def test_the_overhead_benchmark_reports_against_the_floor():
    report = _run(
        "instrumentation_overhead.py",
        "--only",
        "openai/tollmeter",
        "openai/thin-wrapper",
        "--calls",
        "5",
        "--repeats",
        "1",
        "--chunks",
        "2",
    )
    for name in ("openai/tollmeter", "openai/thin-wrapper"):
        result = report["variants"][name]
        assert result["status"] == "ok", result
        assert {"call_us", "floor_call_us", "added_to_floor", "per_chunk_us"} <= set(result)
