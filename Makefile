# yolo-operator developer commands. `make test` and `make demo` set up everything they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY_VERSION ?= 3.11
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
export YOLO_CONFIG_DIR ?= $(CURDIR)/.venv/ultralytics-config

.PHONY: help venv go-cache-trim binaries olm-validate olmv1 kueue coredns previous-release testbed-up testbed-down lint unit test fault demo crds manifests bundle bundle-validate bundle-build bundle-push catalog catalog-build catalog-push chart-lint images console-plugin console-plugin-test console-plugin-image bench gpu-check clean

# OLM bundles for your registry (operator-sdk's conventions). IMG and TRAINER_IMG empty: the chart's default images
# and the committed bundle/; set: a bundle of those images in BUNDLE_DIR, pinned by the digests their registry
# serves (skopeo inspect; PIN=0 keeps tags; REGISTRY_TLS_VERIFY=false for a plain-HTTP registry such as the bed's).
# VERSION: the bundle's version (default the chart's appVersion); BUNDLE_VALUES: helm values files the chart is
# rendered with, so the bundle carries those settings. A catalog already in CATALOG_DIR grows by one bundle.
VERSION ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' charts/yolo-operator/Chart.yaml)
IMAGE_TAG_BASE ?= ghcr.io/yolo-operator/yolo-operator
IMG ?=
TRAINER_IMG ?=
CONSOLE_PLUGIN_IMG ?=
BUNDLE_VALUES ?=
BUNDLE_ARGS = --version $(VERSION) $(foreach f,$(BUNDLE_VALUES),--values $(f))
PIN ?= 1
REGISTRY_TLS_VERIFY ?= true
BUNDLE_IMG ?= $(IMAGE_TAG_BASE)-bundle:v$(VERSION)
CATALOG_IMG ?= $(IMAGE_TAG_BASE)-catalog:v$(VERSION)
BUNDLE_DIR ?= $(if $(IMG)$(TRAINER_IMG)$(CONSOLE_PLUGIN_IMG),build/bundle,bundle)
CATALOG_DIR ?= build/catalog
# The container engine: hack/images.sh's dockerd (docker build, push); CONTAINER_TOOL=podman works the same.
CONTAINER_TOOL ?= hack/images.sh docker

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# The venv is rebuilt when the lock changes; pip's wheel cache (~/.cache/pip) makes that fast.
$(VENV)/.installed: requirements.lock dev/requirements.lock pyproject.toml dev/pyproject.toml
	@command -v python$(PY_VERSION) >/dev/null || { echo "python$(PY_VERSION) is required"; exit 1; }
	test -x $(PY) || python$(PY_VERSION) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip==25.3"
	$(PY) -m pip install -q -r requirements.lock -r dev/requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip install -q --no-deps -e dev  # the test bed, Kueue and stack helpers (yolo_dev)
	touch $@

venv: $(VENV)/.installed ## Python environment (pinned in requirements.lock)

binaries: ## build the control plane, kwok and helm from pinned Go modules (cached in ~/.cache/yolo-operator)
	hack/build-binaries.sh >/dev/null

olm-validate: ## build OLM's bundle validators (hack/olm-validate, pinned operator-framework/api) into ~/.cache/yolo-operator
	hack/build-olm-validate.sh >/dev/null

olmv1: venv ## build OLM v1's operator-controller and catalogd (v1.2.0, hack/build-olmv1.sh) into ~/.cache/yolo-operator for tests/e2e/test_olm_install.py, and fetch the CRDs it installs
	hack/build-olmv1.sh >/dev/null
	$(PY) -c "from yolo_dev import olm; olm.crd_files()"  # the console's and ServiceMonitor's modules, into Go's cache

kueue: ## build Kueue's manager (sigs.k8s.io/kueue v0.17.0, hack/build-kueue.sh) into ~/.cache/yolo-operator for tests/integration/test_kueue.py
	hack/build-kueue.sh >/dev/null

previous-release: images ## the release tests/e2e/test_upgrade.py upgrades from (PREVIOUS_RELEASE): its chart and operator image, cached per commit
	hack/previous-release.sh build >/dev/null


coredns: ## build the bed's cluster DNS (a minimal CoreDNS v1.15.0, hack/coredns) into ~/.cache/yolo-operator
	hack/build-coredns.sh >/dev/null

# Its prerequisites build side by side under `make -j` (make test), the Go builds among them.
testbed-up: venv binaries images coredns ## start the local control plane, kwok GPU nodes, the real node, S3 and cluster DNS (.testbed/)
	hack/testbed.sh up

testbed-down: ## stop the local test bed and remove .testbed/
	hack/testbed.sh down

lint: venv ## ruff
	$(VENV)/bin/ruff check contract operator trainer tests bench hack dev

unit: venv ## unit tests only (no servers)
	$(VENV)/bin/pytest -m unit -q $(PYTEST_ARGS)

