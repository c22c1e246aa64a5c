"""Organisations: which tenants belong to which organisation, and whose word counts.

The ``organisations:`` section names each organisation and its tenants::

    organisations:
      acme:
        tenants: [acme-search, acme-support]

A tenant belongs to one organisation at most. A span may claim an organisation with
``tollmeter.org.id``, and tenants are not trusted to tell the truth about it, so the
claim counts only where nothing better is known: the configuration wins for a tenant it
maps, and a span sent with an ingest key bound to a tenant claims nothing (a tenant
could otherwise spend another organisation's pool, or leave its own). An ignored claim
never refuses the span: the call is metered all the same, under the organisation the
configuration gives, or none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tollmeter.collector._config_values import Problems, Section
from tollmeter.collector.errors import InvalidSetting

__all__ = ["OrganisationsConfig"]

_MAX_NAME = 256


@dataclass(frozen=True)
class OrganisationsConfig:
    """Tenant → organisation, from the ``organisations:`` section."""

    org_of_tenant: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> OrganisationsConfig:
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise InvalidSetting(path, "expected a mapping of organisation names")
        problems = Problems()
        owner: dict[str, str] = {}
        for org in sorted(mapping, key=str):
            with problems.collect():
                if not isinstance(org, str) or not org.strip() or len(org) > _MAX_NAME:
                    raise InvalidSetting(
                        path,
                        f"an organisation name has 1 to {_MAX_NAME} characters, not {org!r:.40}",
                    )
                section = Section(mapping[org], f"{path}.{org}")
                tenants = section.string_list("tenants")
                for index, tenant in enumerate(tenants):
                    first = owner.setdefault(tenant, org)
                    if first != org:
                        problems.add(
                            f"{section.key('tenants')}[{index}]",
                            f"tenant {tenant!r} already belongs to organisation {first!r}",
                        )
                section.finish()
        problems.raise_any()
        return cls(org_of_tenant=owner)

    def org_of(
        self, tenant: str, claimed: str | None = None, *, trusted: bool = False
    ) -> str | None:
        """The organisation of ``tenant``: the configured one, else what a trusted sender
        claimed (``trusted``: not an ingest key bound to a tenant)."""
        configured = self.org_of_tenant.get(tenant)
        if configured is not None:
            return configured
        return claimed if trusted else None

    def tenants_of(self, org: str) -> tuple[str, ...]:
        return tuple(t for t, o in self.org_of_tenant.items() if o == org)
