"""One exception hierarchy, tollmeter-named loggers and no print() in library code."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

from tollmeter.semconv import ConfigurationError, InvalidUsage, TollmeterError

ROOT = Path(__file__).resolve().parents[2]
# Source folder of each portion -> the package it holds.
PACKAGES = {
    "semconv": "semconv",
    "instrumentation": "instrumentation",
    "collector": "collector",
    "testing": "fakellm",
}
# The demo's app is package data: a program `tollmeter demo` runs in a process of its own.
LIBRARY_FILES = sorted(
    path
    for portion in PACKAGES
    for path in (ROOT / portion / "tollmeter").rglob("*.py")
    if "_demo_files" not in path.parts
)


def test_semconv_errors_share_one_root() -> None:
    assert issubclass(ConfigurationError, TollmeterError)
    assert issubclass(InvalidUsage, TollmeterError)
    # Both are bad values, so code that catches ValueError keeps working.
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(InvalidUsage, ValueError)
    error = InvalidUsage("gen_ai.usage.input_tokens", "negative count -1")
    assert (error.attribute, error.reason) == ("gen_ai.usage.input_tokens", "negative count -1")
    assert str(error) == "gen_ai.usage.input_tokens: negative count -1"


@pytest.mark.parametrize("package", [f"tollmeter.{name}" for name in PACKAGES.values()])
def test_public_exceptions_derive_from_tollmeter_error(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) and issubclass(value, BaseException):
            assert issubclass(value, TollmeterError), f"{package}.{name}"


def _collector_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a module of the collector, private ones included."""
    import tollmeter.collector

    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(tollmeter.collector.__path__, "tollmeter.collector."):
        if "_demo_files" in info.name:
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[name] for name in sorted(found)]


def test_every_collector_exception_derives_from_tollmeter_error() -> None:
    classes = _collector_exceptions()
    # The walk reaches private modules and private classes, not only the public ones.
    names = {f"{cls.__module__}.{cls.__name__}" for cls in classes}
    assert "tollmeter.collector._extract._Rejected" in names
    assert "tollmeter.collector.errors.StorageError" in names
    outside = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in classes
        if not issubclass(cls, TollmeterError)
    ]
    assert outside == []


def test_public_collector_exceptions_live_in_errors_module() -> None:
    from tollmeter.collector import errors

    public = [cls for cls in _collector_exceptions() if not cls.__name__.startswith("_")]
    assert sorted(cls.__name__ for cls in public) == sorted(errors.__all__)
    assert {cls.__module__ for cls in public} == {"tollmeter.collector.errors"}
    # The tree in the module's docstring names every class it defines.
    for name in errors.__all__:
        assert f" {name} " in errors.__doc__, name


@pytest.fixture(scope="module")
def parsed() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"))) for path in LIBRARY_FILES]


def test_library_code_never_prints(parsed: list[tuple[Path, ast.Module]]) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path, tree in parsed
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "print"
    ]
    assert offenders == []


def test_module_loggers_are_named_after_tollmeter(parsed: list[tuple[Path, ast.Module]]) -> None:
    offenders = []
    for path, tree in parsed:
        # Module-level loggers only: a function may look up a library's logger to tune it.
        for statement in tree.body:
            if not isinstance(statement, (ast.Assign, ast.AnnAssign)):
                continue
            call = statement.value
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "getLogger"
            ):
                continue
            argument = call.args[0] if len(call.args) == 1 else None
            named_by_module = isinstance(argument, ast.Name) and argument.id == "__name__"
            named_literally = (
                isinstance(argument, ast.Constant)
                and isinstance(argument.value, str)
                and argument.value.startswith("tollmeter.")
            )
            if not (named_by_module or named_literally):
                offenders.append(f"{path.relative_to(ROOT)}:{statement.lineno}")
    assert offenders == []