test: ## everything: lint, unit, integration and e2e tests on the local test bed
	@# The Go builds (control plane, OLM validators) and the image builds overlap: a first run's longest steps.
	$(MAKE) -j3 testbed-up lint olm-validate kueue olmv1 console-plugin-test
	$(MAKE) go-cache-trim
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

go-cache-trim: ## remove the Go builds' intermediate objects (~8 GB; hack/go-env.sh): the built binaries are cached by version
	source hack/go-env.sh && rm -rf "$$GOCACHE"

fault: testbed-up ## the fault, bad-input and security suite alone (tests/fault/, marker fault); prints FAULT-FIGURE lines
	mkdir -p .testbed && set -o pipefail && $(VENV)/bin/pytest -m fault -q -s -p no:cacheprovider $(PYTEST_ARGS) 2>&1 \
	  | tee .testbed/fault.log | grep --line-buffered -E 'FAULT-FIGURE|passed|failed|error'

demo: testbed-up ## the whole product end to end on the local test bed: chart, operator, a TrainingJob trained live
	$(PY) hack/demo.py

crds: venv binaries ## regenerate the CRD (manifests/, charts/), docs/reference.md, the chart README, manifests/ and bundle/ from the models
	$(PY) -m yolo_operator.gen.crd --write
	$(PY) -m yolo_operator.gen.reference --write
	$(PY) -m yolo_operator.gen.chart_readme --write
	hack/gen-manifests.sh
	$(PY) -m yolo_operator.gen.bundle --write

bundle: venv binaries ## regenerate the OLM bundle (bundle/) from the chart, the CRD and examples/; IMG=... TRAINER_IMG=...: your images' bundle in build/bundle/
ifeq ($(IMG)$(TRAINER_IMG)$(CONSOLE_PLUGIN_IMG),)
	$(PY) -m yolo_operator.gen.chart_readme --write
	$(PY) -m yolo_operator.gen.bundle --write
else
	$(PY) -m yolo_operator.gen.bundle --write --out $(BUNDLE_DIR) $(if $(IMG),--operator-image $(IMG)) \
	  $(if $(TRAINER_IMG),--trainer-image $(TRAINER_IMG)) $(if $(CONSOLE_PLUGIN_IMG),--console-plugin-image $(CONSOLE_PLUGIN_IMG)) \
	  $(if $(filter 1,$(PIN)),--resolve-digests) \
	  --tls-verify $(REGISTRY_TLS_VERIFY) $(BUNDLE_ARGS)
endif

bundle-build: ## the bundle image BUNDLE_IMG from BUNDLE_DIR (make bundle first)
	$(CONTAINER_TOOL) build -f $(BUNDLE_DIR)/bundle.Dockerfile -t $(BUNDLE_IMG) $(BUNDLE_DIR)

bundle-push: ## push BUNDLE_IMG
	$(CONTAINER_TOOL) push $(BUNDLE_IMG)

catalog: venv binaries ## a file-based catalog (CATALOG_DIR) of the bundle BUNDLE_IMG with IMG/TRAINER_IMG, pinned by digest (push the bundle first)
	$(PY) -m yolo_operator.gen.bundle --catalog $(CATALOG_DIR) --bundle-image $(BUNDLE_IMG) \
	  $(if $(IMG),--operator-image $(IMG)) $(if $(TRAINER_IMG),--trainer-image $(TRAINER_IMG)) \
	  $(if $(filter 1,$(PIN)),--resolve-digests) --tls-verify $(REGISTRY_TLS_VERIFY) $(BUNDLE_ARGS)

catalog-build: ## the catalog image CATALOG_IMG from CATALOG_DIR (make catalog first)
	$(CONTAINER_TOOL) build $(CATALOG_BUILD_ARGS) -t $(CATALOG_IMG) $(CATALOG_DIR)

catalog-push: ## push CATALOG_IMG
	$(CONTAINER_TOOL) push $(CATALOG_IMG)

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

console-plugin: ## build the console plugin (console-plugin/, webpack) into console-plugin/dist; node_modules cached per lock hash in ~/.cache/yolo-operator
	hack/console-plugin.sh build >/dev/null

console-plugin-test: console-plugin ## the console plugin's type check and jest tests (the SDK mocked); installs the chromium tests/e2e/test_console_plugin.py drives
	hack/console-plugin.sh test
	hack/console-plugin.sh browser >/dev/null

console-plugin-image: venv ## the console plugin's image (the Dockerfile's console-plugin target: dist/ served over TLS by serve.py)
	hack/images.sh console-plugin

images: venv ## build the operator and trainer images (hack/images.sh; tags = the chart's defaults); pushed to the bed's registry when it runs
	hack/images.sh build
	hack/images.sh push-bed

clean: testbed-down
	rm -rf $(VENV) .pytest_cache .ruff_cache
