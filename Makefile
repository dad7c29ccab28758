# Two commands matter: `make run` and `make test`. Both create .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1

.PHONY: run test lint bench demo-models services clean

# scripts/install.sh is also what the Dockerfile runs: CI proves the image's install steps.
$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh --venv $(VENV) --editable --extras test
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gouache run

services:
	bash scripts/test-services.sh

lint: $(STAMP)
	$(PY) -m ruff check gouache tests benchmarks
	$(PY) -m mypy
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml

test: lint services
	$(PY) -m pytest -q

bench: $(STAMP) services
	$(PY) benchmarks/queue.py
	$(PY) benchmarks/demo_quality.py

clean:
	rm -rf $(VENV) data .pytest_cache

# Retrains the shipped demo models from a seed (hours on a CPU; not part of CI).
demo-models: $(STAMP)
	$(PY) -m tools.demo.train --out gouache/models/demo --seed 0
