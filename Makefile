# The index of everything a person does with kube-job: `make help` lists it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.DEFAULT_GOAL := help
.PHONY: help install lint rabbitmq postgres browser prometheus perftest demo test test-unit bench profile images clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(PY): requirements-dev.txt producer/requirements.txt worker/requirements.txt scaler/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $(PY)

install: $(PY) ## Create .venv with the services' and the tests' requirements

rabbitmq: ## Start a local RabbitMQ with the management UI (installs Debian's package if needed)
	bash scripts/rabbitmq.sh

postgres: ## Start a local PostgreSQL with the role and database kubejob (installs Debian's package if needed)
	bash scripts/postgres.sh

browser: ## Install Debian's chromium and chromium-driver if missing (the browser test of the page)
	bash scripts/browser.sh

prometheus: ## Install Debian's prometheus server if missing (the end-to-end test that scrapes the services)
	bash scripts/prometheus.sh

perftest: install ## Install Debian's Maven and Java if missing, fetch RabbitMQ PerfTest (the benches' yardstick)
	bash scripts/perftest.sh
	$(PY) -m bench.perftest

demo: install rabbitmq postgres ## Run the whole job locally: generate a CSV, upload it, drain it with a worker
	bash scripts/demo.sh

test: install lint rabbitmq postgres browser prometheus cluster ## Lint, then the whole test suite against real RabbitMQ, PostgreSQL, Kubernetes, Chromium and Prometheus
	$(PY) -m pytest

lint: install ## ruff (pyproject's rule set) over everything, mypy over the services
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test-unit: install ## Run only the unit tests (no services needed)
	$(PY) -m pytest tests/unit

bench: install rabbitmq postgres cluster perftest ## Run the benchmarks (not part of make test); figures in bench/results.json
	$(PY) -m bench

profile: install rabbitmq postgres ## Profile one worker draining 100k rows with py-spy (flame graph in /tmp, see bench/profile_drain.py)
	$(PY) -m bench.profile_drain

images: ## Build the three images with Docker (here: on a debootstrapped base; minikube: run minikube docker-env first)
	infra/local-cluster/images.sh services

clean: ## Remove .venv, .run and caches kept in the repo
	rm -rf $(VENV) .run .pytest_cache .hypothesis

# The local one-node Kubernetes of infra/local-cluster (built from source, run in a network namespace).
.PHONY: cluster up down
LOCAL_CLUSTER := PYTHONPATH=infra/local-cluster $(PY)

cluster: ## Build Kubernetes (control plane, kubelet, kube-proxy, kubectl), containerd and CoreDNS (first time: minutes)
	infra/local-cluster/build.sh

up: install cluster ## Build the images, start a one-node Kubernetes in netns kube-job, apply infra/k8s (as root)
	$(LOCAL_CLUSTER) -m localcluster.stack up

down: ## Stop what `make up` started and take back what it changed on the host
	$(LOCAL_CLUSTER) -m localcluster.stack down
