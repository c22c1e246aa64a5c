"""``examples/stream_stop``: a stream cut at its budget, then one only flagged, against a
real fake LLM server and a real collector process."""

from __future__ import annotations

import ast

from tests.examples import test_examples as shared
from tests.examples.test_examples import EXAMPLES, ROOT, numbers, run_example

# The collector process and the fake LLM server fixtures of the other examples.
collector = shared.collector
llm = shared.llm


def test_the_budget_cuts_the_first_stream_and_warns_on_the_second(llm, collector) -> None:
    output = run_example("stream_stop", llm, collector)

    (used,) = numbers(r"BudgetExceeded after (\d+) of 120 output tokens", output)
    assert 120 <= used <= 125
    assert numbers(r"stop: gen_ai\.usage\.output_tokens = (\d+)", output) == [used]
    assert "stop: tollmeter.stream.stopped = True" in output
    assert numbers(r"warn: read (\d+) chunks", output) == [2000]
    assert "warn: tollmeter.stream.stopped = False" in output
    cut, whole = llm.requests()
    # The server prepared the whole reply both times; the first was left after ~120 tokens.
    assert cut.usage.output_tokens == whole.usage.output_tokens >= 2000


def test_the_example_says_how_to_run_it() -> None:
    script = EXAMPLES / "stream_stop" / "app.py"
    docstring = ast.get_docstring(ast.parse(script.read_text())) or ""
    assert "tollmeter fake-llm" in docstring
    assert "python examples/stream_stop/app.py" in docstring
    assert "python examples/stream_stop/app.py" in (ROOT / "docs" / "examples.md").read_text()
