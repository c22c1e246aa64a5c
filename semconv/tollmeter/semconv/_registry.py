"""Loading and validating ``registry.yaml``, the source the generator renders from."""

from __future__ import annotations

import itertools
import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tollmeter.semconv.errors import ConfigurationError

__all__ = [
    "REGISTRY_PATH",
    "Attribute",
    "BucketSet",
    "Metric",
    "Registry",
    "constant_name",
    "load_registry",
    "parse_registry",
]

REGISTRY_PATH = Path(__file__).with_name("registry.yaml")

ATTRIBUTE_TYPES = frozenset({"string", "int", "double", "boolean", "string[]"})
ORIGINS = frozenset({"otel", "tollmeter"})
STATUSES = frozenset({"stable", "experimental", "deprecated"})
INSTRUMENTS = frozenset({"counter", "histogram", "gauge", "updowncounter"})
_NAME = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z0-9_]+)*$")
_NON_ALNUM = re.compile(r"[^0-9A-Za-z]")


def constant_name(name: str) -> str:
    """The Python constant for ``name``: upper case, every non-alphanumeric character ``_``."""
    return _NON_ALNUM.sub("_", name).upper()


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    type: str
    brief: str
    origin: str
    status: str
    unit: str | None = None
    aliases: tuple[str, ...] = ()
    values: tuple[tuple[str, str], ...] = ()

    @property
    def constant(self) -> str:
        return constant_name(self.name)

    @property
    def values_class(self) -> str:
        """The class holding the well-known values, e.g. ``GenAiOperationNameValues``."""
        parts = _NON_ALNUM.split(self.name)
        return "".join(part.capitalize() for part in parts if part) + "Values"


@dataclass(frozen=True, slots=True)
class BucketSet:
    key: str
    brief: str
    boundaries: tuple[float, ...]

    @property
    def constant(self) -> str:
        return constant_name(self.key) + "_BUCKETS"


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    instrument: str
    unit: str
    brief: str
    origin: str
    status: str
    buckets: BucketSet | None
    attributes: tuple[str, ...]

    @property
    def constant(self) -> str:
        return constant_name(self.name)


@dataclass(frozen=True, slots=True)
class Registry:
    attributes: tuple[Attribute, ...]
    metrics: tuple[Metric, ...]
    buckets: tuple[BucketSet, ...]


def load_registry(path: Path = REGISTRY_PATH) -> Registry:
    """Read and validate the registry file; any problem raises ``ConfigurationError``."""
    import yaml  # the generator is a development tool; the runtime never reads YAML

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read registry {path.name}: {exc}") from exc
    return parse_registry(document)


def parse_registry(document: object) -> Registry:
    """Validate an already-parsed registry document."""
    top = _mapping(document, "registry")
    buckets = tuple(
        _bucket_set(key, _mapping(body, f"buckets.{key}"))
        for key, body in _mapping(top.get("buckets", {}), "buckets").items()
    )
    attributes = tuple(
        _attribute(_mapping(entry, f"attributes[{index}]"))
        for index, entry in enumerate(_list(top.get("attributes"), "attributes"))
    )
    _check_unique([attribute.name for attribute in attributes], "attribute")
    _check_unique(
        [attribute.constant for attribute in attributes]
        + [bucket.constant for bucket in buckets]
        + [attribute.values_class for attribute in attributes if attribute.values],
        "generated constant",
    )
    names = {attribute.name for attribute in attributes}
    aliases = [alias for attribute in attributes for alias in attribute.aliases]
    _check_unique(aliases, "alias")
    if clash := names.intersection(aliases):
        raise ConfigurationError(f"alias is also a registered attribute: {sorted(clash)}")
    by_key = {bucket.key: bucket for bucket in buckets}
    metrics = tuple(
        _metric(_mapping(entry, f"metrics[{index}]"), by_key, names)
        for index, entry in enumerate(_list(top.get("metrics", []), "metrics"))
    )
    _check_unique([metric.name for metric in metrics], "metric")
    return Registry(attributes=attributes, metrics=metrics, buckets=buckets)


