# Two commands matter: `make run` and `make test`. Both create .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1

.PHONY: run test lint bench demo-models services clean evaluate

# scripts/install.sh is also what the Dockerfile runs: CI proves the image's install steps.
$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh --venv $(VENV) --editable --extras test
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gouache run

services:
	bash scripts/test-services.sh

lint: $(STAMP)
	$(PY) -m ruff check gouache tests benchmarks tools
	$(PY) -m mypy
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml

# Four workers on two cores: most integration tests wait on subprocesses and sockets, and each
# worker gets its own PostgreSQL database and temporary folders (tests/integration/conftest.py).
test: lint services
	$(PY) -m pytest -q -n 4 --durations=25

bench: $(STAMP) services
	$(PY) benchmarks/queue.py
	$(PY) benchmarks/demo_quality.py

# Sampler evaluation on builtin:demo (FID/KID on the demo CLIP, judge accuracy); a full run is
# long on a CPU: the committed figures in benchmarks/results/samplers.* used N=32.
SAMPLERS ?= ddim,pndm,euler,dpmpp-2m,ddpm
STEPS    ?= 10,25,50
N        ?= 200
evaluate: $(STAMP)
	$(PY) -m tools.evaluate --samplers $(SAMPLERS) --steps $(STEPS) --n $(N)

clean:
	rm -rf $(VENV) data .pytest_cache

# Retrains the shipped demo models from a seed (hours on a CPU; not part of CI).
demo-models: $(STAMP)
	$(PY) -m tools.demo.train --out gouache/models/demo --seed 0
	$(PY) -m tools.demo.depth_training --out gouache/models/demo --seed 0
