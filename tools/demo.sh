#!/usr/bin/env bash
# make demo: the whole story on one machine, in plain words.
#
# On real Pods (tools/demo/real.sh): the local cluster's real node runs the operator from its
# Helm chart and the smscd Pods it creates; an ESME on this machine sends SMS through the
# Service and gets the receipts; the active Pod is force-deleted and the standby takes over.
# Only when the real node cannot start here does it fall back, and says so, to the same story
# on kwok Pods played by local smscd processes (tools/demo/kwok.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
tools/deps.sh all
tools/k8s/build.sh
rc=0
if [ "${SMSC_REAL_NODE:-1}" != 0 ]; then
  tools/demo/real.sh || rc=$?
  [ $rc -eq 3 ] || exit $rc
  printf '\n\033[33m== The real node could not start on this machine (above); falling back to kwok Pods played\n'
  printf '   by local smscd processes. Nothing below runs in a container.\033[0m\n' >&2
else
  printf '\n\033[33m== SMSC_REAL_NODE=0: kwok Pods played by local smscd processes, no containers.\033[0m\n' >&2
fi
exec tools/demo/kwok.sh
