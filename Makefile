# voicebridge: every target installs what it needs first, so a fresh clone works with one command.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := redis-server sip-tester espeak-ng sox debootstrap tcpdump podman runc curl iproute2 kamailio libc++1 festival festvox-ru
PYTEST_ARGS ?=
# asterisk.sh mode for `make demo`: auto (a container if an engine answers), chroot or container.
DEMO_ASTERISK ?= auto
# `make images/containers-up` with the SpeechKit/OpenAI stand-ins (0: real providers from .env).
STANDINS ?= 1

.PHONY: install system-deps test test-fast lint types check demo bench asterisk-up asterisk-down \
	images containers-up containers-down cluster-up cluster-down cluster-test-long soak clean

install: system-deps $(VENV)/.installed

# Debian packages the tests and the demo use (Redis, sipp, espeak-ng, festival with festvox-ru,
# sox, debootstrap, tcpdump; Podman with runc for the containers).
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

# Asterisk in a container when Docker or Podman answers (and the chroot Asterisk is not already
# running), else in the chroot; the bridge runs in this process so the demo can print the dialogue.
demo: install
	VOICEBRIDGE_ASTERISK=$(DEMO_ASTERISK) bash asterisk_conf/asterisk.sh up
	VOICEBRIDGE_ASTERISK=$(DEMO_ASTERISK) $(PY) -m bridge.cli demo

# The images of docker-compose.yml, with Podman, from local debootstrap base images (docker/).
images: install
	VOICEBRIDGE_STANDINS=$(STANDINS) bash docker/containers.sh build

# The whole stack in containers on the host's loopback (stop a chroot Asterisk first: same ports).
containers-up: images
	VOICEBRIDGE_STANDINS=$(STANDINS) bash docker/containers.sh compose up -d --no-build

# -t 90: the bridge drains on SIGTERM (see stop_grace_period in docker-compose.yml); less cuts calls.
containers-down:
	VOICEBRIDGE_STANDINS=$(STANDINS) bash docker/containers.sh compose down -t 90

# The cluster on this machine (cluster/cluster.sh): Kamailio + NODES x (Asterisk + voicebridge
# --standins) + Redis on 127.0.77.x; the chroot Asterisk binary comes from asterisk-up.
NODES ?= 2
cluster-up: install asterisk-up
	PYTHON=$(abspath $(PY)) bash cluster/cluster.sh up $(NODES)

cluster-down:
	bash cluster/cluster.sh down

# The long cluster run (drain, then an Asterisk SIGKILLed and restarted); prints its table.
cluster-test-long: install asterisk-up
	CLUSTER_LONG=1 $(PY) -m pytest -m cluster -s -p no:cacheprovider tests/e2e/test_cluster.py $(PYTEST_ARGS)

bench: install
	$(PY) -m bench

# The soak with random faults (bench/soak.py; not part of `make test`): SOAK_CALLS calls at a time
# for SOAK_MINUTES while Redis, the stand-ins and the ARI websocket are killed, frozen, restarted.
SOAK_MINUTES ?= 10
SOAK_CALLS ?= 6
soak: install
	$(PY) -m bench.soak --minutes $(SOAK_MINUTES) --calls $(SOAK_CALLS) --json soak.json --log soak.log

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
