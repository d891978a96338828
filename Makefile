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

.PHONY: install install-test demo test test-celery lint format bench bench-uvr bench-apollo bench-scnet bench-worker bench-pipeline bench-service bench-scaleout requirements runtime size test-dist clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[quantized,service,openvino]"
	touch $@

# The web page's browser tests (tests/test_web_page.py) drive Debian's chromium, installed
# here when absent; Playwright never downloads a browser of its own.
CHROMIUM_PACKAGES := chromium chromium-driver

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps $(REFERENCES)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CHROMIUM_PACKAGES); }
	@# The Celery backend's tests start a real redis-server (Debian's package).
	@command -v redis-server >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(PIP) install -q -e ".[bench]"
	touch $@

demo: install
	$(PY) -m dsu.demo

lint: install-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: install-test
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

test: lint
	$(PY) -m pytest --durations=15
	node --test clients/node/test/

# Each bench leaves bench/out/<name>.json; report.py renders bench/results.md and .png.
bench: $(VENV)/.installed-bench
	$(PY) bench/bench_demucs.py --skip-hour
	$(PY) bench/bench_roformer.py
	$(PY) bench/bench_long.py
	$(PY) bench/bench_precision.py
	$(PY) bench/report.py

bench-uvr: install-test
	$(PY) bench/bench_mdx.py
	$(PY) bench/bench_vr.py

bench-apollo: install-test
	$(PY) bench/bench_apollo.py

bench-scnet: install-test
	$(PY) bench/bench_scnet.py

bench-worker: install-test
	$(PY) bench/bench_worker.py

bench-pipeline: install-test
	$(PY) bench/bench_pipeline.py

bench-service: install-test
	$(PY) bench/bench_service.py

bench-scaleout: install-test
	$(PY) bench/bench_scaleout.py

# Every service test again with each server on the Celery backend (Redis + a worker).
test-celery: install-test
	$(PY) -m pytest tests/test_service_*.py --service-queue celery

# Per-platform pins (requirements/*.txt) from pyproject.toml; needs PyPI.
requirements: install-test
	$(PY) packaging/requirements.py --torch "$(TORCH)"

# The one-folder runtime dist/dsu (packaging/dsu.spec), built in an environment of its
# own so that the bundle carries the runtime's dependencies and none of the test tools.
RUNTIME_VENV := build/runtime/venv
RUNTIME_PY   := $(RUNTIME_VENV)/bin/python

$(RUNTIME_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(RUNTIME_PY) -m pip install -q "$(TORCH)"
	$(RUNTIME_PY) -m pip install -q -e ".[quantized,onnx,service,bundle]"
	touch $@

runtime: $(RUNTIME_VENV)/.installed
	$(RUNTIME_PY) -m PyInstaller --noconfirm --log-level WARN --distpath dist \
		--workpath build/runtime/work packaging/dsu.spec

# The shared runtime against one bundle per family (minutes each: PyInstaller and torch).
size: runtime
	$(RUNTIME_PY) packaging/size.py

# Not part of `make test`: the frozen launchers through the worker and Node client tests.
test-dist: runtime install-test
	DSU_RUNTIME=$(CURDIR)/dist/dsu $(PY) -m pytest tests/test_frozen_runtime.py \
		tests/test_worker_protocol.py tests/test_worker_seed.py tests/test_launcher_families.py
	DSU_RUNTIME=$(CURDIR)/dist/dsu node --test clients/node/test/

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache separated demo-out
