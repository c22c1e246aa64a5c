"""Typed ``limits:`` and ``hooks:`` configuration sections.

Both are parsed from plain mappings (YAML already loaded) by ``from_mapping(mapping,
path)``; every error is an ``InvalidSetting`` (a ``ConfigurationError``) naming the key
path and the reason,
so ``tollmeter validate-config`` can point at the offending line of a config file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from tollmeter.collector._dimensions import METER_DIMENSIONS
from tollmeter.collector.limits import _values as read
from tollmeter.collector.limits._values import parse_duration

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
    "LimitConfig",
    "LimitsConfig",
    "Measure",
    "RollingWindowConfig",
    "parse_duration",
]

Action = Literal["block", "throttle", "alert", "downgrade"]
Measure = Literal["input", "output", "total", "cache_read", "weighted", "cost", "requests"]
Period = Literal["day", "week", "month"]
HookEvent = Literal["threshold_crossed", "limit_exceeded", "request_denied", "reservation_expired"]

ACTIONS: tuple[Action, ...] = ("block", "throttle", "alert", "downgrade")
MEASURES: tuple[Measure, ...] = (
    "input",
    "output",
    "total",
    "cache_read",
    "weighted",
    "cost",
    "requests",
)
DIMENSIONS: tuple[str, ...] = METER_DIMENSIONS
"""Request attributes a limit can match on and keep separate counters by."""
WEIGHT_BUCKETS: tuple[str, ...] = ("input", "cache_read", "cache_write", "output", "reasoning")
"""The five exclusive token buckets a ``weighted`` measure can weigh."""
HOOK_EVENTS: tuple[HookEvent, ...] = (
    "threshold_crossed",
    "limit_exceeded",
    "request_denied",
    "reservation_expired",
)
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
class LimitConfig:
    name: str
    limit: float
    window: RollingWindowConfig | CalendarWindowConfig
    measure: Measure = "total"
    match: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    group_by: tuple[str, ...] = ("tenant",)
    weights: Mapping[str, float] = field(default_factory=dict)
    action: Action = "block"
    alert_at: tuple[float, ...] = ()
    downgrade_model: str | None = None
    currency: str | None = None

    @classmethod
    def from_mapping(
        cls, mapping: object, path: str, *, default_timezone: str = "UTC"
    ) -> LimitConfig:
        """Parse one rule; every problem of it is reported at once."""
        m = read.mapping(mapping, path)
        problems = read.Problems()
        with problems.collect():
            read.no_unknown(m, _RULE_KEYS, path)
        for required in ("name", "limit", "window"):
            if required not in m:
                problems.add(f"{path}.{required}", "required")
        values: dict[str, object] = {}
        with problems.collect():
            name = read.text(m.get("name"), f"{path}.name")
            if not _NAME.match(name):
                raise read.error(
                    f"{path}.name: use letters, digits, '_', '.', ':' or '-' (got {name[:140]!r})"
                )
            values["name"] = name
        measure = "total"
        with problems.collect():
            measure = read.choice(m.get("measure", "total"), MEASURES, f"{path}.measure")
            values["measure"] = measure
        with problems.collect():
            values["weights"] = _weights(m.get("weights"), measure, f"{path}.weights")
        action = "block"
        with problems.collect():
            action = read.choice(m.get("action", "block"), ACTIONS, f"{path}.action")
            values["action"] = action
        with problems.collect():
            downgrade = m.get("downgrade_model")
            if action == "downgrade":
                downgrade = read.text(downgrade, f"{path}.downgrade_model")
            elif downgrade is not None:
                raise read.error(f"{path}.downgrade_model: only valid with action: downgrade")
            values["downgrade_model"] = downgrade
        with problems.collect():
            currency = m.get("currency")
            if currency is not None:
                currency = read.text(currency, f"{path}.currency")
                if measure != "cost":
                    raise read.error(f"{path}.currency: only valid with measure: cost")
            values["currency"] = currency
        with problems.collect():
            if "limit" in m:
                values["limit"] = read.number(m["limit"], f"{path}.limit")
        with problems.collect():
            if "window" in m:
                values["window"] = _window(m["window"], f"{path}.window", default_timezone)
        with problems.collect():
            values["match"] = _match(m.get("match", {}), f"{path}.match")
        with problems.collect():
            values["group_by"] = _group_by(m.get("group_by", ["tenant"]), f"{path}.group_by")
        with problems.collect():
            values["alert_at"] = _alert_at(m.get("alert_at", []), f"{path}.alert_at")
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
)


def _weights(value: object, measure: str, path: str) -> Mapping[str, float]:
    if value is None:
        if measure == "weighted":
            raise read.error(f"{path}: required with measure: weighted")
        return {}
    if measure != "weighted":
        raise read.error(f"{path}: only valid with measure: weighted")
    m = read.mapping(value, path)
    read.no_unknown(m, WEIGHT_BUCKETS, path)
    weights = {k: read.number(v, f"{path}.{k}", positive=False) for k, v in m.items()}
    # Unlisted buckets count once: "output: 4" alone must not make input free.
    return {bucket: weights.get(bucket, 1.0) for bucket in WEIGHT_BUCKETS}


def _window(
    value: object, path: str, default_timezone: str
) -> RollingWindowConfig | CalendarWindowConfig:
    if isinstance(value, str) and value in _PERIODS:
        return CalendarWindowConfig(period=value, timezone=default_timezone)
    if isinstance(value, (str, int, float)):
        return RollingWindowConfig(per_s=parse_duration(value, path))
    m = read.mapping(value, path)
    kind = read.choice(
        m.get("type", "rolling" if "per" in m else "calendar"), _KINDS, f"{path}.type"
    )
    if kind == "rolling":
        read.no_unknown(m, ("type", "per", "burst"), path)
        if "per" not in m:
            raise read.error(f"{path}.per: required for a rolling window")
        burst = m.get("burst")
        return RollingWindowConfig(
            per_s=parse_duration(m["per"], f"{path}.per"),
            burst=None if burst is None else read.number(burst, f"{path}.burst"),
        )
    read.no_unknown(m, ("type", "period", "timezone"), path)
    return CalendarWindowConfig(
        period=cast("Period", read.choice(m.get("period"), _PERIODS, f"{path}.period")),
        timezone=read.timezone(m.get("timezone", default_timezone), f"{path}.timezone"),
    )


_KINDS = ("rolling", "calendar")


def _match(value: object, path: str) -> Mapping[str, tuple[str, ...]]:
    m = read.mapping(value, path)
    read.no_unknown(m, DIMENSIONS, path)
    result: dict[str, tuple[str, ...]] = {}
    for key, patterns in m.items():
        items = [patterns] if isinstance(patterns, str) else patterns
        if not isinstance(items, list) or not items:
            raise read.error(f"{path}.{key}: expected a pattern or a list of patterns")
        result[key] = tuple(read.text(p, f"{path}.{key}") for p in items)
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

    @classmethod
    def from_mapping(cls, mapping: object, path: str = "limits") -> LimitsConfig:
        """Parse the section; every problem of it, in every rule, is reported at once."""
        if mapping is None:
            return cls()
        if isinstance(mapping, list):
            mapping = {"rules": mapping}
        m = read.mapping(mapping, path)
        problems = read.Problems()
        with problems.collect():
            read.no_unknown(m, _LIMITS_KEYS, path)
        values: dict[str, object] = {}
        tz = "UTC"
        with problems.collect():
            tz = read.timezone(m.get("timezone", "UTC"), f"{path}.timezone")
            values["timezone"] = tz
        raw_rules = m.get("rules", [])
        if not isinstance(raw_rules, list):
            problems.add(f"{path}.rules", "expected a list of limits")
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
            values["expired_reservations"] = read.choice(
                m.get("expired_reservations", "charge"),
                ("charge", "release"),
                f"{path}.expired_reservations",
            )
        with problems.collect():
            values["reservation_ttl_s"] = parse_duration(
                m.get("reservation_ttl", 300), f"{path}.reservation_ttl"
            )
        with problems.collect():
            values["state_flush_interval_s"] = parse_duration(
                m.get("state_flush_interval", 0.05), f"{path}.state_flush_interval"
            )
        problems.raise_any()
        return cls(**values)  # type: ignore[arg-type]  # each value checked above


_LIMITS_KEYS = (
    "rules",
    "timezone",
    "reservation_ttl",
    "expired_reservations",
    "state_flush_interval",
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
        m = read.mapping(mapping, path)
        read.no_unknown(
            m,
            (
                "name",
                "type",
                "events",
                "url",
                "secret",
                "target",
                "timeout",
                "max_retries",
                "backoff",
                "max_backoff",
                "queue_size",
            ),
            path,
        )
        kind = read.choice(m.get("type"), ("log", "webhook", "python"), f"{path}.type")
        raw_events = m.get("events", list(HOOK_EVENTS))
        if not isinstance(raw_events, list) or not raw_events:
            raise read.error(f"{path}.events: expected a non-empty list of events")
        events = tuple(
            cast("HookEvent", read.choice(e, HOOK_EVENTS, f"{path}.events[{i}]"))
            for i, e in enumerate(raw_events)
        )
        url = m.get("url")
        target = m.get("target")
        if kind == "webhook":
            url = read.text(url, f"{path}.url")
            if not url.startswith(("http://", "https://")):
                raise read.error(f"{path}.url: expected an http(s) URL, got {url!r}")
        elif url is not None:
            raise read.error(f"{path}.url: only valid for a webhook hook")
        if kind == "python":
            target = read.text(target, f"{path}.target")
            module, _, func = target.partition(":")
            if not module or not func:
                raise read.error(f"{path}.target: expected 'module:function', got {target!r}")
        elif target is not None:
            raise read.error(f"{path}.target: only valid for a python hook")
        secret = m.get("secret")
        if secret is not None:
            secret = read.text(secret, f"{path}.secret")
        retries = m.get("max_retries", 5)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise read.error(f"{path}.max_retries: expected an integer >= 0")
        queue_size = m.get("queue_size", 1000)
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise read.error(f"{path}.queue_size: expected an integer >= 1")
        return cls(
            name=read.text(m.get("name", f"{kind}-{index}"), f"{path}.name"),
            type=cast("Literal['log', 'webhook', 'python']", kind),
            events=events,
            url=url,
            secret=secret,
            target=target,
            timeout_s=parse_duration(m.get("timeout", 5), f"{path}.timeout"),
            max_retries=retries,
            backoff_s=parse_duration(m.get("backoff", 0.5), f"{path}.backoff"),
            max_backoff_s=parse_duration(m.get("max_backoff", 30), f"{path}.max_backoff"),
            queue_size=queue_size,
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
        hooks = tuple(
            HookConfig.from_mapping(h, f"{path}[{i}]", index=i) for i, h in enumerate(mapping)
        )
        names = [h.name for h in hooks]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise read.error(f"{path}[{i}].name: duplicate name {name!r}")
        return cls(hooks=hooks)
