# The two commands of the README: `make demo` and `make test`. Each creates the
# virtualenv in .venv and installs what it needs on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test tools lint unit integration bench bench-l7 clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("trilb needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trilb demo

test: lint tools
	$(BIN)/pytest -q

# Real clients the tests drive besides Python's (Debian/Ubuntu package names).
tools:
	@command -v curl >/dev/null || { echo "installing curl for the tests"; \
		apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
	@command -v nghttp >/dev/null && command -v h2load >/dev/null || { \
		echo "installing nghttp2-client (nghttp, h2load) for the tests"; \
		apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null; }
	@command -v chromium >/dev/null || { echo "installing chromium for the browser test"; \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	@PATH="$$PATH:/usr/sbin" command -v haproxy >/dev/null && PATH="$$PATH:/usr/sbin" command -v nginx >/dev/null || { \
		echo "installing haproxy and nginx for the PROXY protocol interop tests"; \
		apt-get update -qq && apt-get install -y -qq haproxy nginx >/dev/null; }
	@command -v dig >/dev/null || { echo "installing dig (bind9-dnsutils) for the UDP test"; \
		apt-get update -qq && apt-get install -y -qq bind9-dnsutils >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -m 'not slow'

integration: $(STAMP)
	$(BIN)/pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python loadtests/bench_l4.py

bench-l7: $(STAMP)
	$(BIN)/python loadtests/bench_l7.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
