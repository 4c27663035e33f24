# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501

.PHONY: run test test-quick setup demo bench clean-venv

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# CPU machines take the CPU build of torch that lies on disk; GPU machines take a CUDA build.
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet "torch>=2.4"; \
	else \
		$(PY) -m pip install --quiet torch==2.13.0; \
	fi
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	./scripts/fetch_js.sh
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/trojanscope demo

run: demo
	$(VENV)/bin/streamlit run app.py --server.port $(PORT)

test: setup
	./scripts/install_chromium.sh
	@# the package's layers (pyproject.toml [tool.importlinter]): no module imports from a layer above its own
	cd src && ../$(VENV)/bin/lint-imports --no-cache --config ../pyproject.toml
	$(PY) -m pytest -q

test-quick: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) benchmarks/demo_pair.py
	$(PY) benchmarks/throughput.py

clean-venv:
	rm -rf $(VENV)
