# DSU — set-up and checks. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# The CPU path pins torch: an unpinned torch may pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Reference implementations the parity tests and benches compare against, installed
# --no-deps (their own pins would replace torch); what their modules import is in [test].
REFERENCES := audio-separator==0.47.1 pymss-core==0.1.14 msst==0.1.0

.PHONY: install install-test demo test lint format bench bench-uvr bench-apollo bench-worker bench-service clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[quantized,service]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps $(REFERENCES)
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(PY) -m dsu.demo

lint: install-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: install-test
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

test: lint
	$(PY) -m pytest
	node --test clients/node/test/

bench: install-test
	$(PY) bench/bench_demucs.py
	$(PY) bench/bench_roformer.py --dsu-precisions fp32,bf16

bench-uvr: install-test
	$(PY) bench/bench_mdx.py
	$(PY) bench/bench_vr.py

bench-apollo: install-test
	$(PY) bench/bench_apollo.py

bench-worker: install-test
	$(PY) bench/bench_worker.py

bench-service: install-test
	$(PY) bench/bench_service.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache separated demo-out
