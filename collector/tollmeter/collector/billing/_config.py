"""The ``reconciliation:`` section: which providers' reports the collector imports, how
often, over how many days, and when drift is worth a hook.

```yaml
reconciliation:
  interval: 1h            # import and compare this often; 0 = only on request
  lookback: 2d            # today and the days before it, compared on each run
  by: model               # model | project | api_key
  threshold_percent: 1    # a measure drifting this much (either way) fires a hook once
  timeout: 2m             # per provider, every page of both reports
  providers:
    openai:
      admin_key: sk-admin-...
      base_url: https://api.openai.com   # default
    anthropic:
      admin_key: sk-ant-admin-...
```

Admin keys are secrets: ``repr`` names them by digest only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from tollmeter.collector._config_values import Problems, Section
from tollmeter.collector.billing._compare import GRAINS, Grain
from tollmeter.collector.billing._fetch import ReportSource
from tollmeter.collector.billing._report import PROVIDERS, Provider

__all__ = ["ReconciliationConfig"]

_DAY_S = 86_400.0


@dataclass(frozen=True)
class ReconciliationConfig:
    interval: float = 3600.0
    lookback_days: int = 2
    by: Grain = "model"
    threshold_percent: Decimal = Decimal(1)
    timeout: float = 120.0
    sources: tuple[ReportSource, ...] = field(default=())

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> ReconciliationConfig:
        section = Section(mapping, path)
        problems = Problems()
        values: dict[str, object] = {}
        with problems.collect():
            values["interval"] = section.duration("interval", cls.interval)
        with problems.collect():
            lookback = section.duration("lookback", cls.lookback_days * _DAY_S)
            if lookback % _DAY_S or lookback > 366 * _DAY_S:
                raise section.error("lookback", "expected whole days, at most 366d")
            values["lookback_days"] = int(lookback // _DAY_S)
        with problems.collect():
            values["by"] = section.choice("by", cls.by, GRAINS)
        with problems.collect():
            values["threshold_percent"] = _percent(section)
        with problems.collect():
            values["timeout"] = section.duration("timeout", cls.timeout, positive=True)
        sources: list[ReportSource] = []
        with problems.collect():
            providers = section.section("providers")
            for provider in PROVIDERS:
                if providers.raw(provider) is None:
                    continue
                with problems.collect():
                    sources.append(_source(providers.section(provider), provider, values))
            providers.finish()
        values["sources"] = tuple(sources)
        with problems.collect():
            section.finish()
        problems.raise_any()
        return cls(**values)  # type: ignore[arg-type]  # each value checked above


def _source(entry: Section, provider: Provider, values: dict[str, object]) -> ReportSource:
    problems = Problems()
    key = base_url = None
    with problems.collect():
        key = entry.optional_string("admin_key")
        if key is None:
            raise entry.error("admin_key", "required to read the provider's reports")
    with problems.collect():
        base_url = entry.string("base_url", "")
        if base_url and not base_url.startswith(("http://", "https://")):
            raise entry.error("base_url", f"expected an http(s) URL, got {base_url!r}")
    with problems.collect():
        entry.finish()
    problems.raise_any()
    timeout = values.get("timeout", ReconciliationConfig.timeout)
    return ReportSource(
        provider,
        key or "",
        base_url=base_url or "",
        timeout_s=float(timeout),  # type: ignore[arg-type]
    )


def _percent(section: Section) -> Decimal:
    value = section.raw("threshold_percent")
    if value is None:
        return ReconciliationConfig.threshold_percent
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        number = Decimal("NaN")
    if isinstance(value, bool) or not number.is_finite() or number < 0:
        raise section.error("threshold_percent", f"expected a percentage >= 0, got {value!r}")
    return number
