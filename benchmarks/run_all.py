"""Run every benchmark with its quick defaults and print one JSON object of their results.

Each benchmark runs in its own interpreter (they measure process-wide figures such as
peak RSS) and prints one JSON object, which is collected under its name. Extra figures,
such as the 5-million-event export, come from running a script alone with its flags.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "instrumentation_overhead",
    "instrumentation_loop",
    "ingest",
    "ledger_growth",
    "check",
    "forward",
    "export",
)
TIMEOUT_S = 1800


def run(name: str) -> object:
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(HERE / f"{name}.py")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    if completed.returncode != 0:
        return {"error": f"exit code {completed.returncode}", "stderr": completed.stderr[-2000:]}
    print(f"{name}: done in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return json.loads(completed.stdout)


def main() -> int:
    names = sys.argv[1:] or list(BENCHMARKS)
    results = {name: run(name) for name in names}
    print(json.dumps(results, indent=2))
    return 1 if any(isinstance(r, dict) and "error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
