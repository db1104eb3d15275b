#!/usr/bin/env bash
# make demo without a real node (tools/demo.sh falls back to it): the same story with kwok
# Pods that run nothing, played by smscd processes on this machine.
#
#  1. build smscd and the operator, bring up the local control plane (tools/cluster.sh),
#  2. install the CRD and run the operator,
#  3. start a "carrier" SMSC (smscd with its built-in simulator) that allows ONE bind, and a
#     redis-server as the shared DLR store (active/standby needs it: a standby taking over finds
#     the receipts owed there),
#  4. apply an SmscCluster pointing at it: the operator picks ActiveStandby and says why,
#  5. run the two smscd replicas as local processes playing the Pods kwok created,
#  6. send real SMS with a Python smpplib ESME and show the delivery receipts coming back,
#  7. kill -9 the active replica and show the standby taking over, then send again,
#  8. tear everything down.
#
# Everything listens on 127.0.0.1. The cluster lives in its own directory and is stopped at the end.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
SMSC_CACHE="${SMSC_CACHE:-$HOME/.cache/smsc-operator}"
export SMSC_CLUSTER_DIR="${SMSC_DEMO_CLUSTER_DIR:-$SMSC_CACHE/cluster-demo}"
NS=smsc-demo
CLUSTER=demo
work="$(mktemp -d /tmp/smsc-demo.XXXXXX)"
pids=()

# shellcheck source=lib.sh
. "$root/tools/demo/lib.sh"

cleanup() {
  local rc=$?
  bold "Tearing down"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  tools/cluster.sh down >/dev/null 2>&1 || true
  say "processes stopped, control plane stopped; logs were in $work"
  [ $rc -eq 0 ] && rm -rf "$work"
  exit $rc
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }


bold "1. Building smscd and smsc-operator, preparing the control plane"
tools/deps.sh all
tools/k8s/build.sh
cargo build -q -p smscd -p smsc-operator --bins
bin="$root/target/debug"
k8sbin="$(tools/k8s/build.sh --bin-dir)"
export PATH="$k8sbin:$PATH"
python_peer="$SMSC_CACHE/venv/bin/python"
eval "$(SMSC_REAL_NODE=0 tools/cluster.sh up | tail -n 1)"
export KUBECONFIG
say "control plane up (kube-apiserver $(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'), 3 kwok nodes)"
kubectl get nodes -L topology.kubernetes.io/zone | sed 's/^/   /'

bold "2. Installing the SmscCluster CRD and starting the operator"
kubectl apply --server-side -f config/crd/ >/dev/null
kubectl create namespace "$NS" >/dev/null
op_port=$(free_port)
"$bin/smsc-operator" --smscd-image smscd:demo --namespace "$NS" --metrics-addr "127.0.0.1:$op_port" \
  >"$work/operator.log" 2>&1 &
pids+=($!)
until_ok 30 curl -sf "http://127.0.0.1:$op_port/readyz" >/dev/null || die "operator not ready (see $work/operator.log)"
say "operator running (pid ${pids[-1]}, health and metrics on 127.0.0.1:$op_port), watching namespace $NS"

bold "3. Starting the carrier: an upstream SMSC that allows exactly one bind for our system_id"
carrier_port=$(free_port)
cat >"$work/carrier.yaml" <<EOF
server: { bind_address: 127.0.0.1, port: $carrier_port }
admin: { bind_address: 127.0.0.1, port: $(free_port) }
accounts:
  - { system_id: legacy_gw, password: changeme, max_binds: 1 }
routing: { default_chain: [sim] }
sim: { receipt_delay_ms: 300, outcomes: { DELIVRD: 1.0 } }
EOF
"$bin/smscd" --config "$work/carrier.yaml" >"$work/carrier.log" 2>&1 &
pids+=($!)
until_ok 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$carrier_port" || die "carrier did not start"
say "carrier on 127.0.0.1:$carrier_port (max_binds 1: a second concurrent bind is refused)"

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$work" \
  >"$work/redis.log" 2>&1 &
pids+=($!)
until_ok 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$redis_port" || die "redis-server did not start"
say "Redis (the shared DLR store) on 127.0.0.1:$redis_port"

bold "4. Applying an SmscCluster with 2 replicas and that single-bind upstream"
smsc_manifest 127.0.0.1 "$carrier_port" \
  "  dlrStore: { type: Redis, redis: { urlSecretRef: { name: demo-redis, key: url } } }" >"$work/smsc.yaml"
cat >>"$work/smsc.yaml" <<EOF
---
apiVersion: v1
kind: Secret
metadata: { name: demo-redis }
stringData: { url: "redis://127.0.0.1:$redis_port/0" }
EOF
kubectl -n "$NS" apply -f "$work/smsc.yaml" | sed 's/^/   /'
topology() { kubectl -n "$NS" get smsc "$CLUSTER" -o jsonpath='{.status.topology}'; }
until_ok 60 bash -c "[ \"\$(kubectl -n $NS get smsc $CLUSTER -o jsonpath='{.status.topology}')\" = ActiveStandby ]" ||
  die "the operator did not settle the topology (see $work/operator.log)"
