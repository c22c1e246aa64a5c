"""``field``: one reader for SDK objects and the plain dicts that stand for them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType, SimpleNamespace

import pydantic

from tollmeter.instrumentation._fields import field


class _Details(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    cached_tokens: int | None = None


class _ReadOnly(Mapping[str, object]):
    """A mapping that is not a dict and has no attributes named after its keys."""

    def __init__(self, **values: object) -> None:
        self._values = values

    def __getitem__(self, key: str) -> object:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def test_dicts_and_other_mappings_are_read_by_key():
    assert field({"role": "system"}, "role") == "system"
    assert field(MappingProxyType({"role": "user"}), "role") == "user"
    assert field(_ReadOnly(role="tool"), "role") == "tool"
    assert field({"role": "system"}, "content") is None


def test_objects_are_read_by_attribute():
    assert field(SimpleNamespace(text="hi"), "text") == "hi"
    assert field(SimpleNamespace(text="hi"), "parts") is None
    assert field(None, "text") is None


def test_sdk_models_give_declared_fields_and_extras_and_none_for_the_rest():
    details = _Details.model_validate({"cached_tokens": 3, "cache_write_tokens": 5})
    assert field(details, "cached_tokens") == 3
    assert field(details, "cache_write_tokens") == 5
    assert field(_Details(), "cached_tokens") is None
    assert field(_Details(), "reasoning_tokens") is None
