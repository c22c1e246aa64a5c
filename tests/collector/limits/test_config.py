"""Parsing the ``limits:`` and ``hooks:`` sections: good values and errors with key paths."""

from __future__ import annotations

import pytest

from tollmeter.collector.limits import HooksConfig, LimitsConfig
from tollmeter.collector.limits._config import CalendarWindowConfig, RollingWindowConfig
from tollmeter.semconv.errors import ConfigurationError


def test_full_limits_section():
    config = LimitsConfig.from_mapping(
        {
            "timezone": "Europe/Berlin",
            "reservation_ttl": "2m",
            "rules": [
                {
                    "name": "tpm",
                    "match": {"tenant": "acme*", "model": ["gpt-4o*", "o3*"]},
                    "limit": 100000,
                    "window": {"type": "rolling", "per": "1m", "burst": 150000},
                    "action": "throttle",
                },
                {
                    "name": "monthly",
                    "measure": "weighted",
                    "weights": {"output": 4, "cache_read": 0.1},
                    "limit": 5e7,
                    "window": "month",
                    "alert_at": [1.0, 0.8],
                    "action": "downgrade",
                    "downgrade_model": "gpt-4o-mini",
                },
                {
                    "name": "spend",
                    "measure": "cost",
                    "currency": "USD",
                    "limit": 50,
                    "window": "day",
                },
            ],
        }
    )
    tpm, monthly, spend = config.rules
    assert config.reservation_ttl_s == 120
    assert tpm.window == RollingWindowConfig(per_s=60, burst=150000)
    assert tpm.match == {"tenant": ("acme*",), "model": ("gpt-4o*", "o3*")}
    assert monthly.window == CalendarWindowConfig(period="month", timezone="Europe/Berlin")
    assert monthly.alert_at == (0.8, 1.0)
    assert monthly.weights == {
        "input": 1.0,
        "cache_read": 0.1,
        "cache_write": 1.0,
        "output": 4.0,
        "reasoning": 1.0,
    }
    assert (spend.measure, spend.currency, spend.action) == ("cost", "USD", "block")


def test_a_bare_list_is_the_rules():
    assert (
        LimitsConfig.from_mapping([{"name": "a", "limit": 1, "window": "1h"}]).rules[0].name == "a"
    )
    assert LimitsConfig.from_mapping(None) == LimitsConfig()


RULE = {"name": "r", "limit": 10, "window": "day"}


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{**RULE, "limit": -1}], r"limits\.rules\[0\]\.limit: must be positive"),
        ([{**RULE, "limit": True}], r"limits\.rules\[0\]\.limit: expected a number"),
        ([{"name": "r", "limit": 1}], r"limits\.rules\[0\]\.window: required"),
        ([{**RULE, "window": "fortnight"}], r"limits\.rules\[0\]\.window: expected a duration"),
        ([{**RULE, "window": {"per": "0s"}}], r"window\.per: expected a positive duration"),
        (
            [{**RULE, "window": {"period": "day", "timezone": "Mars/Olympus"}}],
            r"window\.timezone: unknown time zone",
        ),
        ([{**RULE, "action": "explode"}], r"rules\[0\]\.action: expected one of block"),
        ([{**RULE, "action": "downgrade"}], r"rules\[0\]\.downgrade_model: expected a non-empty"),
        ([{**RULE, "measure": "weighted"}], r"rules\[0\]\.weights: required"),
        ([{**RULE, "weights": {"output": 2}}], r"rules\[0\]\.weights: only valid"),
        (
            [{**RULE, "measure": "weighted", "weights": {"outptu": 2}}],
            r"weights\.outptu: unknown key",
        ),
        ([{**RULE, "match": {"tenatn": "a"}}], r"rules\[0\]\.match\.tenatn: unknown key"),
        ([{**RULE, "match": {"tenant": []}}], r"match\.tenant: expected a pattern"),
        ([{**RULE, "alert_at": [0.8, "x"]}], r"rules\[0\]\.alert_at\[1\]: expected a number"),
        ([{**RULE, "group_by": ["tenant", "colour"]}], r"group_by\[1\]: expected one of"),
        ([{**RULE, "name": "bad name!"}], r"rules\[0\]\.name: use letters"),
        ([RULE, RULE], r"rules\[1\]\.name: duplicate name"),
        ([{**RULE, "extra": 1}], r"rules\[0\]\.extra: unknown key"),
        (["not a mapping"], r"limits\.rules\[0\]: expected a mapping"),
    ],
)
def test_invalid_limits_name_the_key_path(rules, message):
    with pytest.raises(ConfigurationError, match=message):
        LimitsConfig.from_mapping({"rules": rules})


def test_invalid_section_options():
    with pytest.raises(ConfigurationError, match=r"limits\.reservation_ttl"):
        LimitsConfig.from_mapping({"reservation_ttl": "soon"})
    with pytest.raises(ConfigurationError, match=r"limits\.expired_reservations"):
        LimitsConfig.from_mapping({"expired_reservations": "forgive"})
    with pytest.raises(ConfigurationError, match=r"limits: expected a mapping"):
        LimitsConfig.from_mapping("everything")


