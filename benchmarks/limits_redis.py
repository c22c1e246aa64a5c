"""Checks per second of the Redis limit engine against the in-process engine, same run.

Both engines check the same requests (one reservation against two matching limits, a
token bucket and a calendar day) from one thread. The Redis engine talks to a
redis-server this script starts on a free loopback port with no persistence (Debian
package ``redis-server``), so the figure includes one round trip per check.

Prints one JSON object. Usage: ``python benchmarks/limits_redis.py --checks 5000``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from tollmeter.collector.limits import CheckRequest, LimitEngine, LimitsConfig
from tollmeter.collector.limits._redis_engine import RedisLimitEngine

LIMITS = LimitsConfig.from_mapping(
    {
        "reservation_ttl": "1h",
        "rules": [
            {"name": "tpm", "limit": 1e12, "window": {"per": "1m"}, "action": "throttle"},
            {"name": "daily", "limit": 1e15, "window": "day"},
        ],
    }
)


def _rate(engine: LimitEngine | RedisLimitEngine, checks: int) -> float:
    requests = [
        CheckRequest(tenant=f"t{i % 50}", estimated_input_tokens=100) for i in range(checks)
    ]
    start = time.perf_counter()
    for request in requests:
        engine.check(request)
    return checks / (time.perf_counter() - start)


def _redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    program = shutil.which("redis-server") or "/usr/bin/redis-server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [program, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", directory]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.01)
    return process, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        process, url = _redis(directory)
        try:
            shared = RedisLimitEngine(dataclasses.replace(LIMITS, storage=url))
            _rate(shared, min(500, args.checks))  # load the scripts, warm the connection
            in_process = _rate(LimitEngine(LIMITS), args.checks)
            redis_rate = _rate(shared, args.checks)
            shared.close()
        finally:
            process.terminate()
            process.wait(10)
    result: dict[str, Any] = {
        "checks": args.checks,
        "in_process_checks_per_s": round(in_process),
        "redis_checks_per_s": round(redis_rate),
        "redis_over_in_process": round(redis_rate / in_process, 4),
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
