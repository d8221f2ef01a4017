# fishaug: `make setup` once, then `make train` or `make test`. `make help` lists the targets.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision are installed first, pinned to a pair known to work together.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup train sweep prepare test test-full lint format clean-logs

help:  ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  %-18s %s\n", $$1, $$2}'

setup: $(STAMP)  ## Create .venv with fishaug and everything the tests use

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PINS)
	$(BIN)/python -m pip install -e ".[dev,synth]"
	touch $@

train: setup  ## Train one model with the default config (pass Hydra overrides in ARGS="...")
	$(BIN)/python train.py $(ARGS)

sweep: setup  ## The main job: a RandAugment grid (n x m) on the default data
	$(BIN)/python train.py -m aug=randaugment aug.n=1,2,3 aug.m=5,7,9 $(ARGS)

prepare: setup  ## Fish-counter videos to crops and a manifest (ARGS="input_dir=<videos> ...")
	$(BIN)/python prepare.py $(ARGS)

.PHONY: search
search: setup  ## Faster AutoAugment policy search on the training split (ARGS="data.fold=0 ...")
	$(BIN)/python search.py $(ARGS)

test: setup browser lint  ## Lint, then the default tests (a few minutes on 2 CPU cores)
	$(BIN)/python -m pytest -m "not slow and not gpu" $(ARGS)

test-full: setup browser lint  ## Lint, then every test that runs without a GPU, slow ones included
	$(BIN)/python -m pytest -m "not gpu" $(ARGS)

.PHONY: report browser
report: setup  ## Compare runs: tables, plots, HTML page (RUNS=<sweep or run folders>, default latest sweep)
	$(BIN)/python report.py $(if $(RUNS),"runs=[$$(echo $(RUNS) | tr ' ' ',')]") $(ARGS)

# The browser test of the HTML report needs Chromium and its driver. As root on Debian or
# Ubuntu they are installed when missing; otherwise nothing happens and that test is skipped.
browser:  ## Install chromium and chromium-driver with apt-get if missing and running as root
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "chromium or chromedriver missing and not root: the browser test will be skipped."; fi

lint: setup  ## Check style with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup  ## Format and fix the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-logs:  ## Delete run folders under logs/ (keeps logs/ itself)
	find logs -mindepth 1 -not -name .gitkeep -delete

# ---- Synthetic images with Stable Diffusion (README: "Synthetic images with Stable Diffusion") --
# Every synth.py step and a training run with the set, on a tiny random model built in code: a
# check that the workflow runs on a CPU, not a result (its images are noise).
FISHCAM_ROOT ?= $(firstword $(wildcard ../shared/data/fishcam_at) data/fishcam_at)
DEMO_DIR := data/synth/demo
DEMO_DATA := dataset=fishcam dataset.root=$(FISHCAM_ROOT)
DEMO_SYNTH := $(BIN)/python synth.py synth/base=tiny name=demo $(DEMO_DATA)

.PHONY: synth-demo
synth-demo: setup  ## All synth.py steps on a tiny random model, then training with the set (CPU)
	$(DEMO_SYNTH) step=tiny_model
	$(DEMO_SYNTH) step=prepare prepare.per_class=8 prepare.overwrite=true \
	  prepare.auto_caption.model=data/synth/tiny-captioner
	$(DEMO_SYNTH) step=lora lora.max_steps=20 lora.checkpoint_every=10 \
	  lora.train_text_encoder=true lora.overwrite=true
	$(DEMO_SYNTH) step=dreambooth dreambooth.max_steps=4 dreambooth.checkpoint_every=null \
	  dreambooth.num_class_images=2 dreambooth.class_num_inference_steps=4 dreambooth.overwrite=true
	$(DEMO_SYNTH) step=merge
	$(DEMO_SYNTH) step=grid grid.seeds=[0,1] generate.sampler.num_inference_steps=4
	$(DEMO_SYNTH) step=generate generate.per_class=8 generate.sampler.num_inference_steps=4 \
	  generate.overwrite=true 'generate.models=[{name:lora,lora:$(DEMO_DIR)/lora},{name:dreambooth,path:$(DEMO_DIR)/dreambooth},{name:merged,path:$(DEMO_DIR)/merged/lora-x0.8}]'
	$(BIN)/python train.py $(DEMO_DATA) debug=few_batches hydra.run.dir=$(DEMO_DIR)/classifier
	$(DEMO_SYNTH) step=filter filter.checkpoint=$(DEMO_DIR)/classifier/checkpoints/last.ckpt
	$(BIN)/python train.py $(DEMO_DATA) debug=few_batches aug=synthetic \
	  aug.sets=[$(DEMO_DIR)/filtered] aug.inner=randaugment hydra.run.dir=$(DEMO_DIR)/train