def test_hooks_section():
    config = HooksConfig.from_mapping(
        [
            {"name": "ops", "type": "webhook", "url": "https://example.test/h", "secret": "x"},
            {"type": "python", "target": "pkg.mod:func", "events": ["limit_exceeded"]},
            {"type": "log"},
        ]
    )
    ops, py, log = config.hooks
    assert (ops.url, ops.secret, ops.max_retries, ops.queue_size) == (
        "https://example.test/h",
        "x",
        5,
        1000,
    )
    assert py.events == ("limit_exceeded",)
    assert log.type == "log"


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ([{"type": "webhook"}], r"hooks\[0\]\.url: expected a non-empty string"),
        ([{"type": "webhook", "url": "ftp://x"}], r"hooks\[0\]\.url: expected an http"),
        ([{"type": "python", "target": "nomodule"}], r"hooks\[0\]\.target: expected 'module:"),
        ([{"type": "log", "url": "http://x"}], r"hooks\[0\]\.url: only valid"),
        ([{"type": "log", "events": ["boom"]}], r"hooks\[0\]\.events\[0\]: expected one of"),
        ([{"type": "log", "queue_size": 0}], r"hooks\[0\]\.queue_size"),
        ([{"type": "carrier-pigeon"}], r"hooks\[0\]\.type"),
        ([{"name": "a", "type": "log"}, {"name": "a", "type": "log"}], r"hooks\[1\]\.name"),
    ],
)
def test_invalid_hooks_name_the_key_path(hooks, message):
    with pytest.raises(ConfigurationError, match=message):
        HooksConfig.from_mapping(hooks)


def test_validate_config_reports_limit_and_hook_problems(tmp_path):
    from click.testing import CliRunner

    from tollmeter.collector._cli_group import cli

    path = tmp_path / "tollmeter.yaml"
    path.write_text(
        "limits:\n"
        "  rules:\n"
        "    - {name: tpm, limit: 1000, window: {per: 1m}, action: throttle}\n"
        "    - {name: monthly, limit: 5, window: {period: month, timezone: Mars/Base}}\n"
        "hooks:\n"
        "  - {type: webhook, url: 'ftp://nowhere'}\n"
    )
    result = CliRunner().invoke(cli, ["validate-config", str(path)])
    assert result.exit_code == 2
    assert "limits.rules[1].window.timezone: unknown time zone 'Mars/Base'" in result.output
    assert "hooks[0].url: expected an http(s) URL" in result.output
    path.write_text("limits:\n  rules:\n    - {name: tpm, limit: 1000, window: 1m}\n")
    assert CliRunner().invoke(cli, ["validate-config", str(path)]).exit_code == 0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("1.5h", 5400), ("7d", 604800), ("2w", 1209600), (90, 90)],
)
def test_durations_mean_what_they_mean_everywhere(value, seconds):
    from tollmeter.collector._config_values import parse_duration

    config = LimitsConfig.from_mapping(
        {"reservation_ttl": value, "rules": [{**RULE, "window": {"per": value}}]}
    )
    assert config.reservation_ttl_s == parse_duration(value) == seconds
    assert config.rules[0].window == RollingWindowConfig(per_s=seconds)


# A bare number in a string ("90") is refused, as in every other section: only a YAML or
# JSON number means seconds.
@pytest.mark.parametrize("value", [0, -1, True, "soon", "5 parsecs", "1e3s", "90", "1h30m"])
def test_bad_durations(value):
    with pytest.raises(ConfigurationError, match=r"^limits\.reservation_ttl: "):
        LimitsConfig.from_mapping({"reservation_ttl": value})


def test_a_config_file_with_non_finite_limits_names_every_problem(tmp_path):
    from tollmeter.collector._config import Config
    from tollmeter.collector.errors import InvalidConfig

    path = tmp_path / "tollmeter.yaml"
    path.write_text(
        "limits:\n"
        "  reservation_ttl: .inf\n"
        "  rules:\n"
        "    - {name: a, limit: .nan, window: day}\n"
        "    - {name: b, limit: 1e400, window: {per: .inf}, alert_at: [.nan]}\n"
    )
    with pytest.raises(InvalidConfig) as caught:
        Config.load(path)
    assert {problem.key for problem in caught.value.problems} == {
        "limits.reservation_ttl",
        "limits.rules[0].limit",
        "limits.rules[1].limit",
        "limits.rules[1].window.per",
        "limits.rules[1].alert_at[0]",
    }


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**400, "9" * 40 + "d"])
def test_durations_must_be_finite_and_bounded(value):
    with pytest.raises(ConfigurationError, match=r"^limits\.rules\[0\]\.window: "):
        LimitsConfig.from_mapping({"rules": [{**RULE, "window": value}]})


def test_validate_config_names_every_problem_of_limits_and_hooks_at_once(tmp_path):
    from click.testing import CliRunner

    from tollmeter.collector._cli_group import cli

    path = tmp_path / "tollmeter.yaml"
    path.write_text(
        "limits:\n"
        "  surprise: 1\n"
        "  state_flush_interval: 0\n"
        "  rules:\n"
        "    - {name: a, limit: 5, window: {per: soon, burst: -2, colour: red}, extra: 1}\n"
        "    - {name: b, limit: 5, window: {period: fortnight, timezone: Nowhere/Land}}\n"
        "    - {name: c, limit: 5, window: day, weights: {inptu: 2}, measure: weighted}\n"
        "hooks:\n"
        "  - {type: webhook, url: 'ftp://x', timeout: 0, max_retries: -1, colour: 1}\n"
        "  - {type: python}\n"
    )
    result = CliRunner().invoke(cli, ["validate-config", str(path)])
    assert result.exit_code == 2
    for key in (
        "limits.surprise",
        "limits.state_flush_interval",
        "limits.rules[0].extra",
        "limits.rules[0].window.per",
        "limits.rules[0].window.burst",
        "limits.rules[0].window.colour",
        "limits.rules[1].window.period",
        "limits.rules[1].window.timezone",
        "limits.rules[2].weights.inptu",
        "hooks[0].url",
        "hooks[0].timeout",
        "hooks[0].max_retries",
        "hooks[0].colour",
        "hooks[1].target",
    ):
        assert f"{path}: {key}: " in result.output, key
