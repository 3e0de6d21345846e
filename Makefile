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

# The address comes from the service's settings, LIC_HOST / LIC_PORT (env or --settings file), as with
# `python -m service` and the images; HOST= / PORT= are kept as aliases and win over them.
serve: $(STAMP)
	$(BIN)/python -m service $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

test: $(STAMP)
	bash scripts/install_test_tools.sh
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/codec.py

clean:
	rm -rf $(VENV) .pytest_cache
