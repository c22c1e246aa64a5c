# tollmeter developer commands. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
STAMP := $(VENV)/.installed-stamp

# The dev environment is installed from a lock (hashes included) compiled by `make lock`;
# pyproject.toml keeps ranges, since users install tollmeter beside their own packages.
LOCK := requirements/dev.txt
LOCK_INPUTS := pyproject.toml requirements/tools.in
UV_VERSION := $(shell sed -n 's/^uv==\([^ ;]*\).*/\1/p' requirements/tools.in)
COMPILE := $(UV) pip compile --quiet --universal --python-version 3.10 --generate-hashes \
	--all-extras $(LOCK_INPUTS)

# SDK variants: the instrumentation suite also runs against the oldest supported releases of
# the openai and anthropic SDKs and the last release of each older major line. Each variant is
# the dev lock with the SDK versions of requirements/sdk/NAME.in forced.
SDK_VARIANTS := $(basename $(notdir $(wildcard requirements/sdk/*.in)))

# Programs the tests run, as COMMAND=DEBIAN_PACKAGE.
SYSTEM_PACKAGES := prometheus=prometheus chromium=chromium redis-server=redis-server \
	'/usr/lib/postgresql/*/bin/initdb=postgresql'

# tiktoken cannot download here: use the encodings shipped beside the project when present.
ifneq ($(wildcard ../shared/tiktoken),)
export TIKTOKEN_CACHE_DIR := $(abspath ../shared/tiktoken)
endif

.PHONY: install demo test lint typecheck pytest sdk-matrix prerequisites lock lock-upgrade bench clean

install: $(STAMP)

# A venv with the pinned uv in it, whatever made the venv.
define uv_venv
	@test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	@$(1)/bin/uv --version 2>/dev/null | grep -q '^uv $(UV_VERSION) ' \
		|| $(1)/bin/python -m pip install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)'
endef

$(STAMP): $(LOCK) pyproject.toml
	$(call uv_venv,$(VENV))
	$(UV) pip sync --quiet --python $(BIN)/python --require-hashes $(LOCK)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	@touch $@

demo: install
	$(BIN)/tollmeter demo

prerequisites:
	@scripts/system-packages.sh $(SYSTEM_PACKAGES)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The FOCUS validator needs NumPy below 2, which the main lock's pyarrow refuses to import
# beside, so the tests run it as a program from a venv of its own.
FOCUS_VENV := .venv-focus
FOCUS_LOCK := requirements/focus/validator.txt

$(FOCUS_VENV)/.installed-stamp: $(FOCUS_LOCK) | install
	@test -x $(FOCUS_VENV)/bin/python || $(PYTHON) -m venv $(FOCUS_VENV)
	$(UV) pip sync --quiet --python $(FOCUS_VENV)/bin/python --require-hashes $(FOCUS_LOCK)
	@touch $@

pytest: install prerequisites $(FOCUS_VENV)/.installed-stamp
	$(BIN)/pytest

test: lint typecheck pytest sdk-matrix

sdk-matrix: $(foreach variant,$(SDK_VARIANTS),sdk-$(variant))

.venv-sdk-%/.installed-stamp: requirements/sdk/%.txt pyproject.toml
	$(call uv_venv,.venv-sdk-$*)
	.venv-sdk-$*/bin/uv pip sync --quiet --python .venv-sdk-$*/bin/python --require-hashes $<
	.venv-sdk-$*/bin/uv pip install --quiet --python .venv-sdk-$*/bin/python \
		--no-deps --no-build-isolation -e .
	@touch $@

.PRECIOUS: .venv-sdk-%/.installed-stamp

sdk-%: .venv-sdk-%/.installed-stamp
	@echo "instrumentation tests with $$(.venv-sdk-$*/bin/python -m pip list 2>/dev/null \
		| awk '$$1 == "openai" || $$1 == "anthropic" {printf "%s %s ", $$1, $$2}')"
	.venv-sdk-$*/bin/pytest -q tests/instrumentation tests/examples $(SDK_PYTEST_ARGS)

# The peer instrumentations of test_third_party.py and test_peer_instrumentations.py, and
# content capture as log events (test_content_capture.py, whose logs API takes keyword
# records), need OpenTelemetry releases newer than tollmeter's floor; the other suites run them.
sdk-opentelemetry-oldest: SDK_PYTEST_ARGS := --ignore=tests/instrumentation/test_third_party.py \
	--ignore=tests/instrumentation/test_peer_instrumentations.py \
	--ignore=tests/instrumentation/test_content_capture.py

# `make lock` records what pyproject.toml or requirements/ changed and keeps every other pin;
# `make lock-upgrade` moves every pin to the newest release within the ranges. Run `make test`
# on the result before committing it.
lock: install
	$(call compile_locks,)

lock-upgrade: install
	$(call compile_locks,--upgrade)

define compile_locks
	$(COMPILE) $(1) -o $(LOCK)
	$(UV) pip compile --quiet --universal --python-version 3.10 --generate-hashes $(1) \
		requirements/focus/validator.in -o $(FOCUS_LOCK)
	$(foreach variant,$(SDK_VARIANTS),\
		$(COMPILE) $(1) --override requirements/sdk/$(variant).in \
			-o requirements/sdk/$(variant).txt &&) true
endef

# Benchmarks get their own venv: the peer instrumentations they compare against must not
# be installed where the tests run (opentelemetry-instrument would load them too).
BENCH_VENV ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp

$(BENCH_STAMP): $(LOCK) pyproject.toml benchmarks/requirements.txt
	$(call uv_venv,$(BENCH_VENV))
	$(BENCH_VENV)/bin/uv pip sync --quiet --python $(BENCH_VENV)/bin/python --require-hashes $(LOCK)
	$(BENCH_VENV)/bin/uv pip install --quiet --python $(BENCH_VENV)/bin/python \
		--no-deps --no-build-isolation -e .
	$(BENCH_VENV)/bin/uv pip install --quiet --python $(BENCH_VENV)/bin/python \
		--constraint $(LOCK) -r benchmarks/requirements.txt
	@touch $@

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) .venv-sdk-* $(FOCUS_VENV) build dist .mypy_cache .ruff_cache .pytest_cache \
		.hypothesis tollmeter-data demo-data
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
