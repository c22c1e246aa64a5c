"""Fixtures shared by every test: real servers on free ports, offline tokenizers."""

from __future__ import annotations

import os
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
