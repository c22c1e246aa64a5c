"""Clients of the session's fake LLM server, and an independent token recount."""

from __future__ import annotations

import anthropic
import openai
import pytest
import tiktoken


class Recount:
    """Counts tokens the way the real APIs document it, independently of the server code."""

    @staticmethod
    def tokens(text: str, encoding: str = "o200k_base") -> int:
        return len(tiktoken.get_encoding(encoding).encode(text))

    def chat_prompt(self, messages: list[dict[str, str]], encoding: str = "o200k_base") -> int:
        """OpenAI's published rule: 3 per message, role and content, name + 1, 3 to prime."""
        total = 3
        for message in messages:
            total += 3 + self.tokens(message["role"], encoding)
            total += self.tokens(message["content"], encoding)
            if "name" in message:
                total += self.tokens(message["name"], encoding) + 1
        return total

    def claude_prompt(self, messages: list[dict[str, str]], system: str = "") -> int:
        """cl100k_base stand-in: the system text, then 3 per message plus its text."""
        total = self.tokens(system, "cl100k_base")
        for message in messages:
            total += 3 + self.tokens(message["content"], "cl100k_base")
        return total

    @staticmethod
    def long_text(marker: str, repeats: int = 150) -> str:
        """Plain English well past the 1024-token cache minimum, unique per ``marker``."""
        return f"{marker}: " + " ".join(["the cat sat on the warm mat by the door"] * repeats)


@pytest.fixture(scope="session")
def recount():
    return Recount()


@pytest.fixture
def oai(fake_llm):
    with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="test-key", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(fake_llm):
    with anthropic.Anthropic(base_url=fake_llm.url, api_key="test-key", max_retries=0) as client:
        yield client
