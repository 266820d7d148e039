# FactoryHub on one machine. Run as root.
#   make up [SITE=path/to/site.yaml]   Slurm + demo users + hub on http://127.0.0.1:8000
#   make down | make status | make test | make lint | make images | make chart-schema
#   make lock [UPGRADE=1]              recompile requirements/local.lock and test.lock (uv)
VENV ?= /opt/factoryhub/venv
SITE ?=
PYTHON := $(VENV)/bin/python
LOCAL := $(VENV)/bin/factoryhub-local
ARTIFACTS := test-artifacts

export FACTORYHUB_VENV := $(VENV)
export FACTORYHUB_REPO := $(CURDIR)

.PHONY: install install-test lock up down status lint test test-fresh bench images chart-schema

# make up installs requirements/local.lock; make test (install-test) requirements/test.lock.
install:
	bash local/install.sh

# The locks, from pyproject.toml and requirements/*.in, with a pinned uv in a temporary venv.
lock:
	/usr/bin/python3 local/lock.py $(if $(UPGRADE),--upgrade)

up: install
	$(if $(SITE),FACTORYHUB_SITE_FILE="$(abspath $(SITE))") $(LOCAL) up

down:
	$(LOCAL) down

status:
	$(LOCAL) status

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

install-test:
	bash local/install.sh --test

test: install-test lint
	$(LOCAL) slurm-up
	mkdir -p $(ARTIFACTS)
	$(PYTHON) -m pytest tests -p no:cacheprovider --junitxml=$(ARTIFACTS)/junit.xml

# `make up` from nothing in a clean Debian 12 container (tests/fresh; also part of `make test`).
test-fresh: install-test
	mkdir -p $(ARTIFACTS)
	$(PYTHON) -m pytest tests/fresh -m fresh -p no:cacheprovider

images: install-test
	$(PYTHON) images/build.py

bench:
	$(PYTHON) benchmarks/spawn_latency.py

# helm/factoryhub/values.schema.json from helm/chart-values.schema.json + hub/site/schema.json.
chart-schema:
	$(PYTHON) local/chart_schema.py