# ---- Reproducing the study (README: "Reproducing the study") -------------------------------
# Each table is one multirun, `train.py -m experiment=<table>`. Jobs whose results exist under
# logs/ are reused (skip_completed=true) and interrupted ones resume from their last.ckpt
# (resume=true), so a stopped target can simply be started again.
#   make plan                                list every job, its status and the estimated hours
#   make reproduce                           the data check, policy searches, synthetic sets, tables
#   make table-randaugment LAUNCHER=joblib   one table, several jobs at a time on this machine
# Overrides that choose the data set, used by every step.
DATA_ARGS ?= dataset=fishcam
# Training settings of every step that trains: thesis (the study's), gpu or cpu.
PRESET ?= thesis
# More overrides for every training run (single runs too), e.g. "trainer.max_epochs=10".
TRAIN_ARGS ?=
# Overrides for the tables only: launcher keys and narrower sweeps, e.g.
# "hydra.launcher.n_jobs=4 model=resnet18 data=video_folds data.fold=0,1".
SWEEP_ARGS ?=
# hydra/launcher of the tables: basic (one job at a time), joblib, submitit_local or slurm.
LAUNCHER ?= basic
# Per-split inputs of the tables (policies, synthetic sets); one folder per data set.
STUDY_DIR ?= data/study
SEARCH_EPOCHS ?= 300
SEARCH_ARGS ?=
# Stable Diffusion settings, e.g. "base.model=/models/sd15 base.local_files_only=true".
SYNTH_ARGS ?=

TABLES := baseline autoaugment randaugment augmix faster_aa synthetic
# The splits of configs/experiment/protocol.yaml: the random split and video folds 0 to 3.
SPLITS := random_split-0 video_folds-0 video_folds-1 video_folds-2 video_folds-3
FOLD_SPLITS := $(filter video_folds-%,$(SPLITS))
SYNTH_SETS := lora dreambooth

comma := ,
empty :=
space := $(empty) $(empty)
STUDY_PATH := $(abspath $(STUDY_DIR))
STUDY_DATA := $(STUDY_DIR)/splits.json
POLICY_FILES := $(foreach s,$(SPLITS),$(STUDY_DIR)/policies/$(s)/policy.json)
SET_FILES := $(foreach s,$(FOLD_SPLITS),$(foreach k,$(SYNTH_SETS),$(STUDY_DIR)/synth/$(s)/sets/$(k)/filtered/manifest.csv))
# "video_folds-2/sets/lora" -> video_folds-2; "video_folds-2" -> data.scheme=video_folds data.fold=2
split_of = $(firstword $(subst /, ,$(1)))
split_args = data.scheme=$(word 1,$(subst -, ,$(1))) data.fold=$(word 2,$(subst -, ,$(1)))
STUDY_OVERRIDES := preset=$(PRESET) study_dir=$(STUDY_PATH) $(DATA_ARGS)
TABLE_OVERRIDES := hydra/launcher=$(LAUNCHER) $(STUDY_OVERRIDES) $(TRAIN_ARGS) $(SWEEP_ARGS)
SYNTH := $(BIN)/python synth.py $(DATA_ARGS) $(SYNTH_ARGS)

# Check every job of table $(1) (a key its aug option lacks fails here), then run the table.
define run_table
	$(BIN)/python plan.py experiment=$(1) $(TABLE_OVERRIDES)
	$(BIN)/python train.py -m experiment=$(1) $(TABLE_OVERRIDES)
endef

# Fail with the target that makes them when the files in $(1) are missing.
define require
	@missing=$$(for f in $(1); do test -e "$$f" || echo "$$f"; done); \
	if [ -n "$$missing" ]; then \
	  echo "Missing $$(echo "$$missing" | wc -l) input file(s), e.g. $$(echo "$$missing" | head -1)." >&2; \
	  echo "Run 'make $(2)' first, with the same DATA_ARGS and STUDY_DIR." >&2; exit 1; \
	fi
endef

.PHONY: plan reproduce study-data policies synthetic-sets $(addprefix table-,$(TABLES))

plan: setup  ## List every job of the study with its status and estimated hours; trains nothing
	$(BIN)/python plan.py experiment=$(subst $(space),$(comma),$(TABLES)) $(STUDY_OVERRIDES) $(TRAIN_ARGS) $(SWEEP_ARGS)

ifdef DRY_RUN
reproduce: plan
else
reproduce: study-data policies synthetic-sets  ## All tables after their inputs (DRY_RUN=1: only `make plan`)
	$(MAKE) $(addprefix table-,$(TABLES))
endif

study-data: $(STUDY_DATA)  ## Load the data set and check that every split of the study can be built

$(STUDY_DATA): | setup
	$(BIN)/python plan.py experiment=protocol $(STUDY_OVERRIDES) --check-data $@

policies: $(POLICY_FILES)  ## Faster AutoAugment search on each split's training images (search.py)

$(STUDY_DIR)/policies/%/policy.json: | $(STUDY_DATA)
	$(BIN)/python search.py $(call split_args,$*) preset=$(PRESET) trainer.max_epochs=$(SEARCH_EPOCHS) \
	  hydra.run.dir=$(STUDY_DIR)/policies/$* $(DATA_ARGS) $(SEARCH_ARGS)

