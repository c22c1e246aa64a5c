"""The ``plans:`` section: every problem reported at once with its key path."""

from __future__ import annotations

import pytest

from tollmeter.collector import Config
from tollmeter.collector.errors import InvalidConfig


def test_every_problem_of_the_plans_is_reported_with_its_key_path() -> None:
    mapping = {
        "plans": {
            "free": {
                "default": True,
                "tenants": ["acme"],
                "limits": [{"name": "monthly", "limit": 10, "window": "month"}],
            },
            "pro": {
                "default": True,
                "tenants": ["acme"],
                "limits": [
                    {"name": "monthly", "measure": "cost", "limit": 10, "window": "month"},
                    {"name": "tpm", "limit": -1, "window": "1m"},
                ],
            },
            "bad name!": {},
        },
        "limits": {"rules": [{"name": "daily", "limit": -5, "window": "day"}]},
    }
    with pytest.raises(InvalidConfig) as caught:
        Config.from_mapping(mapping)
    keys = sorted(p.key for p in caught.value.problems)
    assert keys == [
        "limits.rules[0].limit",
        "plans",
        "plans",
        "plans.pro.limits[0]",
        "plans.pro.limits[1].limit",
        "plans.pro.tenants[0]",
    ]


def test_a_rule_may_not_take_the_name_of_a_plan_limit() -> None:
    mapping = {
        "plans": {"free": {"limits": [{"name": "monthly", "limit": 10, "window": "month"}]}},
        "limits": {"rules": [{"name": "monthly", "limit": 5, "window": "day"}]},
    }
    with pytest.raises(InvalidConfig) as caught:
        Config.from_mapping(mapping)
    assert [(p.key, p.reason) for p in caught.value.problems] == [
        ("limits.rules[0].name", "'monthly' is the name of a plan limit")
    ]


def test_plan_limits_become_rules_of_their_plans_tenants() -> None:
    config = Config.from_mapping(
        {
            "plans": {
                "free": {"default": True, "limits": [{"name": "m", "limit": 1, "window": "day"}]},
                "pro": {
                    "tenants": ["acme"],
                    "limits": [{"name": "m", "limit": 9, "window": "day"}],
                },
            }
        }
    )
    plans = config.plans
    assert (plans.plan_of("acme"), plans.plan_of("anyone")) == ("pro", "free")
    assert [(r.name, r.limit, r.match) for r in plans.rules()] == [
        ("m", 1, {"plan": ("free",)}),
        ("m", 9, {"plan": ("pro",)}),
    ]
