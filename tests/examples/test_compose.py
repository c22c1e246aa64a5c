"""The docker-compose stack and the Dockerfiles, checked without Docker: every referenced file
exists, the services agree on hosts and ports, and the collector's configuration is valid."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tollmeter.collector import Config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
COMPOSE_FILE = EXAMPLES / "docker-compose.yaml"
COLLECTOR = "tollmeter"  # service names
TRAFFIC = "traffic"
ROOT_DOCKERFILE = ROOT / "Dockerfile"


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose()["services"]
    return services[name]


def bind_mounts(name: str) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    mounts: dict[str, Path] = {}
    for volume in service(name).get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (EXAMPLES / source).resolve()
    return mounts


def published(name: str) -> dict[int, tuple[str, int]]:
    """Container port -> (host address, host port) of a service."""
    ports: dict[int, tuple[str, int]] = {}
    for spec in service(name).get("ports", []):
        host, host_port, container_port = str(spec).removesuffix("/tcp").split(":")
        ports[int(container_port)] = (host, int(host_port))
    return ports


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


@cache
def collector_config_path() -> Path:
    config_in_container = option(service(COLLECTOR)["command"], "--config")
    return bind_mounts(COLLECTOR)[config_in_container]


@cache
def collector_config() -> Config:
    return Config.load(collector_config_path())


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    assert not pending, f"{path.name} ends inside a continued line"
    return instructions


def values(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for found, arguments in instructions if found == keyword]


def env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in values(instructions, "ENV"):
        for item in shlex.split(arguments):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def base_images(instructions: list[tuple[str, str]]) -> list[str]:
    args = dict(item.partition("=")[::2] for item in values(instructions, "ARG"))
    stages: set[str] = set()
    images = []
    for arguments in values(instructions, "FROM"):
        words = arguments.split()
        image = re.sub(r"\$\{(\w+)\}", lambda match: args[match.group(1)], words[0])
        if image not in stages:
            images.append(image)
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
    return images


def test_every_referenced_file_exists() -> None:
    referenced: list[Path] = []
    for name, spec in compose()["services"].items():
        build = spec.get("build")
        if build is not None:
            context = (EXAMPLES / build["context"]).resolve()
            assert context.is_dir(), name
            referenced.append(context / build.get("dockerfile", "Dockerfile"))
        referenced.extend(bind_mounts(name).values())
    assert ROOT_DOCKERFILE in referenced
    assert EXAMPLES / "grafana" / "tollmeter-dashboard.json" in referenced
    missing = [str(path.relative_to(ROOT)) for path in referenced if not path.exists()]
    assert missing == []


def test_services_named_in_dependencies_exist_and_volumes_are_declared() -> None:
    services = compose()["services"]
    for name, spec in services.items():
        assert set(spec.get("depends_on", [])) <= set(services) - {name}, name
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose()["volumes"], (name, source)


def test_collector_config_passes_validate_config() -> None:
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "tollmeter.collector.cli",
            "validate-config",
            str(collector_config_path()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("OK:")


def test_collector_listens_on_every_interface_and_publishes_on_loopback() -> None:
    config = collector_config()
    endpoints = [
        config.receivers.grpc.endpoint,
        config.receivers.http.endpoint,
        config.management.endpoint,
    ]
    assert {endpoint.host for endpoint in endpoints} == {"0.0.0.0"}
    ports = published(COLLECTOR)
    assert set(ports) == {endpoint.port for endpoint in endpoints}
    for name in compose()["services"]:
        assert {host for host, _ in published(name).values()} <= {"127.0.0.1"}, name


def test_data_directory_is_on_the_volume() -> None:
    volume_targets = [
        volume.split(":")[1]
        for volume in service(COLLECTOR)["volumes"]
        if not volume.startswith(".")
    ]
    data_dir = PurePosixPath(str(collector_config().data_dir))
    assert any(data_dir.is_relative_to(target) for target in volume_targets)


def test_app_sends_to_the_collector_with_its_ingest_key() -> None:
    env = service(TRAFFIC)["environment"]
    endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.hostname == COLLECTOR
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert endpoint.port == collector_config().receivers.grpc.endpoint.port
    key = service(COLLECTOR)["environment"]["TOLLMETER_INGEST_KEYS"]
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == f"x-tollmeter-key={key}"
    assert service(TRAFFIC)["depends_on"][COLLECTOR] == {"condition": "service_healthy"}


def test_app_calls_the_fake_llm_server() -> None:
    command = service("fake-llm")["command"]
    assert command[0] == "fake-llm"
    assert option(command, "--host") == "0.0.0.0"
    port = int(option(command, "--port"))
    env = service(TRAFFIC)["environment"]
    assert env["OPENAI_BASE_URL"] == f"http://fake-llm:{port}/v1"
    assert env["ANTHROPIC_BASE_URL"] == f"http://fake-llm:{port}"
    probe = " ".join(service("fake-llm")["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/_fake/health" in probe


def test_services_sharing_the_collector_image_probe_their_own_health() -> None:
    image = service(COLLECTOR)["image"]
    sharing = [
        name
        for name, spec in compose()["services"].items()
        if spec.get("image") == image and name != COLLECTOR
    ]
    assert sharing == ["fake-llm"]
    for name in sharing:
        # The image's HEALTHCHECK probes the collector's management port.
        assert "build" not in service(name)
        assert service(name)["pull_policy"] == "never"
        assert "/healthz" not in " ".join(service(name)["healthcheck"]["test"])


def test_forwarding_reaches_jaeger_over_otlp() -> None:
    exporters = collector_config().forward.exporters
    assert [exporter.name for exporter in exporters] == ["jaeger"]
    (jaeger,) = exporters
    assert jaeger.protocol == "grpc"
    assert jaeger.endpoint == "jaeger:4317"
    assert jaeger.tls.insecure
    assert service("jaeger")["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_prometheus_scrapes_the_collector_metrics() -> None:
    command = service("prometheus")["command"]
    config_in_container = next(
        item.split("=", 1)[1] for item in command if item.startswith("--config.file=")
    )
    scrape = yaml.safe_load(bind_mounts("prometheus")[config_in_container].read_text())
    (job,) = scrape["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [target for group in job["static_configs"] for target in group["targets"]]
    assert targets == [f"{COLLECTOR}:{collector_config().management.endpoint.port}"]
    assert collector_config().metrics.require_admin_key is False
    assert "--enable-feature=exemplar-storage" in command


def test_grafana_data_sources_point_at_the_services() -> None:
    mounts = bind_mounts("grafana")
    sources = yaml.safe_load(
        (mounts["/etc/grafana/provisioning/datasources"] / "tollmeter.yaml").read_text()
    )
    urls = {source["type"]: urlsplit(source["url"]) for source in sources["datasources"]}
    assert (urls["prometheus"].hostname, urls["prometheus"].port) == ("prometheus", 9090)
    assert 9090 in published("prometheus")
    assert (urls["jaeger"].hostname, urls["jaeger"].port) == ("jaeger", 16686)
    assert 16686 in published("jaeger")


def test_grafana_loads_the_dashboard_from_where_it_is_mounted() -> None:
    mounts = bind_mounts("grafana")
    providers = yaml.safe_load(
        (mounts["/etc/grafana/provisioning/dashboards"] / "tollmeter.yaml").read_text()
    )
    folder = PurePosixPath(providers["providers"][0]["options"]["path"])
    dashboards = [target for target in mounts if PurePosixPath(target).parent == folder]
    assert [mounts[target].name for target in dashboards] == ["tollmeter-dashboard.json"]
    home = service("grafana")["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in dashboards
    # The dashboard's trace links open the Jaeger UI as published on the host.
    dashboard = json.loads(mounts[dashboards[0]].read_text())
    trace_ui = next(item for item in dashboard["templating"]["list"] if item["name"] == "trace_ui")
    host, port = published("jaeger")[16686]
    trace_url = urlsplit(trace_ui["query"])
    assert (trace_url.port, host) == (port, "127.0.0.1")
    assert trace_url.hostname in {"localhost", host}


def test_images_are_pinned() -> None:
    for name, spec in compose()["services"].items():
        if "build" in spec or spec.get("pull_policy") == "never":
            continue
        image = spec["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), name
        assert not image.endswith((":latest", ":main")), name
    for path in (ROOT_DOCKERFILE, EXAMPLES / "compose" / "app.Dockerfile"):
        for image in base_images(dockerfile(path)):
            assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", image), (path.name, image)


@pytest.mark.parametrize("path", [ROOT_DOCKERFILE, EXAMPLES / "compose" / "app.Dockerfile"])
def test_images_run_as_an_unprivileged_user(path: Path) -> None:
    instructions = dockerfile(path)
    users = values(instructions, "USER")
    assert users, path.name
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    last_user = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "USER")
    assert last_user > last_from
    # Nothing after USER needs root.
    assert "RUN" not in [keyword for keyword, _ in instructions[last_user:]]


def test_collector_image_matches_its_configuration() -> None:
    instructions = dockerfile(ROOT_DOCKERFILE)
    config = collector_config()
    ports = {
        "TOLLMETER_GRPC_ENDPOINT": config.receivers.grpc.endpoint.port,
        "TOLLMETER_HTTP_ENDPOINT": config.receivers.http.endpoint.port,
        "TOLLMETER_MANAGEMENT_ENDPOINT": config.management.endpoint.port,
    }
    exposed = {
        int(port) for arguments in values(instructions, "EXPOSE") for port in arguments.split()
    }
    assert exposed == set(ports.values()) == {4317, 4318, 4319}
    env = env_of(instructions)
    for variable, port in ports.items():
        assert env[variable] == f"0.0.0.0:{port}"
    assert PurePosixPath(env["TOLLMETER_DATA_DIR"]) == PurePosixPath(str(config.data_dir))
    (healthcheck,) = values(instructions, "HEALTHCHECK")
    assert re.search(r"--timeout=\d+s", healthcheck)
    assert f"http://127.0.0.1:{ports['TOLLMETER_MANAGEMENT_ENDPOINT']}/healthz" in healthcheck
    assert any('".[collector,postgres,redis]"' in run for run in values(instructions, "RUN"))
    assert json.loads(values(instructions, "ENTRYPOINT")[-1]) == ["tollmeter"]
    assert json.loads(values(instructions, "CMD")[-1]) == ["collector"]
    assert service(COLLECTOR)["command"][0] == "collector"


def dockerignored(path: str) -> bool:
    """Whether the build context leaves ``path`` out, by the rules of ``.dockerignore``
    (last matching pattern wins; ``!`` re-includes)."""
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        parts = PurePosixPath(path).parts
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if pattern.startswith("**/"):
            matched = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            matched = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if matched:
            ignored = not negated
    return ignored


def test_build_context_holds_what_the_images_copy_and_nothing_heavy() -> None:
    copied = []
    for path in (ROOT_DOCKERFILE, EXAMPLES / "compose" / "app.Dockerfile"):
        for arguments in values(dockerfile(path), "COPY"):
            if arguments.startswith("--from="):
                continue
            copied.extend(arguments.split()[:-1])
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source), source
    assert not dockerignored("collector/tollmeter/collector/cli.py")
    for heavy in (".venv/bin/python", ".git/HEAD", "tollmeter-data/ledger.db", "tests/conftest.py"):
        assert dockerignored(heavy), heavy
    assert dockerignored("collector/tollmeter/collector/__pycache__/cli.cpython-312.pyc")
