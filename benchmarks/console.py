"""Console page times over a large ledger, against the usage API in the same run.

Fills a SQLite ledger through the real storage API (``SQLiteLedger.append``, batches of
10,000) with ``--events`` calls of ``--tenants`` tenants spread over the last 30 days,
then starts a collector on it (with one limit per tenant) and times, over HTTP with a
signed-in session, the server's full response for each console page (median and worst
of ``--repeat`` requests). The baseline is ``GET /api/v1/usage?group_by=tenant`` over
the same ledger: the ratio says what the console adds to the query it is built on.
With ``--browser`` (Debian's chromium), the overview's load in a real browser is timed
too (navigation until the chart is drawn).

Prints one JSON object. Usage: ``python benchmarks/console.py --events 1000000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tollmeter.collector import Collector
from tollmeter.collector._config import Config
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import SQLiteLedger

KEY = "bench-admin-key"
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4", "o3-mini", "text-embedding-3-small")
FEATURES = ("search", "chat", "summaries", "agents")
_BATCH = 10_000
_DAY_NS = 86_400 * 10**9


def fill(path: Path, events: int, tenants: int, seed: int = 7) -> float:
    """Write ``events`` calls into a new ledger at ``path``; returns the seconds taken."""
    rng = random.Random(seed)
    now = time.time_ns()
    started = time.perf_counter()
    ledger = SQLiteLedger(str(path), synchronous="normal")
    try:
        for first in range(0, events, _BATCH):
            batch = []
            for number in range(first, min(events, first + _BATCH)):
                # Older calls first, as a real ledger fills: sequences follow time.
                age_ns = (events - number) * 30 * _DAY_NS // events + rng.randrange(10**9)
                inputs = rng.randrange(50, 4000)
                cached = rng.randrange(0, inputs // 2)
                outputs = rng.randrange(10, 800)
                batch.append(
                    UsageEvent(
                        event_id=f"bench-{number}",
                        event_time_ns=now - age_ns,
                        provider="openai",
                        operation="chat",
                        tenant_id=f"tenant-{rng.randrange(tenants):04d}",
                        input_tokens=inputs,
                        cache_read_input_tokens=cached,
                        output_tokens=outputs,
                        reasoning_output_tokens=outputs // 4,
                        total_tokens=inputs + outputs,
                        request_model=rng.choice(MODELS),
                        feature=rng.choice(FEATURES),
                    )
                )
            ledger.append(batch)
    finally:
        ledger.close()
    return time.perf_counter() - started


def _config(data_dir: Path, ledger: Path) -> Config:
    return Config.from_mapping(
        {
            "data_dir": str(data_dir),
            "storage": {"url": f"sqlite:///{ledger}"},
            "receivers": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}},
            "management": {"endpoint": "127.0.0.1:0", "admin_keys": [KEY]},
            "export": {"enabled": False},
            "limits": {
                "rules": [
                    {
                        "name": "monthly",
                        "group_by": ["tenant"],
                        "measure": "total",
                        "window": {"type": "calendar", "period": "month"},
                        "limit": 10_000_000,
                    }
                ]
            },
        }
    )


def _time(http: httpx.Client, path: str, repeat: int) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = http.get(path)
        samples.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {response.status_code}")
    return {"median_ms": statistics.median(samples) * 1000, "max_ms": max(samples) * 1000}


def _browser_load(base_url: str, cookie: str) -> float:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        context = browser.new_context()
        context.add_cookies([{"name": "tollmeter_console", "value": cookie, "url": base_url}])
        page = context.new_page()
        started = time.perf_counter()
        page.goto(f"{base_url}/")
        page.wait_for_selector("figure[data-rendered]")
        elapsed = time.perf_counter() - started
        browser.close()
    return elapsed * 1000


def measure(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    ledger_path = directory / "ledger.db"
    fill_s = fill(ledger_path, args.events, args.tenants)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    collector = Collector(_config(directory / "data", ledger_path))

    def run(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(600)

    run(collector.start())
    try:
        base = collector.management_url
        with httpx.Client(base_url=base, timeout=120) as http:
            http.post("/console/login", data={"key": KEY})
            cookie = http.cookies["tollmeter_console"]
            busiest = http.get(
                "/api/v1/tenants",
                params={"sort": "total_tokens", "limit": "1"},
                headers={"Authorization": f"Bearer {KEY}"},
            ).json()["tenants"][0]["tenant"]
            pages = {
                "overview_day": "/",
                "overview_hour": "/?period=hour",
                "overview_30_days": "/?period=month",
                "tenants": "/console/tenants?sort=total_tokens",
                "tenant_day": f"/console/tenant?id={busiest}",
                "tenant_30_days": f"/console/tenant?id={busiest}&period=month",
                "health": "/console/health",
            }
            results = {name: _time(http, path, args.repeat) for name, path in pages.items()}
            api = _time(
                httpx.Client(
                    base_url=base, timeout=120, headers={"Authorization": f"Bearer {KEY}"}
                ),
                "/api/v1/usage?group_by=tenant",
                args.repeat,
            )
        browser_ms = _browser_load(base, cookie) if args.browser else None
    finally:
        run(collector.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    baseline = api["median_ms"]
    return {
        "events": args.events,
        "tenants": args.tenants,
        "fill_s": round(fill_s, 1),
        "pages": {
            name: {
                **{k: round(v, 1) for k, v in timing.items()},
                "ratio_to_usage_api": round(timing["median_ms"] / baseline, 2),
            }
            for name, timing in results.items()
        },
        "baseline_usage_api_by_tenant": {k: round(v, 1) for k, v in api.items()},
        "browser_overview_load_ms": None if browser_ms is None else round(browser_ms, 1),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--browser", action="store_true", help="also time chromium's load")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tollmeter-console-bench-") as directory:
        print(json.dumps(measure(args, Path(directory)), indent=2))


if __name__ == "__main__":
    main()
