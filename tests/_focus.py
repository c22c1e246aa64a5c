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
class FocusValidator:
    program: Path

    def validate(self, csv_file: Path, version: str = "1.0") -> subprocess.CompletedProcess[str]:
        """Run the validator on ``csv_file``; the result's output lists every failed rule."""
        return subprocess.run(
            [str(self.program), "--data-file", str(csv_file), "--validate-version", version],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@pytest.fixture(scope="session")
def focus_validator() -> FocusValidator:
    if not _PROGRAM.exists():
        pytest.fail(
            "focus-validator is not installed: run `make .venv-focus/.installed-stamp` "
            "(`make test` does)",
            pytrace=False,
        )
    return FocusValidator(_PROGRAM)
