"""Typed ``limits:`` and ``hooks:`` configuration sections.

Both are parsed from plain mappings (YAML already loaded) by ``from_mapping(mapping,
path)`` with the collector's config toolkit (:class:`Section`, durations as everywhere
else); every problem is an ``InvalidSetting`` (a ``ConfigurationError``) naming the key
path and the reason, and a section with several problems reports all of them at once
(``InvalidConfig``), so ``tollmeter validate-config`` lists them together.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from tollmeter.collector._config_values import Problems, Section, duration_setting
from tollmeter.collector._dimensions import METER_DIMENSIONS
from tollmeter.collector.limits import _values as read

__all__ = [
    "ACTIONS",
    "DIMENSIONS",
    "HOOK_EVENTS",
    "MEASURES",
    "WEIGHT_BUCKETS",
    "Action",
    "CalendarWindowConfig",
    "HookConfig",
    "HooksConfig",
    "InFlightConfig",
    "LimitConfig",
    "LimitsConfig",
    "Measure",
    "RollingWindowConfig",
]

Action = Literal["block", "throttle", "alert", "downgrade"]
Measure = Literal[
    "input", "output", "total", "cache_read", "weighted", "cost", "requests", "concurrency"
]
Period = Literal["day", "week", "month"]
HookEvent = Literal[
    "threshold_crossed",
    "limit_exceeded",
    "request_denied",
    "reservation_expired",
    "forecast_exceeded",
    "reconciliation_drift",
    "grant_low_balance",
    "grant_expired",
]

ACTIONS: tuple[Action, ...] = ("block", "throttle", "alert", "downgrade")
MEASURES: tuple[Measure, ...] = (
    "input",
    "output",
    "total",
    "cache_read",
    "weighted",
    "cost",
    "requests",
    "concurrency",
)
DIMENSIONS: tuple[str, ...] = (*METER_DIMENSIONS, "org")
"""Request attributes a limit can match on and keep separate counters by. ``org`` (the
tenant's organisation) is no meter dimension: an organisation's usage is its tenants'."""
WEIGHT_BUCKETS: tuple[str, ...] = ("input", "cache_read", "cache_write", "output", "reasoning")
"""The five exclusive token buckets a ``weighted`` measure can weigh."""
HOOK_EVENTS: tuple[HookEvent, ...] = (
    "threshold_crossed",
    "limit_exceeded",
    "request_denied",
    "reservation_expired",
    "forecast_exceeded",
)
"""What a hook that names no ``events`` is told about."""
OPT_IN_EVENTS: tuple[HookEvent, ...] = (
    "reconciliation_drift",
    "grant_low_balance",
    "grant_expired",
)
"""Events a hook receives only when its ``events`` name them: not about limits."""
_PERIODS: tuple[Period, ...] = ("day", "week", "month")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class RollingWindowConfig:
    """A token bucket: ``limit`` units refill every ``per_s`` seconds, holding at most ``burst``."""

    per_s: float
    burst: float | None = None


@dataclass(frozen=True, slots=True)
class CalendarWindowConfig:
    """A calendar period (weeks start on Monday) in a time zone; resets at its boundary."""

    period: Period
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class InFlightConfig:
    """No window: a ``concurrency`` limit counts calls in flight (open reservations)."""


@dataclass(frozen=True, slots=True)
class LimitConfig:
    name: str
    limit: float
    window: RollingWindowConfig | CalendarWindowConfig | InFlightConfig
    measure: Measure = "total"
    match: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    group_by: tuple[str, ...] = ("tenant",)
    weights: Mapping[str, float] = field(default_factory=dict)
    action: Action = "block"
    alert_at: tuple[float, ...] = ()
    downgrade_model: str | None = None
    currency: str | None = None
    include_internal: bool = False
    """Count usage marked internal too; by default the operator's own calls are left out."""

    @classmethod
    def from_mapping(
        cls, mapping: object, path: str, *, default_timezone: str = "UTC"
    ) -> LimitConfig:
        """Parse one rule; every problem of it is reported at once."""
        section = Section(mapping, path)
        raw = {key: section.raw(key) for key in _RULE_KEYS}
        problems = Problems()
        with problems.collect():
            section.finish()
        in_flight = raw["measure"] == "concurrency"
        for required in ("name", "limit") if in_flight else ("name", "limit", "window"):
            if raw[required] is None:
                problems.add(section.key(required), "required")
        if in_flight:
            # Calls in flight have no period to reset with, nor a share of it to alert at.
            for key in ("window", "alert_at"):
                if raw[key] is not None:
                    problems.add(section.key(key), "not valid with measure: concurrency")
        values: dict[str, object] = {}
        with problems.collect():
            if raw["name"] is not None:
                name = read.text(raw["name"], section.key("name"))
                if not _NAME.match(name):
                    raise section.error(
                        "name", f"use letters, digits, '_', '.', ':' or '-' (got {name[:140]!r})"
                    )
                values["name"] = name
        measure = "total"
        with problems.collect():
            measure = section.choice("measure", "total", MEASURES)
            values["measure"] = measure
        with problems.collect():
            values["weights"] = _weights(raw["weights"], measure, section.key("weights"))
        action = "block"
        with problems.collect():
            action = section.choice("action", "block", ACTIONS)
            values["action"] = action
        with problems.collect():
            downgrade = raw["downgrade_model"]
            if action == "downgrade":
                downgrade = read.text(downgrade, section.key("downgrade_model"))
            elif downgrade is not None:
                raise section.error("downgrade_model", "only valid with action: downgrade")
            values["downgrade_model"] = downgrade
        with problems.collect():
            currency = raw["currency"]
            if currency is not None:
                currency = read.text(currency, section.key("currency"))
                if measure != "cost":
                    raise section.error("currency", "only valid with measure: cost")
            values["currency"] = currency
        with problems.collect():
            values["include_internal"] = section.boolean("include_internal", False)
        with problems.collect():
            if raw["limit"] is not None:
                values["limit"] = read.number(raw["limit"], section.key("limit"))
        with problems.collect():
            if in_flight:
                values["window"] = InFlightConfig()
            elif raw["window"] is not None:
                values["window"] = _window(raw["window"], section.key("window"), default_timezone)
        with problems.collect():
            values["match"] = _match(raw["match"], section.key("match"))
        with problems.collect():
            group_by = ["tenant"] if raw["group_by"] is None else raw["group_by"]
            values["group_by"] = _group_by(group_by, section.key("group_by"))
        with problems.collect():
            alert_at = [] if raw["alert_at"] is None or in_flight else raw["alert_at"]
            values["alert_at"] = _alert_at(alert_at, section.key("alert_at"))
        problems.raise_any()
        return cls(**values)  # type: ignore[arg-type]  # each value checked above


_RULE_KEYS = (
    "name",
    "match",
    "measure",
    "weights",
    "window",
    "limit",
    "action",
    "alert_at",
    "downgrade_model",
    "group_by",
    "currency",
    "include_internal",
)


def _weights(value: object, measure: str, path: str) -> Mapping[str, float]:
    if value is None:
        if measure == "weighted":
            raise read.error(f"{path}: required with measure: weighted")
        return {}
    if measure != "weighted":
        raise read.error(f"{path}: only valid with measure: weighted")
    section = Section(value, path)
    problems = Problems()
    weights: dict[str, float] = {}
    for bucket in WEIGHT_BUCKETS:
        with problems.collect():
            weight = section.raw(bucket)
            # Unlisted buckets count once: "output: 4" alone must not make input free.
            weights[bucket] = (
                1.0 if weight is None else read.number(weight, section.key(bucket), positive=False)
            )
    with problems.collect():
        section.finish()
    problems.raise_any()
    return weights


def _window(
    value: object, path: str, default_timezone: str
) -> RollingWindowConfig | CalendarWindowConfig:
    if isinstance(value, str) and value in _PERIODS:
        return CalendarWindowConfig(period=value, timezone=default_timezone)
    if isinstance(value, (str, int, float)):
        return RollingWindowConfig(per_s=duration_setting(value, path, positive=True))
    section = Section(value, path)
    kind = section.choice(
        "type", "rolling" if section.raw("per") is not None else "calendar", _KINDS
    )
    problems = Problems()
    if kind == "rolling":
        per_s = 0.0
        burst: float | None = None
        with problems.collect():
            if section.raw("per") is None:
                raise section.error("per", "required for a rolling window")
            per_s = section.duration("per", 0.0, positive=True)
        with problems.collect():
            raw_burst = section.raw("burst")
            burst = None if raw_burst is None else read.number(raw_burst, section.key("burst"))
        with problems.collect():
            section.finish()
        problems.raise_any()
        return RollingWindowConfig(per_s=per_s, burst=burst)
    period: str = "day"
    timezone = default_timezone
    with problems.collect():
        raw_period = section.raw("period")
        period = read.choice(raw_period, _PERIODS, section.key("period"))
    with problems.collect():
        timezone = read.timezone(
            section.string("timezone", default_timezone), section.key("timezone")
        )
    with problems.collect():
        section.finish()
    problems.raise_any()
    return CalendarWindowConfig(period=cast("Period", period), timezone=timezone)


_KINDS = ("rolling", "calendar")


def _defaults(cls: type) -> dict[str, Any]:
    # Slotted dataclasses keep their defaults in their fields, not as class attributes.
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _match(value: object, path: str) -> Mapping[str, tuple[str, ...]]:
    section = Section(value, path)
    problems = Problems()
    result: dict[str, tuple[str, ...]] = {}
    for key in DIMENSIONS:
        patterns = section.raw(key)
        if patterns is None:
            continue
        with problems.collect():
            items = [patterns] if isinstance(patterns, str) else patterns
            if not isinstance(items, list) or not items:
                raise section.error(key, "expected a pattern or a list of patterns")
            result[key] = tuple(read.text(p, section.key(key)) for p in items)
    with problems.collect():
        section.finish()
    problems.raise_any()
    return result


def _group_by(value: object, path: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise read.error(f"{path}: expected a list of {', '.join(DIMENSIONS)}")
    dims = tuple(read.choice(v, DIMENSIONS, f"{path}[{i}]") for i, v in enumerate(items))
    if len(set(dims)) != len(dims):
        raise read.error(f"{path}: duplicate dimension")
    return dims


def _alert_at(value: object, path: str) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise read.error(f"{path}: expected a list of fractions such as [0.8, 1.0]")
    fractions = [read.number(v, f"{path}[{i}]") for i, v in enumerate(value)]
    for i, f in enumerate(fractions):
        if f > 10:
            raise read.error(f"{path}[{i}]: a fraction of the limit, got {f!r}")
    return tuple(sorted(set(fractions)))


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """The ``limits:`` section: rules plus how reservations behave."""

    rules: tuple[LimitConfig, ...] = ()
    timezone: str = "UTC"
    reservation_ttl_s: float = 300.0
    expired_reservations: Literal["charge", "release"] = "charge"
    state_flush_interval_s: float = 0.05
    storage: str = "memory"
    """``memory`` (in-process, state in ``<data_dir>/limits.db``) or a ``redis://`` or
    ``rediss://`` URL shared by every replica. Read at start only."""
    redis_unavailable: Literal["open", "closed"] = "open"
    redis_key_prefix: str = "tollmeter:limits"
    redis_timeout_s: float = 0.5
    forecast_interval_s: float = 300.0
    """How often the projections of calendar limits are computed from the ledger."""

    @classmethod
    def from_mapping(cls, mapping: object, path: str = "limits") -> LimitsConfig:
        """Parse the section; every problem of it, in every rule, is reported at once."""
        if mapping is None:
            return cls()
        if isinstance(mapping, list):
            mapping = {"rules": mapping}
        section = Section(mapping, path)
        problems = Problems()
        values: dict[str, object] = {}
        tz = "UTC"
        with problems.collect():
            tz = read.timezone(section.string("timezone", "UTC"), section.key("timezone"))
            values["timezone"] = tz
        raw_rules = section.raw("rules")
        if raw_rules is None:
            raw_rules = []
        if not isinstance(raw_rules, list):
            problems.add(section.key("rules"), "expected a list of limits")
            raw_rules = []
        rules: list[LimitConfig] = []
        for i, raw in enumerate(raw_rules):
            with problems.collect():
                rules.append(
                    LimitConfig.from_mapping(raw, f"{path}.rules[{i}]", default_timezone=tz)
                )
        names = [raw.get("name") if isinstance(raw, Mapping) else None for raw in raw_rules]
        for i, name in enumerate(names):
            if isinstance(name, str) and name in names[:i]:
                problems.add(f"{path}.rules[{i}].name", f"duplicate name {name[:140]!r}")
        values["rules"] = tuple(rules)
        with problems.collect():
            values["expired_reservations"] = section.choice(
                "expired_reservations", "charge", ("charge", "release")
            )
        with problems.collect():
            values["reservation_ttl_s"] = section.duration(
                "reservation_ttl", _defaults(cls)["reservation_ttl_s"], positive=True
            )
        with problems.collect():
            values["state_flush_interval_s"] = section.duration(
                "state_flush_interval", _defaults(cls)["state_flush_interval_s"], positive=True
            )
        with problems.collect():
            values["storage"] = _storage(
                section.string("storage", "memory"), section.key("storage")
            )
        with problems.collect():
            values["redis_unavailable"] = section.choice(
                "redis_unavailable", "open", ("open", "closed")
            )
        with problems.collect():
            prefix = section.string("redis_key_prefix", "tollmeter:limits")
            if "{" in prefix or "}" in prefix or "*" in prefix:
                raise section.error("redis_key_prefix", "must not contain '{', '}' or '*'")
            values["redis_key_prefix"] = prefix
        with problems.collect():
            values["redis_timeout_s"] = section.duration(
                "redis_timeout", _defaults(cls)["redis_timeout_s"], positive=True
            )
        with problems.collect():
            values["forecast_interval_s"] = section.duration(
                "forecast_interval", _defaults(cls)["forecast_interval_s"], positive=True
            )
        with problems.collect():
            section.finish()
        problems.raise_any()
        return cls(**values)  # type: ignore[arg-type]  # each value checked above


def _storage(value: str, path: str) -> str:
    if value == "memory" or value.startswith(("redis://", "rediss://")):
        return value
    raise read.error(f"{path}: expected memory or a redis:// or rediss:// URL, got {value[:80]!r}")


_LIMITS_KEYS = (
    "rules",
    "timezone",
    "reservation_ttl",
    "expired_reservations",
    "state_flush_interval",
    "storage",
    "redis_unavailable",
    "redis_key_prefix",
    "redis_timeout",
    "forecast_interval",
)


@dataclass(frozen=True, slots=True)
class HookConfig:
    """One hook: where to send which limit events."""

    name: str
    type: Literal["log", "webhook", "python"]
    events: tuple[HookEvent, ...] = HOOK_EVENTS
    url: str | None = None
    secret: str | None = None
    target: str | None = None
    timeout_s: float = 5.0
    max_retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    queue_size: int = 1000

    @classmethod
    def from_mapping(cls, mapping: object, path: str, *, index: int = 0) -> HookConfig:
        """Parse one hook; every problem of it is reported at once."""
        section = Section(mapping, path)
        problems = Problems()
        kind = "log"
        with problems.collect():
            kind = read.choice(
                section.raw("type"), ("log", "webhook", "python"), section.key("type")
            )
        values: dict[str, object] = {"type": kind}
        with problems.collect():
            name = section.raw("name")
            values["name"] = read.text(
                f"{kind}-{index}" if name is None else name, section.key("name")
            )
        with problems.collect():
            values["events"] = _hook_events(section.raw("events"), section.key("events"))
        with problems.collect():
            url = section.raw("url")
            if kind == "webhook":
                url = read.text(url, section.key("url"))
                if not url.startswith(("http://", "https://")):
                    raise section.error("url", f"expected an http(s) URL, got {url!r}")
            elif url is not None:
                raise section.error("url", "only valid for a webhook hook")
            values["url"] = url
        with problems.collect():
            target = section.raw("target")
            if kind == "python":
                target = read.text(target, section.key("target"))
                module, _, func = target.partition(":")
                if not module or not func:
                    raise section.error("target", f"expected 'module:function', got {target!r}")
            elif target is not None:
                raise section.error("target", "only valid for a python hook")
            values["target"] = target
        with problems.collect():
            secret = section.raw("secret")
            values["secret"] = None if secret is None else read.text(secret, section.key("secret"))
        for name, minimum in (("max_retries", 0), ("queue_size", 1)):
            with problems.collect():
                values[name] = section.integer(name, _defaults(cls)[name], minimum=minimum)
        for name in ("timeout", "backoff", "max_backoff"):
            with problems.collect():
                default = _defaults(cls)[f"{name}_s"]
                values[f"{name}_s"] = section.duration(name, default, positive=True)
        with problems.collect():
            section.finish()
        problems.raise_any()
        return cls(**values)  # type: ignore[arg-type]  # each value checked above


def _hook_events(value: object, path: str) -> tuple[HookEvent, ...]:
    if value is None:
        return HOOK_EVENTS
    if not isinstance(value, list) or not value:
        raise read.error(f"{path}: expected a non-empty list of events")
    return tuple(
        cast("HookEvent", read.choice(e, (*HOOK_EVENTS, *OPT_IN_EVENTS), f"{path}[{i}]"))
        for i, e in enumerate(value)
    )


@dataclass(frozen=True, slots=True)
class HooksConfig:
    """The ``hooks:`` section: a list of hooks."""

    hooks: tuple[HookConfig, ...] = ()

    @classmethod
    def from_mapping(cls, mapping: object, path: str = "hooks") -> HooksConfig:
        if mapping is None:
            return cls()
        if not isinstance(mapping, list):
            raise read.error(f"{path}: expected a list of hooks")
        problems = Problems()
        hooks: list[HookConfig] = []
        for i, raw in enumerate(mapping):
            with problems.collect():
                hook = HookConfig.from_mapping(raw, f"{path}[{i}]", index=i)
                if hook.name in (h.name for h in hooks):
                    raise read.error(f"{path}[{i}].name: duplicate name {hook.name!r}")
                hooks.append(hook)
        problems.raise_any()
        return cls(hooks=tuple(hooks))