def _attribute(entry: Mapping[str, object]) -> Attribute:
    name = _name(entry)
    where = f"attribute {name}"
    kind = _choice(entry, "type", ATTRIBUTE_TYPES, where)
    values = _mapping(entry.get("values", {}), f"{where}: values")
    if values and kind != "string":
        raise ConfigurationError(f"{where}: only string attributes can list values")
    value_pairs = tuple(
        (_text(v, f"{where}: value"), _text(b, f"{where}: {v}")) for v, b in values.items()
    )
    constants = [constant_name(value).strip("_") for value, _ in value_pairs]
    if bad := [c for c in constants if not c.isidentifier() or keyword.iskeyword(c)]:
        raise ConfigurationError(f"{where}: values make invalid constant names {bad}")
    _check_unique(constants, f"{where} value")
    return Attribute(
        name=name,
        type=kind,
        brief=_text(entry.get("brief"), f"{where}: brief"),
        origin=_choice(entry, "origin", ORIGINS, where),
        status=_choice(entry, "status", STATUSES, where),
        unit=_optional_text(entry.get("unit"), f"{where}: unit"),
        aliases=tuple(
            _text(alias, f"{where}: alias") for alias in _list(entry.get("aliases", []), where)
        ),
        values=value_pairs,
    )


def _bucket_set(key: object, body: Mapping[str, object]) -> BucketSet:
    where = f"buckets {key}"
    raw = _list(body.get("boundaries"), f"{where}: boundaries")
    boundaries: list[float] = []
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(f"{where}: boundary {value!r} is not a number")
        boundaries.append(value)
    if any(later <= earlier for earlier, later in itertools.pairwise(boundaries)):
        raise ConfigurationError(f"{where}: boundaries must increase strictly")
    if not boundaries:
        raise ConfigurationError(f"{where}: boundaries must not be empty")
    return BucketSet(
        key=_text(key, where), brief=_text(body.get("brief"), where), boundaries=tuple(boundaries)
    )


def _metric(
    entry: Mapping[str, object], buckets: Mapping[str, BucketSet], names: set[str]
) -> Metric:
    name = _name(entry)
    where = f"metric {name}"
    bucket_key = entry.get("buckets")
    if bucket_key is not None and bucket_key not in buckets:
        raise ConfigurationError(f"{where}: unknown buckets {bucket_key!r}")
    attributes = tuple(
        _text(a, f"{where}: attribute") for a in _list(entry.get("attributes", []), where)
    )
    if unknown := sorted(set(attributes) - names):
        raise ConfigurationError(f"{where}: attributes not in the registry: {unknown}")
    return Metric(
        name=name,
        instrument=_choice(entry, "instrument", INSTRUMENTS, where),
        unit=_text(entry.get("unit"), f"{where}: unit"),
        brief=_text(entry.get("brief"), f"{where}: brief"),
        origin=_choice(entry, "origin", ORIGINS, where),
        status=_choice(entry, "status", STATUSES, where),
        buckets=buckets[bucket_key] if isinstance(bucket_key, str) else None,
        attributes=attributes,
    )


def _name(entry: Mapping[str, object]) -> str:
    name = _text(entry.get("name"), "entry without a name")
    if not _NAME.match(name):
        raise ConfigurationError(f"{name!r} is not a dotted lower-case name")
    return name


def _choice(entry: Mapping[str, object], key: str, allowed: frozenset[str], where: str) -> str:
    value = entry.get(key)
    if value not in allowed:
        raise ConfigurationError(f"{where}: {key} must be one of {sorted(allowed)}, not {value!r}")
    return str(value)


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{where}: expected a non-empty string, got {value!r}")
    if '"' in value or "\\" in value or "\n" in value:
        raise ConfigurationError(f"{where}: {value!r} holds characters the generator cannot quote")
    return value


def _optional_text(value: object, where: str) -> str | None:
    return None if value is None else _text(value, where)


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise ConfigurationError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _check_unique(items: list[str], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise ConfigurationError(f"duplicate {what}: {item!r}")
        seen.add(item)
