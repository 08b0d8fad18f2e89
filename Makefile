# Two commands on a fresh machine: `make up` runs the system, `make test` runs the tests.
# Both first set up whatever is missing: Debian packages, the virtual environment, the package.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: up test setup system lint bench clean

up: setup
	$(BIN)/xiaozhi up

test: setup lint
	$(BIN)/pytest --cov=xiaozhi --cov-report=term-missing:skip-covered --cov-fail-under=95

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/xiaozhi bench codecs

setup: system $(STAMP)

system:
	@bash scripts/ensure-system-packages.sh

# Re-installs only when the dependency list changed; the install is editable, so code
# changes need nothing.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .coverage build *.egg-info
