# Fresh-machine entry points: `make demo` and `make test` create .venv/ on first use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.corereg-installed
CORES ?= 2
export PATH := $(BIN):$(PATH)

.PHONY: install demo example example-check paperscale paperscale-ci test lint format dryrun clean-demo

$(STAMP): requirements.lock requirements-dev.lock requirements-nodeps.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "corereg needs Python 3.11; set PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock -r requirements-dev.lock
	CMAKE_POLICY_VERSION_MINIMUM=3.5 $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --pre quantiphyse-deeds==0.8.dev9
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

install: $(STAMP)

# DEMO_TARGETS: empty = the whole demo; e.g. `make demo DEMO_TARGETS="table1 fig3"` for a part.
DEMO_TARGETS ?=
demo: $(STAMP)
	$(BIN)/snakemake $(DEMO_TARGETS) --profile profiles/demo --configfile workflow/presets/demo.yaml --cores $(CORES)
	@echo "Demo outputs: results/demo/tables/*.md, results/demo/figures/*.png"

# Paper-scale smoke: the paper's image sizes on synthetic phantoms, every step, a handful of
# iterations (workflow/presets/paperscale.yaml); the CI variant: one dataset, CoRe only.
# Each step's time and memory land in results/paperscale*/benchmarks/ (`corereg costs`).
PAPERSCALE_RES ?= mem_mb=20000
paperscale: $(STAMP)
	$(BIN)/snakemake --profile profiles/demo --configfile workflow/presets/paperscale.yaml \
		--cores $(CORES) --resources $(PAPERSCALE_RES) --keep-going

paperscale-ci: $(STAMP)
	$(BIN)/snakemake table1 --profile profiles/demo --cores $(CORES) --resources $(PAPERSCALE_RES) \
		--configfile workflow/presets/paperscale.yaml workflow/presets/paperscale_ci.yaml

# The README's example results: copy the demo's tables and figures (after `make demo`),
# or check the committed ones against a fresh demo within the stated tolerances.
example: $(STAMP)
	$(BIN)/python -m corereg example update

example-check: $(STAMP)
	$(BIN)/python -m corereg example check

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --configfile workflow/presets/tiny.yaml > /dev/null

test: lint
	$(BIN)/python -m pytest -q

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/snakefmt Snakefile workflow/rules

dryrun: $(STAMP)
	$(BIN)/snakemake -n

clean-demo:
	rm -rf results/demo
