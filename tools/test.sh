#!/usr/bin/env bash
# Runs every cargo test tier against one control plane started for the whole run, so each e2e
# test binary reuses it instead of starting its own (about 17 s each). The cluster lives in its
# own directory, apart from the one `make cluster-up` gives a developer, and is stopped on exit
# (a watchdog also stops it if this script is killed).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
SMSC_CACHE="${SMSC_CACHE:-$HOME/.cache/smsc-operator}"
export SMSC_CLUSTER_DIR="${SMSC_TEST_CLUSTER_DIR:-$SMSC_CACHE/cluster-test}"
export SMSC_CLUSTER_OWNER_PID=$$
cd "$root"

down() { tools/cluster.sh down >/dev/null 2>&1 || true; }
trap down EXIT

kc="$(tools/cluster.sh up | tail -n 1)"
eval "$kc"          # export KUBECONFIG=...
echo "[test] control plane up: KUBECONFIG=$KUBECONFIG" >&2

cargo test --workspace --all-targets --no-fail-fast
cargo test --workspace --doc
