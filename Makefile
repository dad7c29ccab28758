# Two commands matter: `make run` and `make test`. Both create .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1

.PHONY: run test lint bench demo-models services clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gouache run

services:
	bash scripts/test-services.sh

lint: $(STAMP)
	$(PY) -m ruff check gouache tests benchmarks
	$(PY) -m mypy

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
	$(PY) -m tools.demo.depth_training --out gouache/models/demo --seed 0
