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

export SMSC_REAL_NODE="${SMSC_REAL_NODE:-1}"
if [ "$SMSC_REAL_NODE" = 1 ]; then
  # The images the real node runs (imported by `up`, the Pod sandbox image first of all).
  tools/images.sh build
  # The baseline is the machine as it was before any real node: a run killed before its `down`
  # left its sysctls set, and its stale state knows the values to put back.
  tools/cluster.sh clean
  node_baseline="$(mktemp)"
  tools/realnode.sh baseline >"$node_baseline"
fi

kc="$(tools/cluster.sh up | tail -n 1)"
eval "$kc"          # export KUBECONFIG=...
echo "[test] control plane up: KUBECONFIG=$KUBECONFIG" >&2
eval "$(tools/cluster.sh env)"  # SMSC_CONTAINERD_ADDRESS with a real node

status=0
cargo test --workspace --all-targets --no-fail-fast || status=$?
cargo test --workspace --doc || status=$?

if [ "$SMSC_REAL_NODE" = 1 ]; then
  # `down` must leave nothing of the real node behind: processes, mounts, cgroups, iptables
  # chains and nftables tables, the bridge, network namespaces, the VM-wide sysctls.
  tools/cluster.sh down
  if left="$(tools/realnode.sh leftovers "$node_baseline")"; then
    echo "[test] real node: nothing left behind after down" >&2
  else
    echo "[test] real node: down left behind:" >&2
    echo "$left" >&2
    status=1
  fi
  rm -f "$node_baseline"
fi
exit "$status"
