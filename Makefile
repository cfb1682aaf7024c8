# Two commands for a newcomer: `make run` and `make test`. Both build .venv from requirements.lock
# first; the venv is rebuilt only when the lock changes (its hash is stamped inside the venv).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The first Python 3.10 that actually runs (a pyenv shim can exist without a 3.10 selected).
PYTHON310 ?= $(shell for c in python3.10 $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.10.*/bin/python3.10 /usr/bin/python3.10 2>/dev/null); do \
	  "$$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { command -v "$$c"; break; }; done)
VENV      := .venv
PY        := $(VENV)/bin/python
RECSYS    := $(VENV)/bin/recsys
LOCK_HASH := $(shell sha256sum requirements.lock setup.py | sha256sum | cut -c1-16)
STAMP     := $(VENV)/.installed-$(LOCK_HASH)
export TF_USE_LEGACY_KERAS := 1
export PYTHONHASHSEED := 0

DATA      ?= data/sample
# The reviewed contract.json and schema.pbtxt of DATA, committed (recsys schema export writes them); the default is
# the movie sample's. On your own data: SCHEMA_DIR=schema/NAME after exporting yours, or SCHEMA_DIR= (empty) to
# infer both beside the data on the first run.
SCHEMA_DIR ?= schema/movies
SCHEMA_ARGS = $(if $(SCHEMA_DIR),--schema-dir $(SCHEMA_DIR))
OUT       ?= output
MODEL     ?= auto
PORT      ?= 8500
USER_ID   ?= u00001
ITEM_ID   ?= i00001

IMAGE     ?= recsys-pipeline:latest
KFP_DATA_ROOT  ?= gs://YOUR_BUCKET/recsys/data
KFP_OUTPUT_DIR ?= gs://YOUR_BUCKET/recsys/output

.PHONY: help venv run sample pipeline demo test test-quick lock image compile clean

help:
	@echo "make run         set up .venv, generate the sample, run the TFX pipeline, query the served model over gRPC"
	@echo "make test        set up .venv and run the whole test suite"
	@echo "make test-quick  the tests not marked slow"
	@echo "make compile     compile the pipeline for Kubeflow Pipelines v2 (IMAGE=..., KFP_DATA_ROOT=gs://..., KFP_OUTPUT_DIR=gs://...)"
	@echo "                 run and compile read the reviewed contract and schema in SCHEMA_DIR (default schema/movies);"
	@echo "                 your own data: DATA=dir SCHEMA_DIR=schema/NAME (see README, Your data), or SCHEMA_DIR= to infer"
	@echo "make image       build the pipeline image from the Dockerfile (needs a Docker engine)"
	@echo "make clean       remove pipeline outputs and the generated sample (keeps .venv)"
	@echo "make bench-quality  every model beside most popular, ItemKNN, EASE, iALS on a fresh sample (~10 min)"
	@echo "make bench-rating mf and hybrid in each form (seeds', SVD++ implicit term) with/without refit, tuned defaults, beside global mean, biases, SVD-style (~15 min)"
	@echo "make bench       benchmarks into bench/results (pipeline 100K+1M, training input path, serving, scaling, ANN at 1M items) and bench/report.md (~13 min)"
	@echo "make bench-big   ials and two_tower through the pipeline on a 100,000-item synthetic (~20 min)"
	@echo "make bench-scale the pipeline at 100K, 1M, 10M interactions (100,000 items, iALS): time and peak RSS per component (~50 min)"
	@echo "make bench-replay continuous training over 14 daily spans: warm and cold daily runs beside a frozen model and most popular"

venv: $(STAMP)

