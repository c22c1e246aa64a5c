"""Fixtures shared by every test: real servers on free ports, offline tokenizers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SHARED_TIKTOKEN = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"
if "TIKTOKEN_CACHE_DIR" not in os.environ and _SHARED_TIKTOKEN.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_SHARED_TIKTOKEN)


import pytest  # noqa: E402

_ROOT = Path(__file__).resolve().parents[1]
_TOOL_CACHES = {".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache"}


@pytest.fixture(scope="session", autouse=True)
def _tests_leave_the_checkout_clean():
    """Tests write under their temporary directories, never into the project."""
    before = {entry.name for entry in _ROOT.iterdir()}
    yield
    created = {entry.name for entry in _ROOT.iterdir()} - before - _TOOL_CACHES
    assert not created, f"tests created {sorted(created)} in the project root"


@pytest.fixture(scope="session")
def fake_llm():
    """The offline OpenAI/Anthropic server: ``.url``; OpenAI clients use ``f"{url}/v1"``.

    ``.requests()`` / ``.find(response_id)`` / ``.last()`` give the usage it reported.
    Shared by the whole session: the prompt cache remembers earlier tests' prompts.
    """
    from tollmeter.collector.fakellm import FakeLLMServer

    with FakeLLMServer() as server:
        yield server


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The distribution's wheel, built once per session from the checkout."""
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)]
    result = subprocess.run(
        [*command, str(_ROOT)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("tollmeter-*.whl")
    return wheel
