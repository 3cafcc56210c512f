# datagate — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATAGATE := $(abspath $(VENV))/bin/datagate
CONSTRAINTS := .ci/constraints.txt
# CPU builds by default; on a GPU machine install the CUDA build of the same versions first,
# e.g. `make TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cu128 install`.
TORCH_SPEC ?= torch==2.13.0 torchvision==0.28.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
export HF_HUB_OFFLINE ?= 1

.DEFAULT_GOAL := help
.PHONY: help install browser demo collapse-demo report-screenshot test test-all lint format bench bench-watermark clean

help: ## Show the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PIP) install -q $(TORCH_INDEX) $(TORCH_SPEC)
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[clip,watermark,demo,dev,ray,cloud]'
	@touch $@

browser: ## Install Debian's headless Chromium (report screenshots and browser tests)
	@command -v chromium >/dev/null || { \
		command -v apt-get >/dev/null || { echo "install chromium with your package manager"; exit 2; }; \
		apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }
	@command -v chromium >/dev/null && echo "chromium: $$(command -v chromium)"

install: $(STAMP) browser ## Create .venv and install datagate with its test and demo tools, and Chromium

demo: $(STAMP) ## Build example shards, scan them, enforce the default and a trusted-sources policy, top up from a reserve
	$(PY) examples/make_demo_shards.py examples/shards --reserve examples/reserve
	cd examples && $(DATAGATE) scan ./shards
	@echo; echo "== datagate enforce --min-human 0.7 (default policy: unknown origin counts as not human)"
	cd examples && { $(DATAGATE) enforce --min-human 0.7; rc=$$?; \
		echo "exit code $$rc (1 = gate failed: too few kept images carry evidence of human origin)"; \
		test $$rc -le 1; }
	@echo; echo "== datagate enforce --rules trusted-sources.yaml (unknown origin counted as human)"
	cd examples && $(DATAGATE) enforce --rules trusted-sources.yaml --out datagate-out/trusted
	@echo; echo "== datagate enforce --min-human 0.7 --reserve (top up from human-declared reserve photographs)"
	cd examples && $(DATAGATE) scan ./reserve --out datagate-out/reserve-scan --quiet
	cd examples && $(DATAGATE) enforce --min-human 0.7 --reserve datagate-out/reserve-scan --out datagate-out/topped-up
	@echo; echo "Reports: examples/datagate-out/report.{md,html,json}, examples/datagate-out/trusted/, examples/datagate-out/topped-up/"

collapse-demo: $(STAMP) ## Model collapse: a model retrained on its own samples, every generation scanned and gated (~2.5 min)
	$(PY) examples/collapse/run.py --out examples/collapse/out
	@echo; echo "Summary: examples/collapse/out/collapse.{md,html,png}; write-up: docs/collapse.md"

REPORT ?= examples/datagate-out/report.html
report-screenshot: browser ## PNG of the demo's report.html in headless Chromium (run `make demo` first)
	@test -f $(REPORT) || { echo "no $(REPORT): run 'make demo' first"; exit 2; }
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
		--disable-background-networking --disable-component-update --disable-sync \
		--user-data-dir=$$(mktemp -d) --hide-scrollbars --window-size=1280,2400 \
		--screenshot=$(REPORT:.html=.png) file://$(abspath $(REPORT)) 2>/dev/null
	@echo "screenshot: $(REPORT:.html=.png)"

test: $(STAMP) browser ## Run the test suite (fast; no network, no GPU)
	$(PY) -m pytest -q

test-all: $(STAMP) browser ## Run every test, slow ones included
	$(PY) -m pytest -q -m "slow or not slow"

lint: $(STAMP) ## ruff check, ruff format --check, mypy --strict
	$(VENV)/bin/ruff check datagate tests examples benchmarks
	$(VENV)/bin/ruff format --check datagate tests examples benchmarks
	$(VENV)/bin/mypy

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix datagate tests examples benchmarks
	$(VENV)/bin/ruff format datagate tests examples benchmarks

$(BENCH_STAMP): $(STAMP)
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[bench]'
	@touch $@

BENCH_IMAGES ?= 20000
bench: $(BENCH_STAMP) ## Scan, near-duplicate, enforce at 1M rows, pre-commit, diversity, embedding and Ray benchmarks (~70 min)
	$(PY) benchmarks/bench_scan.py --images $(BENCH_IMAGES) --scale 200000
	$(PY) benchmarks/bench_scan.py --images 3000 --speed --repeat 2
	$(PY) benchmarks/bench_neardup.py --hashes 1000000
	$(PY) benchmarks/bench_enforce.py --rows 200000 1000000
	$(PY) benchmarks/bench_precommit.py --images 10000
	$(PY) benchmarks/bench_diversity.py
	$(PY) benchmarks/bench_reference.py
	$(PY) benchmarks/bench_embed.py --models tiny ViT-B-32:random --images 2000
	$(PY) benchmarks/bench_detect.py
	$(PY) benchmarks/bench_ray.py --images $(BENCH_IMAGES)
	$(PY) benchmarks/bench_gate_ray.py --rows 1000000 10000000 --kmeans-max 1000000

bench-watermark: $(BENCH_STAMP) ## Watermark false positives on real photographs and survival of re-encoding (~8 min)
	$(PY) benchmarks/bench_watermark.py

clean: ## Remove generated data and outputs (keeps .venv)
	rm -rf examples/shards examples/reserve examples/datagate-out examples/collapse/out datagate-out \
		benchmarks/out .pytest_cache
