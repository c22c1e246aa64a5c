"""``tollmeter.configure`` and ``tollmeter.attribute`` at the top level, loaded lazily."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import tollmeter.collector, tollmeter.semconv
assert "tollmeter.instrumentation" not in sys.modules, "collector pulled in instrumentation"
import tollmeter
import tollmeter.instrumentation as instrumentation
assert tollmeter.configure is instrumentation.configure
assert tollmeter.attribute is instrumentation.attribute
try:
    tollmeter.no_such_name
except AttributeError as exc:
    assert "no_such_name" in str(exc)
else:
    raise AssertionError("unknown names must raise AttributeError")
"""


def test_top_level_names_are_lazy_and_every_portion_imports() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
