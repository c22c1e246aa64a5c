"""The dependency direction of DESIGN.md: semconv <- instrumentation, semconv <- collector.

Instrumentation and collector never import each other (the guard talks to the collector
over HTTP only), and semconv imports neither.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "semconv": ("tollmeter.instrumentation", "tollmeter.collector"),
    "instrumentation": ("tollmeter.collector",),
    "collector": ("tollmeter.instrumentation",),
}


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("portion", sorted(FORBIDDEN))
def test_portion_imports_only_what_the_design_allows(portion: str) -> None:
    offending = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / portion / "tollmeter").rglob("*.py"))
        for module in sorted(_imported_modules(path))
        if module.startswith(FORBIDDEN[portion])
    ]
    assert offending == []
