# voicebridge: every target installs what it needs first, so a fresh clone works with one command.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := redis-server sip-tester espeak-ng sox debootstrap tcpdump
PYTEST_ARGS ?=

.PHONY: install system-deps test test-fast lint types check demo bench asterisk-up asterisk-down clean

install: system-deps $(VENV)/.installed

# Debian packages the tests and the demo use (Redis, sipp, espeak-ng, sox, debootstrap, tcpdump).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@# testkit/ (fakes, stand-ins, demo harness) is not in the product's wheel: put the checkout on
	@# the venv's path so `voicebridge serve --standins` and `voicebridge demo` find it.
	echo "$(CURDIR)" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/voicebridge-checkout.pth
	touch $@

# The whole suite: unit, virtual-time, real sockets, real Redis, and real Asterisk + sipp calls.
# Pytest's exit code 5 (nothing collected) is reported as a failure, never as success.
test: install asterisk-up
	@set +e; PYTHONASYNCIODEBUG=1 $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# Everything except the tests that need the real Asterisk.
test-fast: install
	@set +e; $(PY) -m pytest -m "not asterisk" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# ruff, and the floor plan's import rules (pyproject's [tool.importlinter]).
lint: install
	$(VENV)/bin/ruff check bridge orchestrator testkit tests bench
	$(VENV)/bin/ruff format --check bridge orchestrator testkit tests bench
	$(VENV)/bin/lint-imports

types: install
	$(VENV)/bin/mypy bridge orchestrator testkit

check: lint types test

asterisk-up: install
	bash asterisk_conf/asterisk.sh up

asterisk-down:
	bash asterisk_conf/asterisk.sh down

demo: install asterisk-up
	$(PY) -m bridge.cli demo

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
