#!/usr/bin/env bash
# make demo on real Pods: the user's story on the local cluster's real node, in plain words.
#
#  1. build the images (tools/images.sh), bring up the control plane with its real node,
#  2. `helm install` the operator chart: the operator runs in a Pod, as its own ServiceAccount,
#  3. start a carrier (smscd's simulator in a Pod) that allows ONE bind, and a Redis Pod,
#  4. `kubectl apply` an SmscCluster with 2 replicas: the operator picks ActiveStandby and says why,
#  5. send real SMS from an ESME on this machine (Python smpplib) through the Service's NodePort
#     and show each delivery receipt coming back,
#  6. force-delete the active Pod and show another replica taking the Lease, the label and the
#     Service, then send again,
#  7. tear everything down.
#
# The ESME talks to 127.0.0.1 only. The cluster lives in its own directory and stops at the end.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
SMSC_CACHE="${SMSC_CACHE:-$HOME/.cache/smsc-operator}"
export SMSC_CLUSTER_DIR="${SMSC_DEMO_CLUSTER_DIR:-$SMSC_CACHE/cluster-demo}"
NS=smsc-demo
CLUSTER=demo
work="$(mktemp -d /tmp/smsc-demo.XXXXXX)"
python_peer="$SMSC_CACHE/venv/bin/python"
# shellcheck source=lib.sh
. "$root/tools/demo/lib.sh"

cleanup() {
  local rc=$?
  bold "Tearing down"
  helm uninstall smsc-operator -n "$NS" --wait --timeout 60s >/dev/null 2>&1 || true
  tools/cluster.sh down >/dev/null 2>&1 || true
  say "operator uninstalled, real node drained and stopped, control plane stopped; logs were in $work"
  [ $rc -eq 0 ] && rm -rf "$work"
  exit $rc
}

k8sbin="$(tools/k8s/build.sh --bin-dir)"
export PATH="$k8sbin:$PATH"
k() { kubectl -n "$NS" "$@"; }

bold "1. Building the images and starting the local cluster with its real node"
tools/images.sh build
if ! up="$(tools/cluster.sh up 2>"$work/cluster-up.log")"; then
  tail -n 5 "$work/cluster-up.log" >&2
  exit 3   # tools/demo.sh falls back to kwok on this code
fi
trap cleanup EXIT
eval "$(tools/cluster.sh env)"
export KUBECONFIG
say "control plane up (kube-apiserver $(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'))"
say "three kwok Nodes (Pods there run nothing) and one real Node (containerd, kubelet, kube-proxy):"
kubectl get nodes -o wide -L topology.kubernetes.io/zone | sed 's/^/   /'

bold "2. helm install: the operator chart, with the operator image built here"
kubectl create namespace "$NS" >/dev/null
kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=restricted >/dev/null
say "namespace $NS enforces PodSecurity 'restricted'"
cat >"$work/values.yaml" <<EOF
image: {repository: localhost/smsc-operator, tag: dev}
smscd: {image: {repository: localhost/smscd, tag: dev}}
watchNamespaces: [$NS]
log: {format: text}
nodeSelector: {smsc.io/real-node: "true"}
tolerations: [{key: smsc.io/real-node, operator: Exists, effect: NoSchedule}]
EOF
helm install smsc-operator charts/smsc-operator -n "$NS" -f "$work/values.yaml" | sed -n '1,6s/^/   /p'
k wait --for=condition=Available deployment/smsc-operator --timeout=120s >/dev/null ||
  die "the operator Pod did not become Ready (kubectl -n $NS describe pod)"
k get pods -o wide | sed 's/^/   /'
say "its ServiceAccount: $(k get pod -l app.kubernetes.io/name=smsc-operator -o jsonpath='{.items[0].spec.serviceAccountName}')"

bold "3. A carrier that allows exactly ONE bind for our system_id, and Redis for receipts"
sed -e "s/\${NAME}/carrier/g" -e "s/\${IMAGE}/localhost\/smscd:dev/g" \
  -e 's/\${ACCOUNTS}/[{ system_id: legacy_gw, password: changeme, max_binds: 1 }]/' \
  tests/e2e/fixtures/real-pods/carrier.yaml | k apply -f - | sed 's/^/   /'
k apply -f tests/e2e/fixtures/real-pods/redis.yaml | sed 's/^/   /'
k wait --for=condition=Ready pod/carrier pod/redis --timeout=90s >/dev/null || die "carrier or redis not Ready"
carrier_ip=$(k get service carrier -o jsonpath='{.spec.clusterIP}')
redis_ip=$(k get service redis -o jsonpath='{.spec.clusterIP}')
say "carrier at $carrier_ip:2775 (Service), Redis at $redis_ip:6379"

