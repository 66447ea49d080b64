# Two entry points do all set-up on a fresh Debian machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NPM_STAMP := static/node_modules/.installed

.PHONY: demo test lint unit system-deps bench soak profile clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

$(NPM_STAMP): static/package-lock.json
	cd static && npm ci --no-audit --no-fund --loglevel=error
	touch $@

system-deps:
	./scripts/system-deps.sh

demo:
	./scripts/system-deps.sh demo
	$(MAKE) $(STAMP) $(NPM_STAMP)
	$(BIN)/console-proxy demo

lint: $(STAMP)
	$(BIN)/ruff check proxy tests
	$(BIN)/mypy

test: system-deps $(STAMP) $(NPM_STAMP) lint
	$(BIN)/pytest

# `make bench BENCH_ARGS=--quick` for one short run. websockify gets its own venv (it pulls numpy).
bench: $(STAMP)
	test -x bench/.venv-websockify/bin/websockify || { $(PYTHON) -m venv bench/.venv-websockify \
		&& bench/.venv-websockify/bin/pip install -q --disable-pip-version-check websockify==0.13.0; }
	$(BIN)/python -m bench $(BENCH_ARGS)

# Where the proxy spends its time in one benchmark scenario (py-spy; see bench/profile.py).
SCENARIO ?= setup
profile: $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check py-spy==0.4.1
	$(BIN)/python -m bench.profile --scenario $(SCENARIO)

# Longer than the one-minute soak inside `make test`.
soak: system-deps $(STAMP)
	SOAK_SECONDS=300 SOAK_CONSOLES=500 $(BIN)/pytest -s -o timeout=900 tests/test_soak.py

clean:
	rm -rf $(VENV) static/node_modules .pytest_cache .mypy_cache .ruff_cache
