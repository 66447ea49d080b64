# Two entry points do all set-up on a fresh Debian machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NPM_STAMP := static/node_modules/.installed

.PHONY: demo test lint unit system-deps bench soak profile clean wheel lock lock-upgrade lock-check

# Dependencies come from the lock (exact versions, hashes checked), the project itself after them.
$(STAMP): requirements-test.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r requirements-test.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
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

test: system-deps $(STAMP) $(NPM_STAMP) lint lock-check
	$(BIN)/pytest

# dist/*.whl with templates/, static/ and the npm packages inside (hatch_build.py stops the build
# when static/node_modules lacks one). The build backend (hatchling) comes from the index.
wheel: $(STAMP) $(NPM_STAMP)
	rm -rf dist
	$(BIN)/pip wheel -q --disable-pip-version-check --no-deps -w dist .

# The locks follow pyproject.toml's ranges. uv keeps the versions already locked unless
# pyproject.toml rules them out; `make lock-upgrade` moves everything to the newest allowed.
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command 'make lock'

lock: $(STAMP)
	$(UV_COMPILE) $(UPGRADE) -o requirements.lock
	$(UV_COMPILE) $(UPGRADE) --extra test -o requirements-test.lock

lock-upgrade:
	$(MAKE) lock UPGRADE=--upgrade

# Fails when a lock no longer matches pyproject.toml (compiled again into a temporary copy; the
# hashes are left out of the comparison, since the index may add files to a release).
lock-check: $(STAMP)
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cp requirements.lock requirements-test.lock "$$tmp"/; \
	$(UV_COMPILE) -o "$$tmp"/requirements.lock; \
	$(UV_COMPILE) --extra test -o "$$tmp"/requirements-test.lock; \
	for lock in requirements.lock requirements-test.lock; do \
		grep -v -e '--hash=' $$lock > "$$tmp"/want; grep -v -e '--hash=' "$$tmp"/$$lock > "$$tmp"/got; \
		diff -u "$$tmp"/want "$$tmp"/got || { echo "$$lock is out of date: run 'make lock'" >&2; exit 1; }; \
	done

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
	SOAK_SECONDS=300 SOAK_CONSOLES=500 $(BIN)/pytest -s -o timeout=900 tests/relay/test_soak.py

clean:
	rm -rf $(VENV) static/node_modules dist .pytest_cache .mypy_cache .ruff_cache
