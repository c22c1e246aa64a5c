"""The replica set-ups, checked without a cluster or Docker: the Kubernetes manifests in
examples/kubernetes/ and the compose profile with PostgreSQL, Redis and MinIO.

Probe paths must be routes the management API serves, ports the collector's defaults,
and each collector configuration must pass the collector's own validation, with the
PostgreSQL ledger, Redis limits and S3 export URLs it names."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from starlette.routing import Route

from tollmeter.collector import Config
from tollmeter.collector._auth import KeyRing
from tollmeter.collector._management import ManagementApi

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "examples" / "kubernetes"
COMPOSE_FILE = ROOT / "examples" / "docker-compose.replicas.yaml"
DEFAULTS = Config()


@cache
def manifests() -> dict[str, dict[str, Any]]:
    """``kind/name`` -> manifest, for every document of every file in the kustomization."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBERNETES / name).read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def management_paths() -> dict[str, str]:
    """Route name -> path of the management API's own routes."""
    api = ManagementApi(keys=KeyRing(), readiness=dict)
    return {route.name: route.path for route in api.routes if isinstance(route, Route)}


def container() -> dict[str, Any]:
    spec = manifests()["Deployment/tollmeter"]["spec"]["template"]["spec"]
    (collector,) = spec["containers"]
    return dict(collector)


def configmap_config(tmp_path: Path) -> tuple[Path, Config]:
    configmap = manifests()["ConfigMap/tollmeter-config"]
    mount = next(m for m in container()["volumeMounts"] if m["name"] == "config")
    config_path = container()["args"][container()["args"].index("--config") + 1]
    assert Path(config_path).parent == Path(mount["mountPath"])
    path = tmp_path / Path(config_path).name
    path.write_text(configmap["data"][Path(config_path).name])
    return path, Config.load(path)


def test_the_deployment_runs_three_replicas_of_the_collector() -> None:
    deployment = manifests()["Deployment/tollmeter"]
    assert deployment["spec"]["replicas"] == 3
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests()["Service/tollmeter"]["spec"]["selector"].items() <= labels.items()
    assert container()["args"][0] == "collector"
    requests = container()["resources"]["requests"]
    assert {"cpu", "memory"} <= requests.keys()
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] > DEFAULTS.shutdown_grace


