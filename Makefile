# The Hive operator's build. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

# The Go release that builds, tests and ships the project, fetched by the go command as a
# module: it carries the standard library's security fixes that older releases lack (make
# vulncheck). A GOTOOLCHAIN set in the environment wins.
GOTOOLCHAIN ?= go1.27.3
export GOTOOLCHAIN

# Tools are pinned in hack/tools/go.mod and run with `go tool`, so every machine uses the
# same versions and nothing needs installing by hand.
GO_TOOL ?= go tool -modfile=hack/tools/go.mod
CONTROLLER_GEN ?= $(GO_TOOL) controller-gen
GOLANGCI_LINT ?= go tool -modfile=hack/tools/lint/go.mod golangci-lint
GOTESTSUM ?= $(GO_TOOL) gotestsum

# The release: every binary reports it (--version), the images are tagged with it, and it is
# the chart's appVersion and the kustomize install's image tag (make verify checks both).
VERSION ?= v0.1.0
LDFLAGS := -X github.com/aihub-dev/hive-operator/internal/version.Version=$(VERSION)
IMG ?= ghcr.io/aihub-dev/hive-operator:$(VERSION)
AGENT_IMG ?= ghcr.io/aihub-dev/hive-agent:$(VERSION)
GATEWAY_IMG ?= ghcr.io/aihub-dev/hive-gateway:$(VERSION)
CONTAINER_TOOL ?= docker

# Packages whose coverage the project tracks.
COVER_PKGS ?= ./api/...,./internal/...,./controllers/...,./pkg/...,./cmd/...
TEST_TIMEOUT ?= 30m