say "the operator chose topology $(topology). The scale-out checklist, as it reports it:"
kubectl -n "$NS" get smsc "$CLUSTER" -o jsonpath='{range .status.checklist[*]}{.satisfied}{"\t"}{.name}{": "}{.message}{"\n"}{end}' |
  sed 's/^true/   [x]/; s/^false/   [ ]/'
say "children it made:"
kubectl -n "$NS" get configmap,deployment,service,pdb,serviceaccount,role,rolebinding -l "app.kubernetes.io/instance=$CLUSTER" |
  sed 's/^/   /'

bold "5. Running the two smscd replicas as the Pods kwok scheduled"
until_ok 60 bash -c "[ \"\$(kubectl -n $NS get pods -l app.kubernetes.io/instance=$CLUSTER --field-selector=status.phase=Running -o name | wc -l)\" -ge 2 ]" ||
  die "the Deployment's Pods did not become Running"
mapfile -t pods < <(kubectl -n "$NS" get pods -l "app.kubernetes.io/instance=$CLUSTER" -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | head -n 2)
kubectl -n "$NS" get configmap "$CLUSTER-config" -o jsonpath='{.data.smscd\.yaml}' >"$work/smscd.yaml"
declare -A port_of pid_of
for pod in "${pods[@]}"; do
  port_of[$pod]=$(free_port)
  python3 tools/demo/podenv.py kubectl "$NS" "$CLUSTER" "$pod" >"$work/$pod.env"
  (
    set -a
    # shellcheck disable=SC1090
    . "$work/$pod.env"
    exec "$bin/smscd" --config "$work/smscd.yaml" --listen "127.0.0.1:${port_of[$pod]}" \
      --admin-listen "127.0.0.1:$(free_port)"
  ) >"$work/$pod.log" 2>&1 &
  pid_of[$pod]=$!
  pids+=($!)
  say "$pod -> smscd pid ${pid_of[$pod]}, SMPP on 127.0.0.1:${port_of[$pod]}"
done
active_pod() { kubectl -n "$NS" get pods -l smsc.io/role=active -o jsonpath='{.items[*].metadata.name}'; }
until_ok 30 bash -c "[ -n \"\$(kubectl -n $NS get pods -l smsc.io/role=active -o name)\" ]" ||
  die "no replica took the Lease (see $work/*.log)"
active=$(active_pod)
say "the replicas elected $active (Lease $CLUSTER-leader); it labelled its Pod smsc.io/role=active:"
kubectl -n "$NS" get pods -L smsc.io/role | sed 's/^/   /'
say "the Service selects that label, so its EndpointSlice lists only the active Pod:"
kubectl -n "$NS" get endpointslices -l "kubernetes.io/service-name=$CLUSTER" | sed 's/^/   /'

send() { # $1 = pod, $2 = how many
  send_sms "${port_of[$1]}" "$2" legacy s3cret
}

bold "6. Sending SMS through the active replica (Python smpplib as the ESME)"
send "$active" 3 || die "sending through $active failed (see $work/esme.out)"
kubectl -n "$NS" get smsc | sed 's/^/   /'

bold "7. Failover: kill -9 the active replica ($active)"
old=$active
{ kill -9 "${pid_of[$old]}" && wait "${pid_of[$old]}"; } 2>/dev/null || true
start=$(date +%s.%N)
until_ok 60 bash -c "a=\$(kubectl -n $NS get pods -l smsc.io/role=active -o jsonpath='{.items[*].metadata.name}'); [ -n \"\$a\" ] && [ \"\$a\" != $old ]" ||
  die "the standby did not take over (see $work/*.log)"
active=$(active_pod)
took=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
say "$active took the Lease after ${took}s (the dead leader could not release it, so the standby waited out the lease duration)"
kubectl -n "$NS" get pods -L smsc.io/role | sed 's/^/   /'
say "the EndpointSlice followed:"
kubectl -n "$NS" get endpointslices -l "kubernetes.io/service-name=$CLUSTER" | sed 's/^/   /'
refused=$(grep -c "bind refused" "$work/carrier.log" || true)
say "the carrier refused $refused binds: it never saw two at once"
send "$active" 3 || die "sending through $active failed (see $work/esme.out)"
until_ok 20 bash -c "[ \"\$(kubectl -n $NS get smsc $CLUSTER -o jsonpath='{.status.activePod}')\" = $active ]" || true
kubectl -n "$NS" get smsc | sed 's/^/   /'

bold "Done: a real SMS went through an operator-managed SMSC and came back as a receipt, before and after a failover"
