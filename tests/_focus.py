"""The FinOps Foundation's FOCUS validator, run as a program from its own venv.

It needs NumPy below 2, which the dev venv's pyarrow refuses to import beside, so
``make`` installs it into ``.venv-focus`` from ``requirements/focus/validator.txt``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_PROGRAM = Path(__file__).resolve().parents[1] / ".venv-focus" / "bin" / "focus-validator"


@dataclass(frozen=True)
class FocusVerdict:
    passed: bool
    output: str


@dataclass(frozen=True)
class FocusValidator:
    program: Path

    def validate(self, csv_file: Path, version: str = "1.0") -> FocusVerdict:
        """Run the validator on ``csv_file``; ``output`` lists every failed rule."""
        # It reads its currency codes from a path relative to its own package, so it runs
        # from there, and it exits 0 whatever it finds: the verdict is in its output.
        site = next(self.program.parent.parent.glob("lib/python3*/site-packages"))
        result = subprocess.run(
            [str(self.program), "--data-file", str(csv_file), "--validate-version", version],
            cwd=site,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = result.stdout + result.stderr
        passed = "Validation succeeded." in output and "failed" not in output.lower()
        return FocusVerdict(passed, output)


@pytest.fixture(scope="session")
def focus_validator() -> FocusValidator:
    if not _PROGRAM.exists():
        pytest.fail(
            "focus-validator is not installed: run `make .venv-focus/.installed-stamp` "
            "(`make test` does)",
            pytrace=False,
        )
    return FocusValidator(_PROGRAM)
