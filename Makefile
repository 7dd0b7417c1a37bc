# Every target sets itself up: a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sessionctx-installed
BENCH_STAMP := $(VENV)/.sessionctx-bench-installed
LINTED := src tests benchmarks examples

.PHONY: help install test test-oldest lint typecheck pytest demo bench stress clean

help:
	@echo "make demo   - two real services sharing one session id (sets itself up)"
	@echo "make test   - ruff, mypy --strict, pytest with branch coverage (sets itself up)"
	@echo "make test-oldest - the tests against the oldest supported versions (own venv)"
	@echo "make bench  - benchmarks against peers and a hand-written floor"
	@echo "make stress - large reliability runs (load, faults, leaks)"

$(PY):
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); $(PYTHON) -m venv --without-pip $(VENV) && $(PYTHON) -m pip --python $(PY) install pip; }

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	@touch $(BENCH_STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/ruff check $(LINTED)

typecheck: $(STAMP)
	$(VENV)/bin/mypy $(LINTED)

# pytest exits 5 when it collects nothing (e.g. a -k filter matching no test);
# that is not a failure of the code under test.
pytest: $(STAMP)
	$(PY) -m pytest --cov --cov-report=term $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test: lint typecheck pytest

# The suite (but the reliability runs) against the lowest versions
# pyproject.toml declares, pinned in constraints/oldest.txt, in a venv of its own.
OLDEST_VENV ?= .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.sessionctx-installed

$(OLDEST_STAMP): pyproject.toml constraints/oldest.txt
	rm -rf $(OLDEST_VENV)
	$(PYTHON) -m venv $(OLDEST_VENV) || { rm -rf $(OLDEST_VENV); $(PYTHON) -m venv --without-pip $(OLDEST_VENV) && $(PYTHON) -m pip --python $(OLDEST_VENV)/bin/python install pip; }
	$(OLDEST_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints/oldest.txt -e '.[test]'
	@touch $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -m pytest -q --ignore=tests/reliability $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

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