bold "4. kubectl apply: an SmscCluster with 2 replicas and that single-bind upstream"
smsc_manifest "$carrier_ip" 2775 "  dlrStore: { type: Redis, redis: { urlSecretRef: { name: demo-redis, key: url } } }
  service: { type: NodePort, externalTrafficPolicy: Cluster }
  shutdown: { preStopSleepSeconds: 2, drainSeconds: 10 }
  pod:
    nodeSelector: { smsc.io/real-node: \"true\" }
    tolerations: [{ key: smsc.io/real-node, operator: Exists, effect: NoSchedule }]" >"$work/smsc.yaml"
cat >>"$work/smsc.yaml" <<EOF
---
apiVersion: v1
kind: Secret
metadata: { name: demo-redis }
stringData: { url: "redis://$redis_ip:6379/0" }
EOF
k apply -f "$work/smsc.yaml" | sed 's/^/   /'
until_ok 60 bash -c "[ \"\$(kubectl -n $NS get smsc $CLUSTER -o jsonpath='{.status.topology}')\" = ActiveStandby ]" ||
  die "the operator did not settle the topology (kubectl -n $NS logs deploy/smsc-operator)"
say "the operator chose topology ActiveStandby. The scale-out checklist, as it reports it:"
k get smsc "$CLUSTER" -o jsonpath='{range .status.checklist[*]}{.satisfied}{"\t"}{.name}{": "}{.message}{"\n"}{end}' |
  sed 's/^true/   [x]/; s/^false/   [ ]/'
say "children it made:"
k get configmap,deployment,service,pdb,serviceaccount,role,rolebinding -l "app.kubernetes.io/instance=$CLUSTER" | sed 's/^/   /'

active_pod() { k get pods -l "app.kubernetes.io/instance=$CLUSTER,smsc.io/role=active" -o jsonpath='{.items[*].metadata.name}'; }
lease_holder() { k get lease "$CLUSTER-leader" -o jsonpath='{.spec.holderIdentity}'; }
endpoint() { k get endpointslices -l "kubernetes.io/service-name=$CLUSTER" -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.targetRef.name}{" "}{end}'; }
settled() { local a; a=$(active_pod); [ -n "$a" ] && [ "$a" = "$(lease_holder)" ] && [ "$(endpoint)" = "$a " ] && [ "$a" != "${1:-}" ]; }
until_ok 120 settled || die "no replica took the Lease (kubectl -n $NS logs -l app.kubernetes.io/instance=$CLUSTER)"
active=$(active_pod)
say "two smscd containers run on the real node; $active holds the Lease $CLUSTER-leader and labelled itself:"
k get pods -o wide -L smsc.io/role | sed 's/^/   /'
say "the Service selects that label: its only ready endpoint is $(endpoint)"
port=$(k get service "$CLUSTER" -o jsonpath='{.spec.ports[?(@.name=="smpp")].nodePort}')

bold "5. Sending SMS through the Service (ESME: Python smpplib on 127.0.0.1:$port, NodePort via kube-proxy)"
send_sms "$port" 3 legacy s3cret || die "sending failed (see $work/esme.out)"
k get smsc | sed 's/^/   /'

bold "6. Failover: kubectl delete pod $active --grace-period=0 --force"
old=$active
k delete pod "$old" --grace-period=0 --force 2>&1 | grep -v Warning | sed 's/^/   /'
start=$(date +%s.%N)
until_ok 90 settled "$old" || die "the standby did not take over"
active=$(active_pod)
took=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
say "$active holds the Lease, the role label and the Service endpoint ${took}s later. The API object went at"
say "once; the kubelet still stopped the container with SIGTERM, so smscd unbound, released the Lease, and the"
say "first replica to retry took it (the standby, or the Pod the ReplicaSet made in its place)"
k get pods -o wide -L smsc.io/role | sed 's/^/   /'
refused=$(k logs carrier | grep -c "bind refused" || true)
say "the carrier refused $refused binds: it never saw two at once"
send_sms "$port" 3 legacy s3cret || die "sending after the failover failed (see $work/esme.out)"
k get smsc | sed 's/^/   /'

bold "Done: real SMS went through operator-managed smscd Pods on a real node and came back as receipts, before and after a failover"
