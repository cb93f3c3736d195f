# `make demo` runs the quickstart study; `make test` runs lint and the test suite.
# Both create .venv and install the pinned dependencies (requirements.lock) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Named datasets are read from $SIZEWISE_DATA; a ../shared/data folder beside the checkout is used when set-up.
SIZEWISE_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export SIZEWISE_DATA

.PHONY: demo test lint format bench lock clean

$(BIN)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

demo: $(BIN)/.installed
	$(BIN)/sizewise data fetch snli
	$(BIN)/sizewise study run configs/quickstart.yaml

test: $(BIN)/.installed lint
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(BIN)/.installed
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(BIN)/.installed
	benchmarks/run_core.sh

lock: $(BIN)/.installed
	(echo "# Exact versions the Makefile installs (CPU build of torch 2.13.0). Regenerate: make lock"; \
	 $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==.*/torch==2.13.0/') > requirements.lock

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
