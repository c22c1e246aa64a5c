"""The dependency direction of DESIGN.md: semconv <- instrumentation, semconv <- collector.

Instrumentation and collector never import each other (the guard talks to the collector
over HTTP only), and semconv imports neither. The fake LLM server (the ``testing``
portion) stands alone on semconv; only the collector's demo and CLI may start it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "semconv": ("tollmeter.instrumentation", "tollmeter.collector", "tollmeter.fakellm"),
    "instrumentation": ("tollmeter.collector", "tollmeter.fakellm"),
    "collector": ("tollmeter.instrumentation",),
    "testing": ("tollmeter.instrumentation", "tollmeter.collector"),
}
# Package data, not code of the portion: the instrumented app `tollmeter demo` runs in a
# process of its own (the collector only passes its path to the interpreter).
DATA = {"collector": ("_demo_files",)}


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
        if not set(DATA.get(portion, ())) & set(path.parts)
        for module in sorted(_imported_modules(path))
        if module.startswith(FORBIDDEN[portion])
    ]
    assert offending == []
