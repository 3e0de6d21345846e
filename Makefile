# One-command entry points (see README). Everything installs into ./.venv from PyPI / local wheels.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-12)

.PHONY: setup serve test test-fast bench clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	PY=$(PY) bash scripts/bootstrap.sh
	touch $(STAMP)

setup: $(STAMP)

serve: $(STAMP)
	$(BIN)/python -m service --host $${HOST:-127.0.0.1} --port $${PORT:-8000}

test: $(STAMP)
	bash scripts/install_test_tools.sh
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/codec.py

clean:
	rm -rf $(VENV) .pytest_cache
