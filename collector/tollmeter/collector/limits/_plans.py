"""Plans: named tiers of limits (free, pro...) and the tenants on each.

The ``plans:`` section names each plan, its limits (written as ``limits.rules`` entries)
and, optionally, its tenants; one plan may be the ``default`` of tenants on none::

    plans:
      free:
        default: true
        limits:
          - {name: monthly-tokens, limit: 100000, window: month}
      pro:
        tenants: [acme]
        limits:
          - {name: monthly-tokens, limit: 10000000, window: month}

Each plan limit becomes a rule that matches the tenants on its plan. Limits of the same
name in several plans are one limit with a limit value per plan: they must measure the
same thing over the same window, and they share their counters, so a tenant moved to
another plan keeps what it used this period and meets the new plan's value at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from tollmeter.collector._config_values import Problems, Section
from tollmeter.collector.errors import InvalidSetting
from tollmeter.collector.limits._config import LimitConfig, LimitsConfig, RollingWindowConfig

__all__ = ["PlansConfig", "name_clashes", "with_plan_rules"]

_MAX_NAME = 64


@dataclass(frozen=True)
class PlansConfig:
    """Plan name -> its limits, tenant -> plan, and the plan of every other tenant."""

    limits: Mapping[str, tuple[LimitConfig, ...]] = field(default_factory=dict)
    plan_of_tenant: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None

    @classmethod
    def from_mapping(cls, mapping: object, path: str = "plans") -> PlansConfig:
        """Parse the section; every problem, in every plan, is reported at once."""
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise InvalidSetting(path, "expected a mapping of plan names")
        problems = Problems()
        limits: dict[str, tuple[LimitConfig, ...]] = {}
        owner: dict[str, str] = {}
        defaults: list[str] = []
        # name -> (key path, limit) of its first definition, to compare the others with.
        first: dict[str, tuple[str, LimitConfig]] = {}
        for plan in sorted(mapping, key=str):
            with problems.collect():
                if not isinstance(plan, str) or not _is_name(plan):
                    raise InvalidSetting(
                        path,
                        f"a plan name has 1 to {_MAX_NAME} letters, digits, '_', '.' or '-', "
                        f"not {plan!r:.40}",
                    )
                section = Section(mapping[plan], f"{path}.{plan}")
                if section.boolean("default", False):
                    defaults.append(plan)
                tenants = section.string_list("tenants")
                for index, tenant in enumerate(tenants):
                    taken = owner.setdefault(tenant, plan)
                    if taken != plan:
                        problems.add(
                            f"{section.key('tenants')}[{index}]",
                            f"tenant {tenant!r} is already on plan {taken!r}",
                        )
                limits[plan] = _plan_limits(section, first, problems)
                section.finish()
        if len(defaults) > 1:
            problems.add(path, f"one default plan at most, not {', '.join(defaults)}")
        problems.raise_any()
        return cls(limits=limits, plan_of_tenant=owner, default=defaults[0] if defaults else None)

    def plan_of(self, tenant: str) -> str | None:
        """The plan the configuration puts ``tenant`` on."""
        return self.plan_of_tenant.get(tenant, self.default)

    def rules(self) -> tuple[LimitConfig, ...]:
        """Every plan limit as a rule of the tenants on its plan, plan by plan."""
        return tuple(
            dataclasses.replace(limit, match={**limit.match, "plan": (plan,)})
            for plan, plan_limits in self.limits.items()
            for limit in plan_limits
        )

    def names(self) -> set[str]:
        return {limit.name for plan_limits in self.limits.values() for limit in plan_limits}


def with_plan_rules(limits: LimitsConfig, plans: PlansConfig) -> LimitsConfig:
    """``limits`` with the plans' rules after its own (what the engines enforce)."""
    if not plans.limits:
        return limits
    return dataclasses.replace(limits, rules=(*limits.rules, *plans.rules()))


def name_clashes(limits: LimitsConfig, plans: PlansConfig, path: str) -> list[tuple[str, str]]:
    """(key, reason) for each rule of ``limits`` named like a plan limit: a name is one
    set of counters."""
    taken = plans.names()
    return [
        (f"{path}.rules[{i}].name", f"{rule.name!r} is the name of a plan limit")
        for i, rule in enumerate(limits.rules)
        if rule.name in taken
    ]


def _plan_limits(
    section: Section, first: dict[str, tuple[str, LimitConfig]], problems: Problems
) -> tuple[LimitConfig, ...]:
    raw = section.raw("limits")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.add(section.key("limits"), "expected a list of limits")
        return ()
    parsed: list[LimitConfig] = []
    names: set[str] = set()
    for index, item in enumerate(raw):
        key = f"{section.key('limits')}[{index}]"
        with problems.collect():
            limit = LimitConfig.from_mapping(item, key)
            if limit.name in names:
                raise InvalidSetting(f"{key}.name", f"duplicate name {limit.name!r}")
            names.add(limit.name)
            seen = first.setdefault(limit.name, (key, limit))
            if seen[1] is not limit and _counted_apart(seen[1], limit):
                raise InvalidSetting(
                    key,
                    f"a limit named {limit.name!r} in several plans must have the same "
                    f"measure, weights, currency, group_by and window as {seen[0]}",
                )
            parsed.append(limit)
    return tuple(parsed)


def _counted_apart(one: LimitConfig, other: LimitConfig) -> bool:
    """Whether two limits could not share counters: they count something different."""
    return (
        one.measure != other.measure
        or dict(one.weights) != dict(other.weights)
        or one.currency != other.currency
        or one.group_by != other.group_by
        or _period(one) != _period(other)
    )


def _period(limit: LimitConfig) -> object:
    # A bucket's burst is its capacity: a value of each plan, like the limit itself.
    window = limit.window
    if isinstance(window, RollingWindowConfig):
        return dataclasses.replace(window, burst=None)
    return window


def _is_name(value: str) -> bool:
    return (
        0 < len(value) <= _MAX_NAME
        and value[0].isalnum()
        and all(c.isalnum() or c in "_.-" for c in value)
    )
