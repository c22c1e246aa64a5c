"""The ``grants:`` section: what happens once a tenant's grants are used up, and when a
grant's balance is worth a hook.

```yaml
grants:
  overage: allow            # allow (bill what no grant covers) | block (deny checks)
  tenants:                  # per-tenant overage policy, over the default above
    trial-co: block
  low_balance_fraction: 0.1 # grant_low_balance fires once when a grant falls below this
  interval: 1m              # end due grants (expire, roll over) this often
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tollmeter.collector._config_values import Problems, Section
from tollmeter.collector.errors import InvalidSetting

__all__ = ["OVERAGE_POLICIES", "GrantsConfig", "OveragePolicy"]

OveragePolicy = Literal["allow", "block"]
OVERAGE_POLICIES: tuple[OveragePolicy, ...] = ("allow", "block")


@dataclass(frozen=True)
class GrantsConfig:
    overage: OveragePolicy = "allow"
    tenants: dict[str, OveragePolicy] = field(default_factory=dict)
    low_balance_fraction: float = 0.1
    interval: float = 60.0

    def policy(self, tenant: str) -> OveragePolicy:
        return self.tenants.get(tenant, self.overage)

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> GrantsConfig:
        section = Section(mapping, path)
        problems = Problems()
        values: dict[str, object] = {}
        with problems.collect():
            values["overage"] = section.choice("overage", cls.overage, OVERAGE_POLICIES)
        with problems.collect():
            tenants: dict[str, OveragePolicy] = {}
            for tenant, policy in section.string_map("tenants").items():
                with problems.collect():
                    if policy not in OVERAGE_POLICIES:
                        raise InvalidSetting(
                            f"{section.key('tenants')}.{tenant}",
                            f"expected one of {', '.join(OVERAGE_POLICIES)}, got {policy!r}",
                        )
                    tenants[tenant] = policy
            values["tenants"] = tenants
        with problems.collect():
            fraction = section.raw("low_balance_fraction")
            if fraction is None:
                fraction = cls.low_balance_fraction
            if isinstance(fraction, bool) or not isinstance(fraction, int | float):
                raise section.error("low_balance_fraction", "expected a number from 0 to 1")
            if not 0 <= fraction <= 1:
                raise section.error("low_balance_fraction", "expected a number from 0 to 1")
            values["low_balance_fraction"] = float(fraction)
        with problems.collect():
            values["interval"] = section.duration("interval", cls.interval, positive=True)
        with problems.collect():
            section.finish()
        problems.raise_any()
        return cls(**values)  # type: ignore[arg-type]  # each value checked above