def test_probes_ask_the_real_health_paths_on_the_management_port() -> None:
    paths = management_paths()
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    probes = {kind: container()[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == paths["healthz"]
    assert probes["readinessProbe"]["path"] == paths["readyz"]
    for probe in probes.values():
        assert ports[probe["port"]] == DEFAULTS.management.endpoint.port


def test_ports_are_the_collector_defaults_and_the_service_exposes_them() -> None:
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    assert ports == {
        "otlp-grpc": DEFAULTS.receivers.grpc.endpoint.port,
        "otlp-http": DEFAULTS.receivers.http.endpoint.port,
        "management": DEFAULTS.management.endpoint.port,
    }
    service = manifests()["Service/tollmeter"]["spec"]["ports"]
    assert {(p["targetPort"], p["port"]) for p in service} == {
        (name, number) for name, number in ports.items()
    }


def test_the_configmap_passes_the_collectors_validation(tmp_path: Path) -> None:
    _, config = configmap_config(tmp_path)
    assert config.receivers.grpc.endpoint.port == DEFAULTS.receivers.grpc.endpoint.port
    assert config.receivers.grpc.endpoint.host == "0.0.0.0"
    assert config.management.endpoint.port == DEFAULTS.management.endpoint.port
    assert urlsplit(config.storage.url or "").scheme == "postgresql"
    assert urlsplit(config.limits.storage).scheme == "redis"
    assert str(config.export.s3_url).startswith("s3://")
    # No secret in the ConfigMap: credentials come from the Secret through the environment.
    assert config.export.s3.secret_access_key is None
    assert urlsplit(config.storage.url or "").password is None


def test_every_secret_the_deployment_reads_exists() -> None:
    secret = manifests()["Secret/tollmeter-secrets"]
    for variable in container()["env"]:
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        if reference is not None:
            assert reference["name"] == "tollmeter-secrets"
            assert reference["key"] in secret["stringData"], variable["name"]
    names = {variable["name"] for variable in container()["env"]}
    assert {"PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def compose_collector_config() -> Config:
    collector = compose()["services"]["tollmeter"]
    config_in_container = collector["command"][collector["command"].index("--config") + 1]
    for volume in collector["volumes"]:
        source, target = volume.split(":")[:2]
        if target == config_in_container:
            return Config.load((COMPOSE_FILE.parent / source).resolve())
    raise AssertionError("the collector's configuration is not mounted")


def test_the_compose_profile_runs_replicas_on_postgres_redis_and_minio() -> None:
    services = compose()["services"]
    assert all(service["profiles"] == ["replicas"] for service in services.values())
    collector = services["tollmeter"]
    assert collector["deploy"]["replicas"] == 3
    for dependency in ("postgres", "redis"):
        assert collector["depends_on"][dependency] == {"condition": "service_healthy"}
        assert "healthcheck" in services[dependency]
    assert collector["depends_on"]["bucket"] == {"condition": "service_completed_successfully"}
    host, published, container_port = collector["ports"][0].split(":")
    first, last = (int(port) for port in published.split("-"))
    assert (host, last - first + 1) == ("127.0.0.1", 3)
    assert int(container_port) == DEFAULTS.management.endpoint.port


def test_the_compose_collector_config_names_the_profile_services() -> None:
    config = compose_collector_config()
    services = compose()["services"]
    storage = urlsplit(config.storage.url or "")
    assert (storage.scheme, storage.hostname, storage.username) == (
        "postgresql",
        "postgres",
        services["postgres"]["environment"]["POSTGRES_USER"],
    )
    assert storage.path.strip("/") == services["postgres"]["environment"]["POSTGRES_DB"]
    assert urlsplit(config.limits.storage).hostname == "redis"
    assert urlsplit(config.export.s3.endpoint_url or "").hostname == "minio"
    assert config.export.s3_url is not None
    assert services["bucket"]["command"][-1] == f"local/{config.export.s3_url.bucket}"
    environment = services["tollmeter"]["environment"]
    # The same defaults on both sides of every password and key.
    assert environment["PGPASSWORD"] == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert environment["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
    assert (
        environment["AWS_SECRET_ACCESS_KEY"]
        == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    )


@pytest.mark.parametrize("document", ["deployment.md"])
def test_the_docs_name_the_manifests_and_the_profile(document: str) -> None:
    text = (ROOT / "docs" / document).read_text()
    assert "examples/kubernetes/" in text
    assert "docker-compose.replicas.yaml" in text


def test_one_exporter_runs_for_all_replicas(tmp_path: Path) -> None:
    _, config = configmap_config(tmp_path)
    assert config.export.enabled is False  # the replicas leave the export to the CronJob
    cronjob = manifests()["CronJob/tollmeter-export"]["spec"]
    assert cronjob["concurrencyPolicy"] == "Forbid"
    pod = cronjob["jobTemplate"]["spec"]["template"]["spec"]
    (export,) = pod["containers"]
    assert export["args"][0] == "export"
    assert export["args"][export["args"].index("--config") + 1] == container()["args"][2]
    assert pod["volumes"][0]["configMap"]["name"] == "tollmeter-config"

    services = compose()["services"]
    assert compose_collector_config().export.enabled is False
    exporter = services["exporter"]
    assert "replicas" not in exporter.get("deploy", {})
    assert "tollmeter export --config /etc/tollmeter/tollmeter.yaml" in exporter["command"][0]
    assert exporter["volumes"] == services["tollmeter"]["volumes"]
