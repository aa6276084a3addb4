# yolo-operator developer commands. `make test` and `make demo` set up everything they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY_VERSION ?= 3.11
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
export YOLO_CONFIG_DIR ?= $(CURDIR)/.venv/ultralytics-config

.PHONY: help venv binaries olm-validate kueue testbed-up testbed-down lint unit test fault demo crds manifests bundle bundle-validate chart-lint images bench gpu-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# The venv is rebuilt when the lock changes; pip's wheel cache (~/.cache/pip) makes that fast.
$(VENV)/.installed: requirements.lock pyproject.toml
	@command -v python$(PY_VERSION) >/dev/null || { echo "python$(PY_VERSION) is required"; exit 1; }
	test -x $(PY) || python$(PY_VERSION) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip==25.3"
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed ## Python environment (pinned in requirements.lock)

binaries: ## build the control plane, kwok and helm from pinned Go modules (cached in ~/.cache/yolo-operator)
	hack/build-binaries.sh >/dev/null

olm-validate: ## build OLM's bundle validators (hack/olm-validate, pinned operator-framework/api) into ~/.cache/yolo-operator
	hack/build-olm-validate.sh >/dev/null

kueue: ## build Kueue's manager (sigs.k8s.io/kueue v0.17.0, hack/build-kueue.sh) into ~/.cache/yolo-operator for tests/integration/test_kueue.py
	hack/build-kueue.sh >/dev/null

testbed-up: venv binaries images ## start the local control plane, kwok GPU nodes, the real node and S3 (.testbed/)
	hack/testbed.sh up

testbed-down: ## stop the local test bed and remove .testbed/
	hack/testbed.sh down

lint: venv ## ruff
	$(VENV)/bin/ruff check contract operator trainer tests bench hack

unit: venv ## unit tests only (no servers)
	$(VENV)/bin/pytest -m unit -q $(PYTEST_ARGS)

test: ## everything: lint, unit, integration and e2e tests on the local test bed
	@# The Go builds (control plane, OLM validators) and the image builds overlap: a first run's longest steps.
	$(MAKE) -j3 testbed-up lint olm-validate kueue
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

fault: testbed-up ## the fault, bad-input and security suite alone (tests/fault/, marker fault); prints FAULT-FIGURE lines
	mkdir -p .testbed && set -o pipefail && $(VENV)/bin/pytest -m fault -q -s -p no:cacheprovider $(PYTEST_ARGS) 2>&1 \
	  | tee .testbed/fault.log | grep --line-buffered -E 'FAULT-FIGURE|passed|failed|error'

demo: testbed-up ## the whole product end to end on the local test bed: chart, operator, a TrainingJob trained live
	$(PY) hack/demo.py

crds: venv binaries ## regenerate the CRD (manifests/, charts/), docs/reference.md, the chart README, manifests/ and bundle/ from the models
	$(PY) -m yolo_operator.crd --write
	$(PY) -m yolo_operator.reference --write
	$(PY) -m yolo_operator.chart_readme --write
	hack/gen-manifests.sh
	$(PY) -m yolo_operator.bundle --write

bundle: venv binaries ## regenerate the chart README and the OLM bundle (bundle/) from the chart, the CRD and examples/
	$(PY) -m yolo_operator.chart_readme --write
	$(PY) -m yolo_operator.bundle --write

bundle-validate: olm-validate ## run OLM's own bundle validators (hack/olm-validate, built from the pinned operator-framework/api) on bundle/
	source hack/versions.env && "$$(hack/build-olm-validate.sh)" -k8s-version "$$(echo $${KUBE_VERSION#v} | cut -d. -f1,2)" bundle

manifests: binaries ## regenerate manifests/ (plain YAML) from the chart
	hack/gen-manifests.sh

chart-lint: binaries ## helm lint --strict
	"$$(hack/build-binaries.sh)/helm" lint --strict charts/yolo-operator

gpu-check: venv ## on a machine with CUDA GPUs: trainer vs `yolo train` on one GPU, DDP through torchrun: progress, checkpoints, every rank (one table)
	$(PY) bench/gpu.py

bench: testbed-up ## benchmarks against baselines run beside them (~50 min, see bench/run_all.py); writes bench/results.md
	$(PY) bench/run_all.py

images: venv ## build the operator and trainer images with no registry (hack/images.sh; tags = the chart's defaults)
	hack/images.sh build

clean: testbed-down
	rm -rf $(VENV) .pytest_cache .ruff_cache
