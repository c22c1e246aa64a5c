from __future__ import annotations

from pathlib import Path

import pytest

from tollmeter.collector.errors import InvalidSetting
from tollmeter.collector.export import ExportConfig


def test_defaults_and_full_section() -> None:
    default = ExportConfig.from_mapping(None)
    assert default == ExportConfig()
    assert default.resolve_directory(Path("data")) == Path("data/export")
    config = ExportConfig.from_mapping(
        {
            "enabled": "false",
            "directory": "/srv/billing",
            "interval": "90s",
            "timezone": "Europe/Paris",
            "batch_size": "5000",
            "row_group_size": 2000,
            "compression_level": 9,
            "timeout": "2m",
        }
    )
    assert config == ExportConfig(
        enabled=False,
        directory=Path("/srv/billing"),
        interval_s=90.0,
        timezone="Europe/Paris",
        batch_size=5000,
        row_group_size=2000,
        compression_level=9,
        timeout_s=120.0,
    )
    assert config.resolve_directory(Path("data")) == Path("/srv/billing")


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"timezone": "Mars/Olympus"}, "export.timezone"),
        ({"interval": "0s"}, "export.interval"),
        ({"interval": "soon"}, "export.interval"),
        ({"batch_size": 0}, "export.batch_size"),
        ({"batch_size": 10**9}, "export.batch_size"),
        ({"compression_level": 23}, "export.compression_level"),
        ({"enabled": "maybe"}, "export.enabled"),
        ({"directory": ""}, "export.directory"),
        ({"dir": "x"}, "export.dir"),
        ("yes", "export"),
    ],
)
def test_bad_values_name_their_key(mapping: object, key: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        ExportConfig.from_mapping(mapping)
    assert caught.value.key == key


def test_direct_construction_is_validated() -> None:
    with pytest.raises(InvalidSetting, match="time zone"):
        ExportConfig(timezone="Nowhere/Else")
    with pytest.raises(InvalidSetting, match="positive"):
        ExportConfig(interval_s=0)
