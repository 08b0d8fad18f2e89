# Two commands on a fresh machine: `make up` runs the system, `make test` runs the tests.
# Both first set up whatever is missing: Debian packages, the virtual environment, the package.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: up test setup system lint bench clean

up: setup
	$(BIN)/xiaozhi up

# Coverage is measured for every package; the wire contract must stay fully covered.
COVERED := xiaozhi xiaozhi_edge xiaozhi_hub xiaozhi_sim xiaozhi_runtime xiaozhi_cli xiaozhi_bench xiaozhi_speech

test: setup lint
	$(BIN)/pytest $(addprefix --cov=,$(COVERED)) --cov-report=term:skip-covered
	$(BIN)/coverage report --include='*/xiaozhi/*' --fail-under=100 --skip-covered --show-missing

# ruff (style, complexity), import-linter (design.md section 2's boundaries), mypy (types).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	BIN=$(BIN) scripts/typecheck

bench: setup
	$(BIN)/xiaozhi bench codecs

setup: system $(STAMP)

system:
	@bash scripts/ensure-system-packages.sh

# Re-installs only when the dependency list changed; the install is editable, so code
# changes need nothing.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .coverage build *.egg-info
