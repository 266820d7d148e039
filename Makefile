# FactoryHub on one machine. Run as root.
#   make up [SITE=path/to/site.yaml]   Slurm + demo users + hub on http://127.0.0.1:8000
#   make down | make status | make test | make lint | make images | make chart-schema
#   make unit                          unit and chart tests of the working tree: no root, no
#                                      Slurm, no install, seconds
#   make lint                          ruff (check, format) and mypy (make typecheck)
#   make kube-up / kube-down           the Helm chart's pods (podman kube play) on this Slurm
#   make cluster-up / cluster-down     a multi-node Slurm, compute nodes in podman containers
#   make lock [UPGRADE=1]              recompile requirements/local.lock and test.lock (uv)
VENV ?= /opt/factoryhub/venv
SITE ?=
PYTHON := $(VENV)/bin/python
LOCAL := $(VENV)/bin/factoryhub-local
ARTIFACTS := test-artifacts

export FACTORYHUB_VENV := $(VENV)
export FACTORYHUB_REPO := $(CURDIR)

.PHONY: install install-test lock up down status lint typecheck unit src-links test test-fresh \
	bench images chart-schema kube-up kube-down cluster-up cluster-down

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
	$(MAKE) --no-print-directory typecheck

# The working tree under its installed names, as links: build/src/factoryhub/hub is hub/, ...
# (pyproject.toml's package-dir, and local/pyproject.toml's for local/). `make unit` imports
# it and mypy checks it, so neither needs factoryhub reinstalled.
SRC_LINKS := build/src/factoryhub
PACKAGE_FOLDERS := hub spawners helpers notebooks local
src-links:
	@mkdir -p $(SRC_LINKS)
	@for folder in $(PACKAGE_FOLDERS); do ln -sfn ../../../$$folder $(SRC_LINKS)/$$folder; done

# mypy with pyproject.toml's [tool.mypy] (it checks build/src/factoryhub).
typecheck: src-links
	$(VENV)/bin/mypy

# The tests that need no root, no Slurm, no IdP and no network (tests/unit and tests/chart's
# offline helm renders; those marked slurm are left out), against the working tree, spread
# over the cores (pytest-xdist; UNIT_WORKERS=0 runs them in this one process).
UNIT_WORKERS ?= auto
unit: src-links
	PYTHONPATH="$(CURDIR)/build/src" $(PYTHON) -m pytest tests/unit tests/chart -m "not slurm and not process" \
		-n $(UNIT_WORKERS) -p no:cacheprovider -q

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

# The Helm chart's hub and proxy pods with podman kube play, against this machine's Slurm
# (factoryhub.local.kube_tryout); http://10.89.77.11:8000.
kube-up: install-test
	$(LOCAL) kube-up

kube-down:
	$(LOCAL) kube-down

# A multi-node Slurm: compute nodes as podman containers (factoryhub.local.multinode), its
# slurmctld on this host; SLURM_CONF=/var/lib/factoryhub/multinode/etc/slurm.conf uses it.
cluster-up: install-test
	$(LOCAL) cluster-up

cluster-down:
	$(LOCAL) cluster-down

images: install-test
	$(PYTHON) images/build.py

bench:
	$(PYTHON) benchmarks/spawn_latency.py

# helm/factoryhub/values.schema.json from helm/chart-values.schema.json + hub/site/schema.json.
chart-schema:
	$(PYTHON) local/chart_schema.py
