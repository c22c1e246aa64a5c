"""The generated constants and docs stay in step with registry.yaml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tollmeter.semconv import attributes, metrics
from tollmeter.semconv._registry import (
    REGISTRY_PATH,
    constant_name,
    load_registry,
    parse_registry,
)
from tollmeter.semconv.errors import ConfigurationError
from tollmeter.semconv.generate import (
    ATTRIBUTES_FILE,
    DOCS_FILE,
    METRICS_FILE,
    main,
    render_all,
    write_all,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rendered() -> dict[Path, str]:
    return render_all()


def test_committed_files_are_not_stale(rendered: dict[Path, str]) -> None:
    for relative, text in rendered.items():
        committed = (ROOT / relative).read_text(encoding="utf-8")
        assert committed == text, f"{relative} is stale: run python -m tollmeter.semconv.generate"


def test_regenerating_into_an_empty_root_reproduces_the_committed_files(tmp_path: Path) -> None:
    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--check", "--root", str(tmp_path)]) == 0
    for relative in (ATTRIBUTES_FILE, METRICS_FILE, DOCS_FILE):
        assert (tmp_path / relative).read_bytes() == (ROOT / relative).read_bytes()


def test_check_fails_after_a_hand_edit(tmp_path: Path, rendered: dict[Path, str]) -> None:
    write_all(tmp_path, rendered)
    target = tmp_path / METRICS_FILE
    target.write_text(target.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert write_all(tmp_path, rendered) == [METRICS_FILE]
    assert write_all(tmp_path, rendered) == []


def test_generator_runs_as_a_module_in_check_mode() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tollmeter.semconv.generate", "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_generated_python_is_lint_and_format_clean(tmp_path: Path) -> None:
    files = [str(ROOT / ATTRIBUTES_FILE), str(ROOT / METRICS_FILE)]
    for command in (["format", "--check"], ["check"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command, *files],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("name", "constant"),
    [
        ("gen_ai.usage.input_tokens", "GEN_AI_USAGE_INPUT_TOKENS"),
        ("gen_ai.usage.cache_read.input_tokens", "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS"),
        ("gen_ai.usage.reasoning.output_tokens", "GEN_AI_USAGE_REASONING_OUTPUT_TOKENS"),
        ("tollmeter.tenant.id", "TOLLMETER_TENANT_ID"),
        ("tollmeter.api_key.id", "TOLLMETER_API_KEY_ID"),
        ("tollmeter.usage.source", "TOLLMETER_USAGE_SOURCE"),
        ("tollmeter.reservation.id", "TOLLMETER_RESERVATION_ID"),
        ("server.address", "SERVER_ADDRESS"),
        ("error.type", "ERROR_TYPE"),
        ("gen_ai.token.type", "GEN_AI_TOKEN_TYPE"),
    ],
)
def test_constant_naming_rule(name: str, constant: str) -> None:
    assert constant_name(name) == constant
    assert getattr(attributes, constant) == name
    assert constant in attributes.__all__


def test_every_design_attribute_is_registered() -> None:
    design = {
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.response.id",
        "gen_ai.response.finish_reasons",
        "gen_ai.request.stream",
        "gen_ai.request.max_tokens",
        "gen_ai.conversation.id",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.token.type",
        "server.address",
        "server.port",
        "error.type",
        "tollmeter.tenant.id",
        "tollmeter.project.id",
        "tollmeter.api_key.id",
        "tollmeter.feature",
        "tollmeter.environment",
        "tollmeter.request.id",
        "tollmeter.workflow.id",
        "tollmeter.attempt",
        "tollmeter.usage.source",
        "tollmeter.usage.abandoned",
        "tollmeter.reservation.id",
    }
    registered = {
        getattr(attributes, name)
        for name in attributes.__all__
        if name.isupper() and name != "ALIASES"
    }
    assert design <= registered


def test_values_classes_and_aliases() -> None:
    assert attributes.GenAiOperationNameValues.CHAT == "chat"
    assert attributes.GenAiOperationNameValues.TEXT_COMPLETION == "text_completion"
    assert attributes.GenAiProviderNameValues.AWS_BEDROCK == "aws.bedrock"
    assert attributes.GenAiTokenTypeValues.INPUT == "input"
    assert attributes.TollmeterUsageSourceValues.ESTIMATE == "estimate"
    assert attributes.ErrorTypeValues.OTHER == "_OTHER"
    assert attributes.ALIASES[attributes.GEN_AI_PROVIDER_NAME][0] == "gen_ai.system"
    with pytest.raises(TypeError):
        attributes.ALIASES["x"] = ()  # type: ignore[index]


def test_metric_constants() -> None:
    assert metrics.GEN_AI_CLIENT_TOKEN_USAGE == "gen_ai.client.token.usage"
    assert metrics.GEN_AI_CLIENT_TOKEN_USAGE_UNIT == "{token}"
    assert metrics.GEN_AI_CLIENT_OPERATION_DURATION_UNIT == "s"
    assert tuple(4**n for n in range(14)) == metrics.TOKEN_USAGE_BUCKETS
    assert metrics.TOKEN_USAGE_BUCKETS[-1] == 67108864
    assert tuple(round(0.01 * 2**n, 2) for n in range(14)) == metrics.DURATION_BUCKETS
    assert metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK_BUCKETS == metrics.DURATION_BUCKETS
    assert metrics.GEN_AI_CLIENT_TOKEN_USAGE_BUCKETS is metrics.TOKEN_USAGE_BUCKETS
    assert (
        metrics.GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_WRITE_INPUT_TOKENS
        == "gen_ai.client.inference.usage.cache_write.input_tokens"
    )


def test_every_name_records_its_origin_and_status() -> None:
    registry = load_registry()
    status = {item.name: (item.origin, item.status) for item in registry.attributes}
    status.update({item.name: (item.origin, item.status) for item in registry.metrics})
    assert status["gen_ai.client.token.usage"] == ("otel", "deprecated")
    assert status["gen_ai.token.type"] == ("otel", "deprecated")
    assert status["gen_ai.client.inference.usage.input_tokens"] == ("otel", "experimental")
    assert status["gen_ai.token.modality"] == ("otel", "experimental")
    assert status["server.address"] == ("otel", "stable")
    assert status["tollmeter.tenant.id"] == ("tollmeter", "stable")


def _document() -> dict[str, object]:
    loaded = yaml.safe_load(REGISTRY_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _attribute(**fields: object) -> dict[str, object]:
    return {
        "name": "x.y",
        "type": "string",
        "brief": "B.",
        "origin": "tollmeter",
        "status": "stable",
        **fields,
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["attributes"].append(_attribute(name="gen_ai.request.model")), "duplicate"),
        (lambda d: d["attributes"].append(_attribute(type="float")), "type must be"),
        (lambda d: d["attributes"].append(_attribute(origin="vendor")), "origin must be"),
        (lambda d: d["attributes"].append(_attribute(status="beta")), "status must be"),
        (lambda d: d["attributes"].append(_attribute(status=None)), "status must be"),
        (lambda d: d["metrics"][0].update(status="final"), "status must be"),
        (lambda d: d["attributes"].append(_attribute(name="Bad Name")), "dotted lower-case"),
        (lambda d: d["attributes"].append(_attribute(brief="")), "non-empty string"),
        (lambda d: d["attributes"].append(_attribute(brief='say "hi"')), "cannot quote"),
        (lambda d: d["attributes"].append(_attribute(aliases=["gen_ai.system"])), "duplicate"),
        (lambda d: d["attributes"].append(_attribute(aliases=["server.port"])), "registered"),
        (lambda d: d["attributes"].append(_attribute(type="int", values={"a": "A."})), "values"),
        (lambda d: d["attributes"].append(_attribute(name="x_y")), None),
        (lambda d: d["attributes"].append(_attribute(values={"1h": "One hour."})), "invalid"),
        (lambda d: d["attributes"].append(_attribute(values={"-": "Dash."})), "invalid"),
        (lambda d: d["attributes"].append(_attribute(values={"a.b": "A.", "a_b": "B."})), "dup"),
        (lambda d: d["buckets"]["duration"].update(boundaries=[1, 1]), "increase"),
        (lambda d: d["buckets"]["duration"].update(boundaries=[]), "not be empty"),
        (lambda d: d["buckets"]["duration"].update(boundaries=[1, True]), "not a number"),
        (lambda d: d["metrics"][0].update(buckets="nope"), "unknown buckets"),
        (lambda d: d["metrics"][0].update(attributes=["no.such"]), "not in the registry"),
        (lambda d: d["metrics"][0].update(instrument="meter"), "instrument must be"),
        (lambda d: d.update(attributes={}), "expected a list"),
    ],
)
def test_invalid_registry_is_rejected(change, message: str | None) -> None:
    document = _document()
    change(document)
    if message is None:
        # "x_y" and "x.y" would both be X_Y: a clash only when both exist.
        document["attributes"].append(_attribute())
        message = "duplicate generated constant"
    with pytest.raises(ConfigurationError, match=message):
        parse_registry(document)


def test_invalid_registry_file_exits_with_two(tmp_path: Path) -> None:
    bad = tmp_path / "registry.yaml"
    bad.write_text("attributes: [\n", encoding="utf-8")
    assert main(["--check", "--root", str(tmp_path), "--registry", str(bad)]) == 2
