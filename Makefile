# fishaug: `make setup` once, then `make train` or `make test`. `make help` lists the targets.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision are installed first, pinned to a pair known to work together.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup train sweep test test-full lint format clean-logs

help:  ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  %-12s %s\n", $$1, $$2}'

setup: $(STAMP)  ## Create .venv with fishaug and everything the tests use

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PINS)
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

train: setup  ## Train one model with the default config (pass Hydra overrides in ARGS="...")
	$(BIN)/python train.py $(ARGS)

sweep: setup  ## The main job: a RandAugment grid (n x m) on the default data
	$(BIN)/python train.py -m aug=randaugment aug.n=1,2,3 aug.m=5,7,9 $(ARGS)

test: setup lint  ## Lint, then the default tests (a few minutes on 2 CPU cores)
	$(BIN)/python -m pytest -m "not slow and not gpu" $(ARGS)

test-full: setup lint  ## Lint, then every test that runs without a GPU, slow ones included
	$(BIN)/python -m pytest -m "not gpu" $(ARGS)

lint: setup  ## Check style with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup  ## Format and fix the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-logs:  ## Delete run folders under logs/ (keeps logs/ itself)
	find logs -mindepth 1 -not -name .gitkeep -delete