synthetic-sets: $(SET_FILES)  ## Stable Diffusion sets per video fold: fine-tune, generate, filter (synth.py)

# The steps of one split's sets; synth.py keeps them in work_dir=$(STUDY_DIR)/synth/<split>.
# Precious: make would otherwise delete these outputs of intermediate steps (the fine-tuned
# weights among them) once the sets are made.
.PRECIOUS: $(STUDY_DIR)/synth/%/finetune_set/provenance.json \
  $(STUDY_DIR)/synth/%/lora/pytorch_lora_weights.safetensors \
  $(STUDY_DIR)/synth/%/dreambooth/model_index.json \
  $(STUDY_DIR)/synth/%/sets/lora/generated/manifest.csv \
  $(STUDY_DIR)/synth/%/sets/dreambooth/generated/manifest.csv \
  $(STUDY_DIR)/synth/%/classifier/metrics.json
$(STUDY_DIR)/synth/%/finetune_set/provenance.json: | $(STUDY_DATA)
	$(SYNTH) step=prepare $(call split_args,$*) work_dir=$(STUDY_DIR)/synth/$*

$(STUDY_DIR)/synth/%/lora/pytorch_lora_weights.safetensors: $(STUDY_DIR)/synth/%/finetune_set/provenance.json
	$(SYNTH) step=lora $(call split_args,$*) work_dir=$(STUDY_DIR)/synth/$*

$(STUDY_DIR)/synth/%/dreambooth/model_index.json: $(STUDY_DIR)/synth/%/finetune_set/provenance.json
	$(SYNTH) step=dreambooth $(call split_args,$*) work_dir=$(STUDY_DIR)/synth/$*

$(STUDY_DIR)/synth/%/sets/lora/generated/manifest.csv: $(STUDY_DIR)/synth/%/lora/pytorch_lora_weights.safetensors
	$(SYNTH) step=generate $(call split_args,$*) work_dir=$(STUDY_DIR)/synth/$* \
	  'generate.models=[{name:lora,path:null,lora:$(STUDY_DIR)/synth/$*/lora,lora_scale:1.0}]' \
	  generate.output_dir=$(dir $@) generate.set_id=$*-lora

$(STUDY_DIR)/synth/%/sets/dreambooth/generated/manifest.csv: $(STUDY_DIR)/synth/%/dreambooth/model_index.json
	$(SYNTH) step=generate $(call split_args,$*) work_dir=$(STUDY_DIR)/synth/$* \
	  'generate.models=[{name:dreambooth,path:$(STUDY_DIR)/synth/$*/dreambooth,lora:null,lora_scale:1.0}]' \
	  generate.output_dir=$(dir $@) generate.set_id=$*-dreambooth

# The filter's classifier is the baseline ResNet18 of the split; when the baseline table ran
# first, this run reuses its results and metrics.json names its checkpoint.
$(STUDY_DIR)/synth/%/classifier/metrics.json: | $(STUDY_DATA)
	$(BIN)/python train.py experiment=baseline model=resnet18 $(call split_args,$*) \
	  hydra.run.dir=$(dir $@) $(STUDY_OVERRIDES) $(TRAIN_ARGS)

# The stem is <split>/sets/<set>; the classifier is that split's.
.SECONDEXPANSION:
$(STUDY_DIR)/synth/%/filtered/manifest.csv: $(STUDY_DIR)/synth/%/generated/manifest.csv \
    $(STUDY_DIR)/synth/$$(call split_of,$$*)/classifier/metrics.json
	$(SYNTH) step=filter $(call split_args,$(call split_of,$*)) \
	  work_dir=$(STUDY_DIR)/synth/$(call split_of,$*) filter.input_dir=$(dir $<) \
	  filter.output_dir=$(dir $@) filter.set_id=$(subst /sets/,-,$*)-filtered \
	  filter.checkpoint=$$($(BIN)/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["best_checkpoint"])' $(lastword $^))

table-baseline: study-data  ## Table: no augmentation (10 runs)
	$(call run_table,baseline)

table-autoaugment: study-data  ## Table: AutoAugment, imagenet, cifar10 and svhn policies (30 runs)
	$(call run_table,autoaugment)

table-randaugment: study-data  ## Table: RandAugment, N 1 to 3 by M 5 to 15 (180 runs)
	$(call run_table,randaugment)

table-augmix: study-data  ## Table: AugMix, severity 1 to 7 by width 2 to 4 (120 runs)
	$(call run_table,augmix)

table-faster_aa: study-data  ## Table: Faster AutoAugment after 20, 150, 300 search epochs (30 runs)
	$(call require,$(POLICY_FILES),policies)
	$(call run_table,faster_aa)

table-synthetic: study-data  ## Table: synthetic sets alone, together, with RandAugment (32 runs)
	$(call require,$(SET_FILES),synthetic-sets)
	$(call run_table,synthetic)
