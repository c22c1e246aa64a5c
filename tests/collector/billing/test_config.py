"""The ``reconciliation:`` section: every problem named by its key path, keys kept secret."""

from __future__ import annotations

import pytest

from tollmeter.collector._config import Config
from tollmeter.collector.errors import InvalidConfig

SECRET = "sk-admin-do-not-print"


def test_defaults_and_a_full_section():
    assert Config().reconciliation.sources == ()
    config = Config.from_mapping(
        {
            "reconciliation": {
                "interval": "30m",
                "lookback": "7d",
                "by": "project",
                "threshold_percent": "2.5",
                "timeout": "45s",
                "providers": {
                    "openai": {"admin_key": SECRET},
                    "anthropic": {"admin_key": "k2", "base_url": "http://127.0.0.1:9"},
                },
            }
        }
    )
    section = config.reconciliation
    assert (section.interval, section.lookback_days, section.by) == (1800, 7, "project")
    assert str(section.threshold_percent) == "2.5"
    assert [(s.provider, s.url, s.timeout_s) for s in section.sources] == [
        ("openai", "https://api.openai.com", 45.0),
        ("anthropic", "http://127.0.0.1:9", 45.0),
    ]
    assert SECRET not in repr(config)


def test_every_problem_is_reported_with_its_key_path():
    with pytest.raises(InvalidConfig) as raised:
        Config.load(
            None,
            overrides={
                "reconciliation.lookback": "36h",
                "reconciliation.by": "tenant",
                "reconciliation.threshold_percent": "-1",
                "reconciliation.providers.openai.base_url": "ftp://example",
                "reconciliation.providers.anthropic.admin_kee": SECRET,
                "reconciliation.providers.gemini.admin_key": "x",
            },
        )
    keys = {problem.key for problem in raised.value.problems}
    assert keys == {
        "reconciliation.lookback",
        "reconciliation.by",
        "reconciliation.threshold_percent",
        "reconciliation.providers.openai.admin_key",
        "reconciliation.providers.openai.base_url",
        "reconciliation.providers.anthropic.admin_key",
        "reconciliation.providers.anthropic.admin_kee",
        "reconciliation.providers.gemini",
    }
    assert SECRET not in str(raised.value)