CRD_DIR := config/crd/bases
CHART_CRD_DIR := charts/hive-operator/crds

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: ## Generate the CRDs and RBAC from the API and controller markers, and copy the CRDs into the chart.
	$(CONTROLLER_GEN) rbac:roleName=hive-operator crd:generateEmbeddedObjectMeta=true paths="./api/...;./controllers/..." \
		output:crd:artifacts:config=$(CRD_DIR) output:rbac:artifacts:config=config/rbac
	go run ./hack/crd-trim $(CRD_DIR)/*.yaml
	mkdir -p $(CHART_CRD_DIR)
	rm -f $(CHART_CRD_DIR)/*.yaml
	cp $(CRD_DIR)/*.yaml $(CHART_CRD_DIR)/

.PHONY: generate
generate: ## Generate the deepcopy functions of the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Format the code.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: ## Run golangci-lint with the committed configuration.
	$(GOLANGCI_LINT) run --build-tags e2e,chaos ./...

.PHONY: lint-fix
lint-fix: ## Run golangci-lint and apply its fixes.
	$(GOLANGCI_LINT) run --build-tags e2e,chaos --fix ./...

.PHONY: verify
verify: manifests generate chart-docs ## Regenerate everything and fail if the committed files differ.
	@if [ -n "$$(git status --porcelain -- api config charts)" ]; then \
		echo "generated files are out of date; run 'make manifests generate' and commit:"; \
		git status --porcelain -- api config charts; git --no-pager diff --stat -- api config charts; \
		exit 1; \
	fi
	@go run ./test/perf -from-json docs/benchmarks.json -write-docs >/dev/null 2>&1 || { echo "rendering docs/benchmarks.md failed"; exit 1; }
	@if [ -n "$$(git status --porcelain -- docs/benchmarks*)" ]; then \
		echo "docs/benchmarks.md is out of date with docs/benchmarks.json and test/perf; run 'go run ./test/perf -from-json docs/benchmarks.json -write-docs' and commit:"; \
		git --no-pager diff --stat -- docs/benchmarks*; exit 1; \
	fi
	@grep -qx 'appVersion: "$(VERSION)"' charts/hive-operator/Chart.yaml || { echo "charts/hive-operator/Chart.yaml: appVersion must be the Makefile's VERSION, \"$(VERSION)\""; exit 1; }
	@grep -qx '    newTag: "$(VERSION)"' config/default/kustomization.yaml || { echo "config/default/kustomization.yaml: the image's newTag must be the Makefile's VERSION, \"$(VERSION)\""; exit 1; }
	@echo "generated files are up to date"

# The Go vulnerability database (a pinned version of golang.org/x/vulndb) and govulncheck.
export VULNDB_VERSION ?= v0.0.0-20261105234957-e22db6528018
export GOVULNCHECK_VERSION ?= v1.9.0

.PHONY: vulncheck
vulncheck: ## Fail if the code reaches a known vulnerability (offline, with the database pinned in VULNDB_VERSION; VULN_DB=https://vuln.go.dev for the live one).
	hack/vulncheck.sh

##@ Test

.PHONY: envtest
envtest: ## Provide the control-plane binaries for the tests (built from Go modules if needed).
	hack/setup-envtest.sh envtest >/dev/null

.PHONY: test
test: envtest vet ## Run the unit and envtest integration tests and print coverage.
	export KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh envtest)"; \
	$(GOTESTSUM) --format pkgname-and-test-fails -- -timeout $(TEST_TIMEOUT) -race \
		-coverpkg=$(COVER_PKGS) -coverprofile=cover.out ./...
	@hack/coverage.sh cover.out

.PHONY: test-unit
test-unit: ## Run only the tests that need no API server.
	go test -short ./...

##@ Build

.PHONY: build
build: ## Build the manager, the reference agent, the gateway and the kubectl plugin into bin/.
	go build -trimpath -ldflags "$(LDFLAGS)" -o bin/manager ./cmd/manager
	go build -trimpath -ldflags "$(LDFLAGS)" -o bin/hive-agent ./cmd/hive-agent
	go build -trimpath -ldflags "$(LDFLAGS)" -o bin/hive-gateway ./cmd/hive-gateway
	go build -trimpath -ldflags "$(LDFLAGS)" -o bin/kubectl-hive ./cmd/kubectl-hive

.PHONY: run
run: manifests generate ## Run the manager against the cluster of the current kubeconfig.
	go run ./cmd/manager --leader-elect=false

.PHONY: install
install: manifests ## Install the CRDs into the cluster of the current kubeconfig.
	kubectl apply --server-side -f $(CRD_DIR)

.PHONY: uninstall
uninstall: ## Remove the CRDs (and so every hive and task) from the cluster.
	kubectl delete --ignore-not-found -f $(CRD_DIR)

# Where make images pushes, e.g. ghcr.io/aihub-dev; empty writes the OCI layouts only.
IMAGE_REGISTRY ?=
IMAGE_PLATFORMS ?= linux/amd64,linux/arm64

.PHONY: images
images: ## Build the multi-arch images without a container engine into dist/images (OCI layouts); IMAGE_REGISTRY=... also pushes them.
	go run ./hack/images -version $(VERSION) -platforms $(IMAGE_PLATFORMS) -out dist/images $(if $(IMAGE_REGISTRY),-push $(IMAGE_REGISTRY))

.PHONY: plugin-archives
plugin-archives: ## Build the kubectl plugin's release archives, checksums and krew manifest (.goreleaser.yaml, .krew.yaml) into dist/plugin.
	go run ./hack/release -version $(VERSION) -out dist/plugin

.PHONY: docker-build
docker-build: ## Build the manager, reference agent and gateway images (needs a container engine).
	$(CONTAINER_TOOL) build --build-arg VERSION=$(VERSION) --target manager -t $(IMG) .
	$(CONTAINER_TOOL) build --build-arg VERSION=$(VERSION) --target agent -t $(AGENT_IMG) .
	$(CONTAINER_TOOL) build --build-arg VERSION=$(VERSION) --target gateway -t $(GATEWAY_IMG) .

##@ Local cluster

.PHONY: demo
demo: ## Run the operator and the gateway on a local simulated cluster (kwok) and show a hive answering tasks and requests.
	hack/demo.sh up

.PHONY: demo-down
demo-down: ## Stop the demo and delete its cluster.
	hack/demo.sh down

.PHONY: test-e2e
test-e2e: chart-package ## Run the end-to-end suite on a local simulated cluster: the packaged chart installed from an OCI registry and upgraded with a changed CRD, tasks, user roles, scale, rollout, delete, uninstall.
	export E2E_K8S_DIR="$$(hack/setup-envtest.sh cluster)" E2E_KWOK_DIR="$$(hack/setup-envtest.sh print-kwok-dir)" \
		E2E_CHART="$(CURDIR)/dist/charts/hive-operator-$$(sed -n 's/^version: //p' $(CHART_DIR)/Chart.yaml).tgz"; \
	go test -tags e2e -count=1 -timeout 30m -v ./test/e2e/ ./test/kwok/

CHAOS_FLAGS ?=

.PHONY: test-chaos
test-chaos: ## Run the chaos suite on a local simulated cluster: leader kills, API faults and restarts, agent and node loss, a rollout, QPS 1 (about 7 minutes). CHAOS_FLAGS="-long=30m" keeps the faults going longer.
	export E2E_K8S_DIR="$$(hack/setup-envtest.sh cluster)" E2E_KWOK_DIR="$$(hack/setup-envtest.sh print-kwok-dir)"; \
	go test -tags chaos -count=1 -timeout 60m -v ./test/chaos/ $(if $(CHAOS_FLAGS),-args $(CHAOS_FLAGS))

##@ Benchmark

BENCH_FLAGS ?=

.PHONY: bench
bench: ## Measure throughput, latency, writes, memory, start-up and memory over a half-hour run against the API server's ceiling and a Job per task (about 55 minutes). BENCH_FLAGS="-write-docs" rewrites docs/benchmarks.md.
	export KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh envtest)" E2E_K8S_DIR="$$(hack/setup-envtest.sh cluster)" \
		E2E_KWOK_DIR="$$(hack/setup-envtest.sh print-kwok-dir)"; \
	go run ./test/perf $(BENCH_FLAGS)

.PHONY: bench-steady
bench-steady: ## Run the half-hour steady run alone and put it into docs/benchmarks.json and its page (about 35 minutes).
	export KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh envtest)"; \
	go run ./test/perf -config test/perf/configs/steady.yaml -into docs/benchmarks.json -write-docs $(BENCH_FLAGS)

.PHONY: bench-quick
bench-quick: ## Run a three-minute version of the benchmark (the CI smoke test: fails only if a task is lost).
	export KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh envtest)" E2E_K8S_DIR="$$(hack/setup-envtest.sh cluster)" \
		E2E_KWOK_DIR="$$(hack/setup-envtest.sh print-kwok-dir)"; \
	go run ./test/perf -quick $(BENCH_FLAGS)

##@ Helm

# Helm is pinned in its own module. A helm built by `go tool` assumes Kubernetes v1.20 when
# it renders without a cluster, below the chart's kubeVersion, so the targets name a version.
HELM ?= go tool -modfile=hack/tools/helm/go.mod helm
HELM_KUBE_VERSION ?= v1.37.2
CHART_DIR := charts/hive-operator

.PHONY: helm-lint
helm-lint: ## Lint the Helm chart with its default values and with every option set.
	$(HELM) lint --strict --kube-version $(HELM_KUBE_VERSION) $(CHART_DIR)
	$(HELM) lint --strict --kube-version $(HELM_KUBE_VERSION) $(CHART_DIR) -f test/chart/testdata/all-options.yaml

HELM_DOCS ?= go tool -modfile=hack/tools/helm/go.mod helm-docs

.PHONY: chart-docs
chart-docs: ## Generate the chart's README (its values table) from the comments of values.yaml.
	$(HELM_DOCS) --chart-search-root charts --sort-values-order file --skip-version-footer --log-level warning

.PHONY: helm-template
helm-template: ## Render the Helm chart with its default values into the release namespace hive-system.
	$(HELM) template hive-operator $(CHART_DIR) --namespace hive-system --kube-version $(HELM_KUBE_VERSION)

# Where make chart-push pushes the chart, e.g. oci://ghcr.io/aihub-dev/charts.
CHART_REGISTRY ?=

.PHONY: chart-package
chart-package: ## Package the chart into dist/charts/hive-operator-<chart version>.tgz, its appVersion the Makefile's VERSION.
	$(HELM) package $(CHART_DIR) --app-version $(VERSION) --destination dist/charts

.PHONY: chart-push
chart-push: chart-package ## Push the packaged chart to the OCI registry CHART_REGISTRY (helm registry login first).
	@test -n "$(CHART_REGISTRY)" || { echo "set CHART_REGISTRY, e.g. oci://ghcr.io/aihub-dev/charts"; exit 1; }
	$(HELM) push dist/charts/hive-operator-$$(sed -n 's/^version: //p' $(CHART_DIR)/Chart.yaml).tgz $(CHART_REGISTRY)
