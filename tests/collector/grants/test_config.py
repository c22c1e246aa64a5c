"""The ``grants:`` section: defaults, and every problem reported at once with its key path."""

from __future__ import annotations

import pytest

from tollmeter.collector._config import Config
from tollmeter.collector.errors import InvalidConfig


def test_defaults_allow_overage_and_warn_at_a_tenth() -> None:
    grants = Config.from_mapping({}).grants
    assert (grants.overage, grants.low_balance_fraction, grants.interval) == ("allow", 0.1, 60.0)
    assert grants.policy("anyone") == "allow"


def test_a_tenant_policy_overrides_the_default() -> None:
    grants = Config.from_mapping(
        {"grants": {"overage": "block", "tenants": {"trial": "allow"}, "interval": "5m"}}
    ).grants
    assert (grants.policy("trial"), grants.policy("acme"), grants.interval) == (
        "allow",
        "block",
        300.0,
    )


def test_every_problem_is_reported_at_once_with_its_key_path() -> None:
    with pytest.raises(InvalidConfig) as raised:
        Config.from_mapping(
            {
                "grants": {
                    "overage": "maybe",
                    "tenants": {"a": "nope"},
                    "low_balance_fraction": 3,
                    "interval": "0s",
                    "colour": "red",
                }
            }
        )
    keys = sorted(problem.key for problem in raised.value.problems)
    assert keys == [
        "grants.colour",
        "grants.interval",
        "grants.low_balance_fraction",
        "grants.overage",
        "grants.tenants.a",
    ]
