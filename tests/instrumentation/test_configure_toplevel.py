"""``tollmeter.configure``, ``.attribute`` and the errors an app catches, at the top level,
loaded lazily."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import tollmeter.collector, tollmeter.semconv
assert "tollmeter.instrumentation" not in sys.modules, "collector pulled in instrumentation"
import tollmeter
assert "tollmeter.instrumentation" not in sys.modules, "import tollmeter is not lazy"
import tollmeter.instrumentation as instrumentation
from tollmeter.instrumentation.errors import BudgetExceeded, QuotaExceeded
assert tollmeter.configure is instrumentation.configure
assert tollmeter.attribute is instrumentation.attribute
assert tollmeter.BudgetExceeded is BudgetExceeded
assert tollmeter.QuotaExceeded is QuotaExceeded
assert {"BudgetExceeded", "QuotaExceeded"} <= set(tollmeter.__all__)
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
