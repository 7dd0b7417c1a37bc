# Every target sets itself up: a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sessionctx-installed
BENCH_STAMP := $(VENV)/.sessionctx-bench-installed
LINTED := src tests benchmarks examples
PIP_INSTALL := -m pip install --quiet --disable-pip-version-check
# $(call make_venv,DIR): a venv in DIR, with pip also where Python has no ensurepip.
make_venv = $(PYTHON) -m venv $(1) || { rm -rf $(1); $(PYTHON) -m venv --without-pip $(1) && $(PYTHON) -m pip --python $(1)/bin/python install pip; }
# After a pytest command: stop the recipe with pytest's status, but pytest
# exits 5 when it collects nothing (e.g. a -k filter matching no test), and that
# is not a failure of the code under test. Goes on (status 0) when tests passed.
UNLESS_FAILED = rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi

.PHONY: help install test test-oldest lint typecheck pytest demo bench stress clean

help:
	@echo "make demo   - two real services sharing one session id (sets itself up)"
	@echo "make test   - ruff, mypy --strict, pytest with branch coverage (sets itself up)"
	@echo "make test-oldest - the tests against the oldest supported versions (own venv)"
	@echo "make bench  - benchmarks against peers and a hand-written floor"
	@echo "make stress - large reliability runs (load, faults, leaks)"
	@echo "make install - only create .venv and install the package with its test extras"
	@echo "make lint / typecheck / pytest - one part of make test (PYTEST_ARGS='-k ...' for pytest)"
	@echo "make clean  - remove the venvs and caches"

$(PY):
	$(call make_venv,$(VENV))

$(STAMP): pyproject.toml | $(PY)
	$(PY) $(PIP_INSTALL) --upgrade pip
	$(PY) $(PIP_INSTALL) -e '.[test]'
	@# Bytecode ahead of time: an editable install imports the package from src/,
	@# where nothing else compiles it when PYTHONDONTWRITEBYTECODE is set.
	$(PY) -m compileall -q src
	@touch $(STAMP)

install: $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) $(PIP_INSTALL) -e '.[bench]'
	@touch $(BENCH_STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/ruff check $(LINTED)

typecheck: $(STAMP)
	$(VENV)/bin/mypy $(LINTED)

# The coverage floor (fail_under in pyproject.toml) is checked once tests ran and
# passed: pytest-cov's own check would turn "collected nothing" into a failure.
pytest: $(STAMP)
	$(PY) -m pytest --cov --cov-report=term --cov-fail-under=0 $(PYTEST_ARGS); $(UNLESS_FAILED); \
	printf 'total coverage, fail_under in pyproject.toml: '; \
	$(PY) -m coverage report --format=total --precision=2

test: lint typecheck pytest

# The suite (but the reliability runs) against the lowest versions
# pyproject.toml declares, pinned in constraints/oldest.txt, in a venv of its own.
OLDEST_VENV ?= .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.sessionctx-installed

$(OLDEST_STAMP): pyproject.toml constraints/oldest.txt
	rm -rf $(OLDEST_VENV)
	$(call make_venv,$(OLDEST_VENV))
	$(OLDEST_VENV)/bin/python $(PIP_INSTALL) --upgrade pip
	$(OLDEST_VENV)/bin/python $(PIP_INSTALL) -c constraints/oldest.txt -e '.[test]'
	@touch $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -m pytest -q --ignore=tests/reliability $(PYTEST_ARGS); $(UNLESS_FAILED)

demo: $(STAMP)
	$(PY) -m examples.two_agents

# The end-to-end part needs wrk, the instruction counts valgrind: each is
# installed from Debian packages when missing and run as root, otherwise that
# part is skipped with a note in the table.
bench: $(BENCH_STAMP)
	@for tool in wrk valgrind; do command -v $$tool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $$tool (apt-get install -y $$tool)"; \
	    apt-get install -y -qq $$tool >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $$tool; } \
	      || echo "could not install $$tool: the part needing it will be skipped"; \
	  else \
	    echo "$$tool not found (apt-get install $$tool, as root): the part needing it will be skipped"; \
	  fi; }; done
	$(PY) -m benchmarks $(BENCH_ARGS)

stress: $(STAMP)
	SESSIONCTX_STRESS=1 $(PY) -m pytest -m reliability tests/reliability -p no:cov -q

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .coverage .coverage.* .mypy_cache .ruff_cache build dist
