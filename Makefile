# The project's verbs. `make test` is what CI runs (.ci/run); `make demo` is the tour.
# Every target installs what it needs through tools/deps.sh (idempotent, cached outside the clone).

SHELL := /bin/bash
CARGO ?= cargo
export SMSC_CACHE ?= $(HOME)/.cache/smsc-operator
# Two cores: keep cargo from starving the Go build or the tests it runs.
export CARGO_BUILD_JOBS ?= 2

.PHONY: all build deps lint fmt test test-unit test-peers e2e fuzz bench bench-failover bench-failover-real bench-operator profile demo cluster-up cluster-down k8s-tools images crds chart-lint clean

all: build

deps:
	tools/deps.sh all

build:
	$(CARGO) build --workspace --all-targets

fmt:
	$(CARGO) fmt --all

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Every test tier: unit + property + peers (Python, Node, Kannel) + store (Redis) + control plane.
test: deps k8s-tools lint
	tools/test.sh

## Bounded fuzzing of the SMPP decoder (FUZZ_SECS, default 60).
FUZZ_SECS ?= 60
fuzz:
	tools/fuzz.sh $(FUZZ_SECS)

bench: deps
	$(CARGO) bench -p smpp --bench codec
	tools/bench.sh

## A perf profile and flamegraph of smscd under the load generator (PROFILE: term or relay),
## written to target/profile/ (docs/benchmarks.md, "Where the time goes").
PROFILE ?= term
profile: deps
	tools/profile.sh $(PROFILE)

## Failover times on the control plane (docs/benchmarks.md, "Failover"): RUNS kill -9 and RUNS
## SIGTERM failovers of the active smscd; prints each run and the medians. Not asserted.
RUNS ?= 5
bench-failover: deps k8s-tools
	RUNS=$(RUNS) $(CARGO) test -p smsc-e2e --test failover -- --ignored --nocapture failover_times

## Failover times on real Pods (docs/benchmarks.md): RUNS forced deletes and RUNS plain deletes of
## the active smscd Pod of an ActiveStandby cluster on the real node, against the cluster
## `make cluster-up` leaves running (it starts one, with the real node, if none is up). Not asserted.
bench-failover-real: deps cluster-up
	RUNS=$(RUNS) $(CARGO) test -p smsc-e2e --test real_pods -- --ignored --nocapture real_pod_failover_times

## Operator scale on the control plane (issue 8): N SmscClusters (default 1000) reconciled by the
## release operator; times, RSS, requests per reconcile, writes when quiet, spec-change latency.
## Overrides: N; OPSCALE_{CONCURRENCY,QUIET_SECS,SPEC_CHANGES,WAIT_SECS,AVAILABLE_SECS} (tests/e2e/tests/operator_scale.rs).
N ?= 1000
bench-operator: deps k8s-tools
	$(CARGO) build --release -p smsc-operator -p smscd --bins
	OPSCALE_N=$(N) SMSC_E2E_BIN_DIR="$${CARGO_TARGET_DIR:-$(CURDIR)/target}/release" \
	  $(CARGO) test -p smsc-e2e --test operator_scale -- --ignored --nocapture operator_scale

## The test control plane (docs/control-plane.md): built once per version into $(SMSC_CACHE)/k8s.
k8s-tools:
	tools/k8s/build.sh

## Start (or reuse) it; the last line printed is `export KUBECONFIG=...`.
cluster-up: k8s-tools images
	@tools/cluster.sh up

cluster-down:
	@tools/cluster.sh down

## Container images for the test bed's real node (tools/images.sh): release binaries, a base made
## from Debian packages, then localhost/smscd:dev (+ :dev-b), localhost/smsc-operator:dev,
## localhost/smsc-redis:dev and localhost/smsc-pause:3.10 as archives under $(SMSC_CACHE)/images.
## With SMSC_CONTAINERD_ADDRESS (a containerd socket, e.g. the real node's) they are imported too.
images:
	tools/deps.sh apt realnode
	tools/images.sh build
	@if [ -n "$${SMSC_CONTAINERD_ADDRESS:-}" ]; then tools/images.sh import "$$SMSC_CONTAINERD_ADDRESS"; fi

## Regenerate the SmscCluster CRD YAML (config/crd and the chart) from crates/smsc-api.
crds:
	$(CARGO) run -q -p smsc-api --bin crdgen

## helm lint of the operator chart, with the helm tools/k8s builds.
chart-lint: k8s-tools
	"$$(tools/k8s/build.sh --bin-dir)/helm" lint charts/smsc-operator

demo: deps
	tools/demo.sh

clean:
	$(CARGO) clean
