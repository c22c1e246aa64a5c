"""The ``tollmeter`` command names the extra to install when the collector's modules are missing.

The base distribution installs the command without them. Each test runs the console
script's entry point in a child interpreter started with ``-S`` whose only
site-packages is a copy of this environment's (symbolic links) with whole
distributions left out, so the modules really are absent rather than made to fail.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from importlib.metadata import distribution, entry_points, packages_distributions, requires
from pathlib import Path

import pytest

import tollmeter.collector
from tollmeter.collector._cli_requirements import COLLECTOR_MODULES, DEMO_MODULES
from tollmeter.semconv.version import __version__

ROOT = Path(__file__).resolve().parents[2]
PORTIONS = ("semconv", "instrumentation", "collector", "testing")
# The collector extra's distributions that the base install does not bring along.
COLLECTOR_ONLY = (
    "click",
    "genai-prices",
    "prometheus-client",
    "pyarrow",
    "pyyaml",
    "starlette",
    "uvicorn",
)


def _site_without(tmp_path: Path, hidden: Iterable[str]) -> Path:
    """This environment's site-packages without the files of the ``hidden`` distributions."""
    site = Path(sysconfig.get_paths()["purelib"])
    left_out = {
        file.parts[0]
        for name in hidden
        for file in distribution(name).files or ()
        if file.parts[0] != ".."
    }
    view = tmp_path / "site-packages"
    view.mkdir()
    for entry in site.iterdir():
        if entry.name not in left_out and entry.suffix != ".pth":
            (view / entry.name).symlink_to(entry)
    return view


def _tollmeter(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``tollmeter`` console script's entry point with ``site`` as the only site."""
    (script,) = entry_points(group="console_scripts", name="tollmeter")
    module, _, function = script.value.partition(":")
    code = (
        f"import sys; from {module} import {function} as main; "
        "sys.argv[0] = 'tollmeter'; sys.exit(main())"
    )
    # The editable install's .pth file is not read under -S: the portions go on the path.
    path = [str(ROOT / portion) for portion in PORTIONS] + [str(site)]
    return subprocess.run(
        [sys.executable, "-S", "-c", code, *args],
        env={"PYTHONPATH": ":".join(path), "PATH": "/usr/bin:/bin"},
        cwd=site.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def base_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _site_without(tmp_path_factory.mktemp("base"), COLLECTOR_ONLY)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    return line


@pytest.mark.parametrize(
    "args", [("collector",), ("validate-config", "tollmeter.yaml"), ("fake-llm",), ()]
)
def test_a_base_install_names_the_collector_extra(base_install: Path, args: tuple[str, ...]):
    line = _one_line(_tollmeter(base_install, *args))
    assert "pip install 'tollmeter[collector]'" in line
    missing = re.search(r"missing modules? (.*);", line)
    assert missing is not None, line
    assert missing.group(1).split(", ") == [
        "click",
        "genai_prices",
        "prometheus_client",
        "pyarrow",
        "starlette",
        "uvicorn",
        "yaml",
    ]


def test_a_base_install_still_tells_its_version(base_install: Path):
    result = _tollmeter(base_install, "--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"tollmeter, version {__version__}\n",
        "",
    )


def test_only_the_missing_module_is_named(tmp_path: Path):
    line = _one_line(_tollmeter(_site_without(tmp_path, ["pyyaml"]), "collector"))
    assert line == (
        "tollmeter collector: missing module yaml; "
        "install them with: pip install 'tollmeter[collector]'"
    )


def test_the_demo_names_the_demo_extra_while_the_collector_runs(tmp_path: Path):
    site = _site_without(tmp_path, ["openai"])
    line = _one_line(_tollmeter(site, "demo"))
    assert line == (
        "tollmeter demo: missing module openai; install them with: pip install 'tollmeter[demo]'"
    )
    config = tmp_path / "tollmeter.yaml"
    config.write_text("log_level: info\n")
    checked = _tollmeter(site, "validate-config", str(config))
    assert (checked.returncode, checked.stdout) == (0, f"OK: {config}\n"), checked.stderr


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _extra(name: str) -> set[str]:
    """The distributions the installed ``tollmeter`` metadata lists for an extra."""
    found = set()
    for requirement in requires("tollmeter") or ():
        spec, _, marker = requirement.partition(";")
        if re.search(rf"extra\s*==\s*['\"]{name}['\"]", marker):
            found.add(_canonical(re.split(r"[\s<>=!~\[]", spec.strip(), maxsplit=1)[0]))
    # A self-reference such as tollmeter[collector] is checked through that extra.
    return found - {"tollmeter"}


def _distributions_of(modules: Iterable[str]) -> set[str]:
    providers = packages_distributions()
    return {_canonical(dist) for module in modules for dist in providers[module.split(".")[0]]}


@pytest.mark.parametrize(
    ("extra", "modules"),
    [("collector", COLLECTOR_MODULES), ("demo", COLLECTOR_MODULES + DEMO_MODULES)],
)
def test_the_checked_modules_cover_each_extra(extra: str, modules: tuple[str, ...]):
    """Each distribution of the extra provides a checked module (namespaces like
    ``opentelemetry`` are shared with the base install, hence a superset)."""
    assert _extra(extra) <= _distributions_of(modules)
    for module in modules:
        top = module.split(".")[0]
        assert {_canonical(dist) for dist in packages_distributions()[top]} & _extra(extra)


def test_the_package_loads_each_public_name_on_first_use():
    """``import tollmeter.collector`` imports none of the extra's modules (the base install
    tests above depend on it); each public name still resolves from the module that
    defines it."""
    homes = tollmeter.collector._HOMES
    assert sorted(homes) == sorted(tollmeter.collector.__all__)
    for name, home in homes.items():
        value = getattr(tollmeter.collector, name)
        assert value is getattr(sys.modules[f"tollmeter.collector.{home}"], name)