$(STAMP): requirements.lock setup.py
	@test -n "$(PYTHON310)" || { echo "error: Python 3.10 not found (TFX 1.16 needs it): install python3.10 or set PYTHON310=/path/to/python3.10" >&2; exit 1; }
	@echo "==> creating $(VENV) with $(PYTHON310) from requirements.lock (first time: several minutes, ~3 GB)"
	rm -rf $(VENV)
	$(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==24.2 setuptools==70.3.0 wheel==0.44.0
	$(PY) -m pip install --quiet --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

sample: venv
	$(RECSYS) sample --out $(DATA)

pipeline: sample
	$(RECSYS) run --data-root $(DATA) --output-dir $(OUT) --model $(MODEL) $(SCHEMA_ARGS)

# Start the server on the pushed model, ask it for a top-10, five similar items, five for an anonymous session
# that just saw ITEM_ID, and one score; stop it whatever happens.
demo: venv
	@set -e; \
	$(RECSYS) serve --model-dir $(OUT)/serving/recsys --port $(PORT) & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null || true' EXIT; \
	$(RECSYS) recommend --user $(USER_ID) --k 10 --target localhost:$(PORT) --wait 120; \
	$(RECSYS) similar --item $(ITEM_ID) --k 5 --target localhost:$(PORT); \
	$(RECSYS) recommend --history $(ITEM_ID) --k 5 --target localhost:$(PORT); \
	$(RECSYS) predict --user $(USER_ID) --item $(ITEM_ID) --target localhost:$(PORT)

run: pipeline demo

# One test file per worker, a worker per core (pytest-xdist): files share their module fixtures (a pipeline run).
# Files go out in collection order, the most end-to-end tests first (tests/conftest.py).
test: venv
	$(PY) -m pytest -ra -n auto --dist loadfile --no-loadscope-reorder --durations=15

test-quick: venv
	$(PY) -m pytest -ra -n auto --dist loadfile --no-loadscope-reorder -m "not slow"

# Re-pin after editing requirements: installs the current lock, then writes what is installed.
lock: venv
	{ grep '^#' requirements.lock; $(PY) -m pip freeze --exclude-editable | sed '/^-e /d'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

# The Kubeflow pipeline image (needs a Docker engine) and its compiled KFP v2 spec.
image:
	docker build -t $(IMAGE) .

compile: venv
	$(RECSYS) compile --image $(IMAGE) --data-root $(KFP_DATA_ROOT) --output-dir $(KFP_OUTPUT_DIR) --output pipeline.json \
	    $(SCHEMA_ARGS)

clean:
	rm -rf $(OUT) $(DATA)

# Benchmarks (issue 7): every step writes bench/results/<name>.json, then the report renders them all.
# bench/run_all.py runs the pipelines (100K, 1M), the training throughput and the recommend scaling
# benchmarks in one process (imports and Keras start-up paid once); the pipeline runs stay under
# $(BENCH_WORK) (ignored by git) for the later steps.
BENCH_WORK ?= output/bench
.PHONY: bench
bench: export PYTHONWARNINGS := ignore::FutureWarning
bench: venv
	@mkdir -p $(BENCH_WORK) bench/results && date +%s > $(BENCH_WORK)/started_at
	$(PY) bench/run_all.py --work-dir $(BENCH_WORK) --results-dir bench/results
	$(PY) bench/serving_latency.py --model-dir $(BENCH_WORK)/out_100000/serving/recsys
	$(PY) bench/big_catalogue.py --only ann --results-dir bench/results
	$(PY) bench/report.py --results-dir bench/results --out bench/report.md --started-at $$(cat $(BENCH_WORK)/started_at)

# Ranking models above EASE's limit (ials, two_tower) through the pipeline on a 100,000-item synthetic (~20 min on
# 2 cores; its own target, as bench-quality); the report picks it up.
.PHONY: bench-big
bench-big: venv
	$(PY) bench/big_catalogue.py --only models --models ials two_tower --work-dir $(BENCH_WORK)/big --results-dir bench/results
	$(PY) bench/report.py --results-dir bench/results --out bench/report.md

# The cost curve (issue 18): the whole pipeline at 100K, 1M and 10M interactions over one 100,000-item catalogue
# (users grow as interactions / 50), iALS, Beam as `recsys run` picks it (multi-processing on every core from 1M); each
# size in a process of its own (a Python process keeps the memory it once held); per-component time and peak RSS
# into bench/results/pipeline_scale_catalogue_*.json (~70 min on 2 cores); the report picks them up.
.PHONY: bench-scale
bench-scale: export PYTHONWARNINGS := ignore::FutureWarning
bench-scale: venv
	for size in 100000 1000000 10000000; do \
	    $(PY) bench/run_pipelines.py --sizes $$size --epochs 1 --train-buckets 8 --items 100000 \
	        --model ials --label catalogue --work-dir $(BENCH_WORK)/scale --results-dir bench/results || exit 1; \
	done
	$(PY) bench/report.py --results-dir bench/results --out bench/report.md

# Continuous training (issue 19): 14 daily spans of the timeline sample, warm and cold daily runs on a 7-day window,
# each day's served model scored on the next day beside a model frozen after day 1 and most popular, under a live
# server's client loop; its own target (two pipeline runs a day); the results go to bench/results/replay.*.
.PHONY: bench-replay
bench-replay: venv
	$(RECSYS) benchmark --replay --output-dir $(BENCH_WORK)/replay_out
	cp $(BENCH_WORK)/replay_out/replay.json $(BENCH_WORK)/replay_out/replay.md bench/results/

# Ranking and rating quality of every model beside most popular, ItemKNN, EASE and iALS on a fresh sample
# (~10 min on 2 cores; its own target to keep `make bench` within 15 minutes); the report picks it up.
.PHONY: bench-quality
bench-quality: venv
	rm -rf $(BENCH_WORK)/quality && $(RECSYS) sample --out $(BENCH_WORK)/quality/sample
	$(RECSYS) benchmark --data-root $(BENCH_WORK)/quality/sample --output-dir $(BENCH_WORK)/quality/out
	for ext in json md png; do cp $(BENCH_WORK)/quality/out/benchmark.$$ext bench/results/quality_sample.$$ext; done
	$(PY) bench/report.py --results-dir bench/results --out bench/report.md

# The rating models (issue 20): each form with and without the refit, untuned, beside their tuned defaults and the
# rating references (global mean, damped biases, SVD-style ALS), all on one split of a fresh sample.
.PHONY: bench-rating
bench-rating: venv
	rm -rf $(BENCH_WORK)/rating && $(RECSYS) sample --out $(BENCH_WORK)/rating/sample
	$(RECSYS) benchmark --data-root $(BENCH_WORK)/rating/sample --output-dir $(BENCH_WORK)/rating/out \
		--models mf,hybrid --rating-variants
	for ext in json md png; do cp $(BENCH_WORK)/rating/out/benchmark.$$ext bench/results/rating_sample.$$ext; done
