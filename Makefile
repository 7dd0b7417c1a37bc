# Every target sets itself up: a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sessionctx-installed
LINTED := src tests benchmarks examples

.PHONY: help install test lint typecheck pytest demo bench stress clean

help:
	@echo "make demo   - two real services sharing one session id (sets itself up)"
	@echo "make test   - ruff, mypy --strict, pytest with branch coverage (sets itself up)"
	@echo "make bench  - benchmarks against peers and a hand-written floor"
	@echo "make stress - large reliability runs (load, faults, leaks)"

$(PY):
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); $(PYTHON) -m venv --without-pip $(VENV) && $(PYTHON) -m pip --python $(PY) install pip; }

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/ruff check $(LINTED)

typecheck: $(STAMP)
	$(VENV)/bin/mypy src tests

# pytest exits 5 when it collects nothing (e.g. a -k filter matching no test);
# that is not a failure of the code under test.
pytest: $(STAMP)
	$(PY) -m pytest --cov --cov-report=term $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test: lint typecheck pytest

demo: $(STAMP)
	$(PY) -m examples.two_agents

bench: $(STAMP)
	$(PY) -m benchmarks

stress: $(STAMP)
	SESSIONCTX_STRESS=1 $(PY) -m pytest -m reliability tests/reliability -p no:cov -q

clean:
	rm -rf $(VENV) .coverage .coverage.* .mypy_cache .ruff_cache build dist
