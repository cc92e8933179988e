# The commands users run are `make up`, `make check` and `make test`; the rest are their steps.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= lab
export PULUMI_SKIP_UPDATE_CHECK := true
export PULUMI_BACKEND_URL ?= file://$(CURDIR)/.pulumi-state

PY_PATHS := service infra shield_client harness tests $(wildcard bench)

.PHONY: up check test deps venv lint lock lightrag format lab-up lab-down lab-status toolchain bench bench-deploy bench-scale clean

up: deps venv toolchain lab-up  ## set up everything, deploy to the lab stack (STACK=lab-ha: the HA lab), print the outputs
	scripts/deploy-lab $(STACK)

check: venv lint  ## the fast tier, no root, apt or lab: lint, and the tests that need only redis-server on PATH
	scripts/check

test: deps venv lint lightrag  ## every test: service, infra, faults, and the lab
	scripts/run-tests

lightrag:  ## LightRAG Server in .venv-lightrag, for the lightrag handler's tests
	scripts/install-lightrag

deps:
	scripts/install-deps

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt service/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

lint: venv
	$(VENV)/bin/ruff check $(PY_PATHS)
	$(VENV)/bin/ruff format --check $(PY_PATHS)
	$(VENV)/bin/mypy

lock: venv  ## pin service/requirements.txt and all it pulls in, with hashes, in service/requirements.lock
	scripts/lock-requirements

format: venv
	$(VENV)/bin/ruff format $(PY_PATHS)
	$(VENV)/bin/ruff check --fix $(PY_PATHS)

toolchain:
	scripts/pulumi-toolchain check

lab-up:
	scripts/lab up

lab-down:
	scripts/lab down

lab-status:
	scripts/lab status

bench: deps venv toolchain lab-up  ## every benchmark side by side, with the pinned peers; writes bench/results/
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(PY) -m bench.peers.install
	PULUMI_BIN_DIR="$$(scripts/pulumi-toolchain)" $(PY) -m bench

bench-deploy: deps venv toolchain lab-up  ## only the deploy timings, merged into bench/results/
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	PULUMI_BIN_DIR="$$(scripts/pulumi-toolchain)" $(PY) -m bench --deploy-only

bench-scale: deps venv  ## only the scale-out measurements (1 vs 2 API processes, WAIT 1), merged into bench/results/
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(PY) -m bench --scale-only

clean:
	rm -rf build .pulumi-state
