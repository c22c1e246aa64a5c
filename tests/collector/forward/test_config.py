"""The ``forward:`` section: defaults, and every invalid setting named by its key."""

from __future__ import annotations

import pytest

from tollmeter.collector import InvalidConfig
from tollmeter.collector.forward import ForwardConfig


def test_defaults_and_normalisation(make_config):
    config = make_config(
        forward=[
            {
                "name": "tempo",
                "protocol": "http/protobuf",
                "endpoint": "https://tempo.example.com:4318",
                "headers": {"X-Scope-OrgID": "acme"},
                "signals": ["logs", "traces"],
            },
            {"name": "jaeger", "endpoint": "jaeger:4317", "tls": {"insecure": True}},
        ]
    )
    tempo, jaeger = config.forward.exporters
    assert tempo.headers == {"x-scope-orgid": "acme"}
    assert tempo.signals == ("traces", "logs")
    assert tempo.drop_policy == "drop_oldest"
    assert tempo.compression == "none"
    assert jaeger.protocol == "grpc"
    assert jaeger.signals == ("traces", "metrics", "logs")
    assert jaeger.tls.insecure
    assert make_config().forward == ForwardConfig()


@pytest.mark.parametrize(
    ("forward", "key"),
    [
        ({"name": "x"}, "forward"),
        ([{"endpoint": "a:1"}], "forward[0].name"),
        ([{"name": "x"}], "forward[0].endpoint"),
        ([{"name": "x", "endpoint": "a:1", "protocol": "thrift"}], "forward[0].protocol"),
        ([{"name": "x", "endpoint": "http://a:4317"}], "forward[0].endpoint"),
        (
            [{"name": "x", "protocol": "http/protobuf", "endpoint": "a:4318"}],
            "forward[0].endpoint",
        ),
        ([{"name": "x", "endpoint": "a:1", "signals": ["spans"]}], "forward[0].signals"),
        ([{"name": "x", "endpoint": "a:1", "signals": []}], "forward[0].signals"),
        ([{"name": "x", "endpoint": "a:1", "queue_size": 0}], "forward[0].queue_size"),
        ([{"name": "x", "endpoint": "a:1", "drop_policy": "block"}], "forward[0].drop_policy"),
        ([{"name": "x", "endpoint": "a:1", "compression": "zstd"}], "forward[0].compression"),
        (
            [{"name": "x", "endpoint": "a:1", "tls": {"insecure": True, "ca_file": "ca.pem"}}],
            "forward[0].tls.ca_file",
        ),
        ([{"name": "x", "endpoint": "a:1", "headers": {"a": None}}], "forward[0].headers.a"),
        (
            [
                {
                    "name": "x",
                    "endpoint": "a:1",
                    "retry": {"initial_backoff": "5s", "max_backoff": "1s"},
                }
            ],
            "forward[0].retry.max_backoff",
        ),
        (
            [{"name": "x", "endpoint": "a:1", "batch": {"max_requests": 0}}],
            "forward[0].batch.max_requests",
        ),
        ([{"name": "x", "endpoint": "a:1", "colour": "red"}], "forward[0].colour"),
        ([{"name": "x", "endpoint": "a:1"}, {"name": "x", "endpoint": "b:1"}], "forward[1].name"),
    ],
)
def test_invalid_settings_name_their_key(make_config, forward, key):
    with pytest.raises(InvalidConfig) as caught:
        make_config(forward=forward)
    assert [problem.key for problem in caught.value.problems] == [key]
