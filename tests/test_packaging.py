"""The distribution builds into one wheel holding every namespace portion."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder of each portion of the namespace -> the package it holds.
PORTIONS = {
    "semconv": "semconv",
    "instrumentation": "instrumentation",
    "collector": "collector",
    "testing": "fakellm",
}


@pytest.fixture
def wheel(built_wheel: Path) -> Path:
    return built_wheel


def test_wheel_holds_every_portion_and_marker(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in PORTIONS.values():
        assert f"tollmeter/{package}/__init__.py" in names
        assert f"tollmeter/{package}/py.typed" in names
    assert "tollmeter/semconv/registry.yaml" in names


def test_wheel_leaks_no_tests_or_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    leaked = [
        name
        for name in names
        if name.startswith(("tests/", "benchmarks/", "examples/", "docs/"))
        or name.endswith((".db", ".db-wal", ".parquet", ".pyc"))
        or "__pycache__" in name
    ]
    assert leaked == []


def test_wheel_declares_console_script_and_instrumentors(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
    text = archive.read(entry_points).decode()
    assert "tollmeter = tollmeter.collector.cli:main" in text
    assert "tollmeter_openai = tollmeter.instrumentation.openai:OpenAIInstrumentor" in text
    assert "tollmeter_anthropic = tollmeter.instrumentation.anthropic:AnthropicInstrumentor" in text
    google = "tollmeter.instrumentation.google_genai:GoogleGenAIInstrumentor"
    assert f"tollmeter_google_genai = {google}" in text
    bedrock = "tollmeter.instrumentation.bedrock:BedrockInstrumentor"
    assert f"tollmeter_bedrock = {bedrock}" in text


def test_unpacked_wheel_imports_all_portions(wheel: Path, tmp_path: Path) -> None:
    zipfile.ZipFile(wheel).extractall(tmp_path)
    # Drop the editable install's source folders so only the unpacked wheel can answer.
    sources = [str(ROOT / portion) for portion in PORTIONS]
    probe = (
        "import sys\n"
        f"sources = {sources!r}\n"
        f"sys.path[:] = [{str(tmp_path)!r}] + [p for p in sys.path if p not in sources]\n"
        "import importlib\n"
        f"mods = [importlib.import_module('tollmeter.' + p) for p in {list(PORTIONS.values())!r}]\n"
        f"assert all(m.__file__.startswith({str(tmp_path)!r}) for m in mods), mods\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", probe], check=True, env=env, timeout=60, cwd=tmp_path)


def test_editable_install_imports_all_portions_from_the_source_tree() -> None:
    for portion, package in PORTIONS.items():
        module = importlib.import_module(f"tollmeter.{package}")
        assert module.__file__ is not None
        assert Path(module.__file__).is_relative_to(ROOT / portion)
