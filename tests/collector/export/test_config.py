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


def test_s3_url_and_settings() -> None:
    from tollmeter.collector.export import S3Location, S3Settings

    config = ExportConfig.from_mapping(
        {
            "url": "s3://billing-bucket/usage/v1/",
            "s3": {
                "endpoint_url": "https://minio.internal:9000",
                "region": "eu-west-1",
                "access_key_id": "AKIAEXAMPLE",
                "secret_access_key": "very-secret-value",
                "connect_timeout": "2s",
                "max_attempts": 5,
            },
        }
    )
    assert config.s3_url == S3Location("billing-bucket", "usage/v1")
    assert str(config.s3_url) == "s3://billing-bucket/usage/v1"
    assert config.s3.connect_timeout_s == 2.0
    assert config.s3.max_attempts == 5
    assert config.s3.request_timeout_s == S3Settings.request_timeout_s
    assert "very-secret-value" not in repr(config)
    assert "AKIAEXAMPLE" not in repr(config)


def test_every_s3_problem_is_reported_at_once() -> None:
    from tollmeter.collector.errors import InvalidConfig

    with pytest.raises(InvalidConfig) as caught:
        ExportConfig.from_mapping(
            {
                "url": "s3://billing-bucket",
                "directory": "/srv/billing",
                "s3": {
                    "endpoint_url": "minio:9000",
                    "access_key_id": "AKIAEXAMPLE",
                    "connect_timeout": "soon",
                    "max_attempts": 99,
                    "bucket": "x",
                },
            }
        )
    keys = sorted(problem.key for problem in caught.value.problems)
    assert keys == [
        "export.s3.bucket",
        "export.s3.connect_timeout",
        "export.s3.endpoint_url",
        "export.s3.max_attempts",
        "export.s3.secret_access_key",
        "export.url",
    ]


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"url": "gs://bucket/x"}, "export.url"),
        ({"url": "s3://Bad_Bucket/x"}, "export.url"),
        ({"s3": {"region": "eu-west-1"}}, "export.s3"),
        ({"url": "s3://bucket", "s3": {"session_token": "t"}}, "export.s3.session_token"),
    ],
)
def test_bad_s3_values_name_their_key(mapping: object, key: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        ExportConfig.from_mapping(mapping)
    assert caught.value.key == key
