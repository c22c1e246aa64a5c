"""docs/configuration.md documents every TOLLMETER_* variable of the collector with its default
(the instrumentation's variables have a section of their own, after the collector's)."""

from __future__ import annotations

import re
from pathlib import Path

from tollmeter.collector._settings import SETTINGS, environment_overrides

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _collector_section() -> str:
    text = DOC.read_text()
    return text[: text.index("### Variables read by the instrumentation")]


def test_every_variable_is_documented_with_its_key_and_default():
    rows = {
        match.group(1): match.group(0)
        for match in re.finditer(r"^\| `(TOLLMETER_[A-Z_]+)` \|.*$", _collector_section(), re.M)
    }
    assert set(rows) == {setting.name for setting in SETTINGS}
    for setting in SETTINGS:
        if setting.key is not None:
            assert f"`{setting.key}`" in rows[setting.name]
        if setting.default is not None:
            assert f"`{setting.default}`" in rows[setting.name]


def test_every_variable_with_a_key_overrides_it():
    environ = {setting.name: "x=y" for setting in SETTINGS}
    overrides = environment_overrides(environ)
    assert set(overrides) == {setting.key for setting in SETTINGS if setting.key is not None}
    for key, (_, source) in overrides.items():
        assert source.startswith("environment variable TOLLMETER_")
        assert key
