# mxpush - run `make help` for the targets.
# Needs only Python 3.11+ and make: every tool is installed into .venv by the first target.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.installed
# checkov pins an old boto3/botocore, so it gets a venv of its own like sam.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
# A real Synapse for `make e2e`, in its own venv (its pins are not ours).
SYNAPSE_VENV := .venv-synapse
SYNAPSE_REQUIREMENTS := tests/e2e/requirements-synapse.txt
SYNAPSE_STAMP := $(SYNAPSE_VENV)/.installed
# Extra pytest arguments for `make e2e`, e.g. E2E_ARGS="-k latency".
E2E_ARGS ?=
# Arguments for `make load`, e.g. LOAD_ARGS="--seed 2 --notifications 2000".
LOAD_ARGS ?=

export PYTHONPATH := $(CURDIR)/layers/mxpush:$(CURDIR)/local
# sam build needs the Lambda runtime's Python (3.13) on PATH; pyenv machines have it this way.
SAM_PYENV := PYENV_VERSION=3.13.0:3.12.1:3.11.7

.PHONY: help venv run receiver test lint checkov typecheck pytest fuzz bench load validate rie build deploy destroy not-ci e2e clean

help:
	@echo "make run       - run the whole gateway on http://127.0.0.1:3000 (local mode)"
	@echo "make receiver  - a stand-in push backend on http://127.0.0.1:3001 that prints each push"
	@echo "make test      - lint, type-check and run the tests"
	@echo "make fuzz      - the fuzz battery at 10x (>= 20,000 hostile requests, random seeds)"
	@echo "make bench     - benchmarks (cold-start imports, notify path)"
	@echo "make checkov   - checkov on template.yaml (offline; part of make test)"
	@echo "make load      - load test with backend faults and an exactly-once audit (LOAD_ARGS=...)"
	@echo "make validate  - sam validate --lint (template)"
	@echo "make rie       - every events/ sample through the Lambda runtime emulator (sam local invoke, without Docker)"
	@echo "make build     - sam build (arm64, python3.13)"
	@echo "make deploy    - build and deploy to AWS (first time: guided), create the SSM secrets, print the URLs"
	@echo "make destroy   - delete the stack (the table and the SSM secrets are kept)"
	@echo "make e2e       - a real Synapse drives local mode (installs it into .venv-synapse)"

$(STAMP): requirements-dev.txt layers/mxpush/requirements.txt layers/crypto/requirements.txt layers/crypto/requirements-pure.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m mxpush_local

receiver: $(STAMP)
	$(PY) -m mxpush_local.receiver

test: lint typecheck pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/cfn-lint template.yaml
	$(MAKE) --no-print-directory checkov

$(CHECKOV_STAMP): requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@touch $(CHECKOV_STAMP)

# Offline: no Bridgecrew platform, no download of extra policies. A check that does not fit is
# skipped on its resource (Metadata: checkov: skip) with the reason beside it.
checkov: $(CHECKOV_STAMP)
	BC_SKIP_MAPPING=TRUE $(CHECKOV_VENV)/bin/checkov -f template.yaml --framework cloudformation \
		--quiet --compact --skip-download

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(VENV)/bin/pytest -n 2

# `make test` runs tests/fuzz derandomized at 1x; this explores with fresh random examples.
# A failure is kept in .hypothesis/ and replayed first by the next run.
fuzz: $(STAMP)
	MXPUSH_FUZZ_SCALE=10 $(VENV)/bin/pytest tests/fuzz -n 2

bench: $(STAMP)
	$(PY) bench/run.py

load: $(STAMP)
	$(PY) -m tests.load $(LOAD_ARGS)

$(SAM_STAMP): requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-sam.txt
	@touch $(SAM_STAMP)

validate: $(SAM_STAMP)
	AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 $(SAM) validate --lint

# What `sam local invoke` runs in its container, without Docker: .venv-sam's aws-sam-cli ships the
# Runtime Interface Emulator; awslambdaric (in .venv) runs each handler under it, against moto
# in server mode. Not part of `make test`: it needs .venv-sam.
rie: $(STAMP) $(SAM_STAMP)
	$(VENV)/bin/pytest tests/rie -p no:xdist

build: $(SAM_STAMP)
	$(SAM_PYENV) SAM_CLI_TELEMETRY=0 $(SAM) build

# Real AWS, with your credentials: never from CI.
not-ci:
	@if [ -n "$$CI" ]; then echo "make deploy/destroy do not run in CI"; exit 1; fi

deploy: not-ci $(STAMP) build
	SAM_CLI_TELEMETRY=0 $(PY) deploy/bootstrap.py deploy --sam $(SAM)

destroy: not-ci $(STAMP) $(SAM_STAMP)
	SAM_CLI_TELEMETRY=0 $(PY) deploy/bootstrap.py destroy --sam $(SAM)

# Rebuilt from scratch when the pins change; reused otherwise. Wheels only: no compilers needed.
$(SYNAPSE_STAMP): $(SYNAPSE_REQUIREMENTS)
	rm -rf $(SYNAPSE_VENV)
	$(PYTHON) -m venv $(SYNAPSE_VENV)
	$(SYNAPSE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		--only-binary=:all: -r $(SYNAPSE_REQUIREMENTS)
	@touch $(SYNAPSE_STAMP)

e2e: $(STAMP) $(SYNAPSE_STAMP)
	MXPUSH_E2E_SYNAPSE_PYTHON=$(CURDIR)/$(SYNAPSE_VENV)/bin/python \
		$(VENV)/bin/pytest tests/e2e -p no:xdist -v $(E2E_ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) $(SYNAPSE_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
