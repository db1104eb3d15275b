#!/usr/bin/env bash
# The test control plane: etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok
# (three fake Nodes in two zones), all on 127.0.0.1, built by tools/k8s/build.sh, and one real
# Node (containerd, kubelet, kube-proxy: tools/realnode.sh) where Pods really run.
#
#   tools/cluster.sh up      start it (or reuse the one already up); last line: export KUBECONFIG=...
#   tools/cluster.sh down    stop it, remove its state; no process is left behind
#   tools/cluster.sh clean   tear down a stale cluster (its processes died without `down`), keep a live one
#   tools/cluster.sh env     print `export KUBECONFIG=...` and `export PATH=<k8s bin>:$PATH`
#   tools/cluster.sh status  exit 0 when it answers /readyz
#
# Environment:
#   SMSC_CACHE          cache root (default ~/.cache/smsc-operator)
#   SMSC_CLUSTER_DIR    where the kubeconfig and the pointer to the state live
#                       (default $SMSC_CACHE/cluster; kubeconfig at $SMSC_CLUSTER_DIR/kubeconfig)
#   SMSC_CLUSTER_OWNER_PID  if set on `up`, a watchdog stops the cluster when that process exits
#                       (the Rust test helper uses it so a killed test run leaves nothing behind)
#   SMSC_CLUSTER_TIMEOUT    seconds `up` waits for /readyz and Ready nodes (default 120)
#   SMSC_REAL_NODE      1 (default): also the real node, and `up` fails when it cannot start;
#                       0: kwok Nodes only (what a test binary's private cluster uses)
#
# The state (etcd data, certificates, logs, pids) lives in a temp dir named in $SMSC_CLUSTER_DIR/state.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SMSC_CACHE="${SMSC_CACHE:-$HOME/.cache/smsc-operator}"
CLUSTER_DIR="${SMSC_CLUSTER_DIR:-$SMSC_CACHE/cluster}"
KUBECONFIG_PATH="$CLUSTER_DIR/kubeconfig"
TIMEOUT="${SMSC_CLUSTER_TIMEOUT:-120}"
BIN="$("$here/k8s/build.sh" --bin-dir)"
export PATH="$BIN:$PATH"
REAL_NODE="${SMSC_REAL_NODE:-1}"
# shellcheck source=realnode.sh
. "$here/realnode.sh"

NODES=("kwok-node-0:zone-a" "kwok-node-1:zone-b" "kwok-node-2:zone-a")

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

state_dir() { if [ -f "$CLUSTER_DIR/state" ]; then cat "$CLUSTER_DIR/state"; fi; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

kc() { kubectl --kubeconfig "$KUBECONFIG_PATH" --request-timeout=5s "$@"; }

is_up() {
  [ -f "$KUBECONFIG_PATH" ] && [ -n "$(state_dir)" ] && [ -d "$(state_dir)" ] &&
    [ "$(kc get --raw /readyz 2>/dev/null)" = "ok" ]
}

# Poll `$@` until it succeeds or the deadline passes.
wait_for() {
  local what="$1" deadline=$((SECONDS + TIMEOUT)); shift
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "timed out after ${TIMEOUT}s waiting for $what"
      return 1
    fi
    check_alive || return 1
    sleep 0.2
  done
}

# Every process we started must still run while we wait for it.
check_alive() {
  local st pidf name
  st="$(state_dir)"
  for pidf in "$st"/pids/*.pid; do
    [ -e "$pidf" ] || continue
    name="$(basename "$pidf" .pid)"
    if ! kill -0 "$(cat "$pidf")" 2>/dev/null; then
      log "$name exited; last lines of $st/logs/$name.log:"
      tail -n 20 "$st/logs/$name.log" >&2 || true
      return 1
    fi
  done
}

all_alive() {
  local st name pid
  st="$(state_dir)"
  [ -n "$st" ] && [ -d "$st" ] && [ -f "$KUBECONFIG_PATH" ] || return 1
  local names=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
  # A kwok-only cluster does not serve a request for a real node, nor the other way round.
  if [ -f "$st/node/enabled" ]; then
    [ "$REAL_NODE" = 1 ] || return 1
    names+=(containerd kubelet kube-proxy)
  else
    [ "$REAL_NODE" != 1 ] || return 1
  fi
  for name in "${names[@]}"; do
    [ -f "$st/pids/$name.pid" ] || return 1
    pid="$(cat "$st/pids/$name.pid")"
    kill -0 "$pid" 2>/dev/null && grep -qF "$st" "/proc/$pid/cmdline" 2>/dev/null || return 1
  done
}

start() {
  local name="$1"; shift
  local st; st="$(state_dir)"
  # 8>&-: the child must not inherit the lock on $CLUSTER_DIR/.lock.
  setsid "$@" >"$st/logs/$name.log" 2>&1 </dev/null 8>&- &
  echo $! >"$st/pids/$name.pid"
}

gen_certs() {
  local d="$1/pki"
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=smsc-test-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:10.245.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1\nextendedKeyUsage=serverAuth\n' >apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

# kubeconfig NAME TOKEN FILE
write_kubeconfig() { kubeconfig_with "$1" "$3" "token: $2"; }

# kubeconfig NAME FILE CREDENTIALS: CREDENTIALS are the lines under `user:` (a token, or a client
# certificate and key), indented by four spaces after the first.
kubeconfig_with() {
  local user="$1" file="$2" credentials="$3" st; st="$(state_dir)"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: smsc-test
  cluster:
    server: https://127.0.0.1:$(cat "$st/ports/apiserver")
    certificate-authority-data: $(base64 -w0 "$st/pki/ca.crt")
users:
- name: $user
  user:
    $credentials
contexts:
- name: smsc-test
  context:
    cluster: smsc-test
    user: $user
current-context: smsc-test
EOF
  chmod 600 "$file"
}

nodes_ready() {
  local ready
  ready="$(kc get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')"
  [ "$ready" -eq ${#NODES[@]} ]
}

default_sa() { kc -n default get serviceaccount default; }

create_nodes() {
  local n name zone
  for n in "${NODES[@]}"; do
    name="${n%%:*}"; zone="${n##*:}"
    kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: $name
    topology.kubernetes.io/zone: $zone
    topology.kubernetes.io/region: local
spec: {}
status:
  allocatable: {cpu: "16", memory: 64Gi, pods: "110"}
  capacity: {cpu: "16", memory: 64Gi, pods: "110"}
  nodeInfo:
    architecture: amd64
    kubeletVersion: fake
    operatingSystem: linux
EOF
  done
}

cmd_up() {
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run tools/k8s/build.sh (make k8s-tools) first"
  done
  mkdir -p "$CLUSTER_DIR"
  exec 8>"$CLUSTER_DIR/.lock"
  flock 8
  # Already running (all five processes alive): reuse it, once it answers /readyz. A slow answer
  # under load is no reason to tear down a cluster someone is using.
  if all_alive; then
    if wait_for "/readyz of the running cluster" is_up; then
      log "already up (state $(state_dir))"
      echo "export KUBECONFIG=$KUBECONFIG_PATH"
      return 0
    fi
    die "a cluster runs under $CLUSTER_DIR but does not answer /readyz; see $(state_dir)/logs, or run tools/cluster.sh down"
  fi
  down_stale_locked

  local started=$SECONDS st
  st="$(mktemp -d "${TMPDIR:-/tmp}/smsc-cluster.XXXXXX")"
  echo "$st" >"$CLUSTER_DIR/state"
  # Interrupted half-way: leave nothing running.
  trap 'log "interrupted"; cmd_down_locked; exit 130' INT TERM
  mkdir -p "$st/pids" "$st/logs" "$st/ports"; mkdir -m 700 "$st/etcd"
  for p in etcd-client etcd-peer apiserver kcm scheduler kwok; do free_port >"$st/ports/$p"; done
  port() { cat "$st/ports/$1"; }
  gen_certs "$st"
  local apiserver_net=(--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --endpoint-reconciler-type none)
  if [ "$REAL_NODE" = 1 ]; then
    local why; why="$(realnode_unavailable)"
    [ -z "$why" ] || { cmd_down_locked; die "the real node cannot start: $why (SMSC_REAL_NODE=0 gives a kwok-only cluster)"; }
    realnode_prepare || { cmd_down_locked; die "preparing the real node failed"; }
    mapfile -t apiserver_net < <(realnode_apiserver_args)
  fi

  local admin_token kcm_token sched_token kwok_token
  admin_token="$(openssl rand -hex 24)"; kcm_token="$(openssl rand -hex 24)"
  sched_token="$(openssl rand -hex 24)"; kwok_token="$(openssl rand -hex 24)"
  {
    echo "$admin_token,admin,uid-admin,\"system:masters\""
    echo "$kcm_token,system:kube-controller-manager,uid-kcm"
    echo "$sched_token,system:kube-scheduler,uid-scheduler"
    echo "$kwok_token,kwok,uid-kwok,\"system:masters\""
  } >"$st/pki/tokens.csv"

  start etcd etcd --name smsc-test --data-dir "$st/etcd" \
    --listen-client-urls "http://127.0.0.1:$(port etcd-client)" \
    --advertise-client-urls "http://127.0.0.1:$(port etcd-client)" \
    --listen-peer-urls "http://127.0.0.1:$(port etcd-peer)" \
    --initial-advertise-peer-urls "http://127.0.0.1:$(port etcd-peer)" \
    --initial-cluster "smsc-test=http://127.0.0.1:$(port etcd-peer)" \
    --listen-metrics-urls "" --log-level warn --unsafe-no-fsync \
    --quota-backend-bytes 4294967296

  wait_for "etcd" curl -fsS "http://127.0.0.1:$(port etcd-client)/health" || { cmd_down_locked; exit 1; }
  log "etcd healthy after $((SECONDS - started)) s"

  start kube-apiserver kube-apiserver \
    --etcd-servers "http://127.0.0.1:$(port etcd-client)" \
    "${apiserver_net[@]}" --secure-port "$(port apiserver)" \
    --tls-cert-file "$st/pki/apiserver.crt" --tls-private-key-file "$st/pki/apiserver.key" \
    --client-ca-file "$st/pki/ca.crt" --token-auth-file "$st/pki/tokens.csv" \
    --requestheader-client-ca-file "$st/pki/ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --authorization-mode RBAC \
    --service-account-key-file "$st/pki/sa.pub" --service-account-signing-key-file "$st/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
    --cert-dir "$st/pki/generated" --profiling=false --v=1

  write_kubeconfig admin "$admin_token" "$st/admin.kubeconfig"
  write_kubeconfig system:kube-controller-manager "$kcm_token" "$st/kcm.kubeconfig"
  write_kubeconfig system:kube-scheduler "$sched_token" "$st/scheduler.kubeconfig"
  write_kubeconfig kwok "$kwok_token" "$st/kwok.kubeconfig"
  # The fixed path is written only once the API server is up, so its presence means "usable".
  local tmpkc="$CLUSTER_DIR/.kubeconfig.tmp"
  cp "$st/admin.kubeconfig" "$tmpkc"
  wait_for "kube-apiserver /readyz" kubectl --kubeconfig "$tmpkc" --request-timeout=5s get --raw /readyz ||
    { rm -f "$tmpkc"; cmd_down_locked; exit 1; }
  mv "$tmpkc" "$KUBECONFIG_PATH"
  log "kube-apiserver ready after $((SECONDS - started)) s"

  start kube-controller-manager kube-controller-manager \
    --kubeconfig "$st/kcm.kubeconfig" \
    --authentication-kubeconfig "$st/kcm.kubeconfig" --authorization-kubeconfig "$st/kcm.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$(port kcm)" --cert-dir "$st/pki/kcm" \
    --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$st/pki/sa.key" --root-ca-file "$st/pki/ca.crt" \
    --cluster-signing-cert-file "$st/pki/ca.crt" --cluster-signing-key-file "$st/pki/ca.key" \
    --controllers '*' --profiling=false --v=1 \
    --node-monitor-grace-period 5m
  # The grace period: kwok's fake Nodes never really fail, but on a 2-core machine under a full
  # test run kwok can post their heartbeats late; a NotReady flap would mark every Pod unready and
  # empty EndpointSlices in the middle of a failover test.

  start kube-scheduler kube-scheduler \
    --kubeconfig "$st/scheduler.kubeconfig" \
    --authentication-kubeconfig "$st/scheduler.kubeconfig" --authorization-kubeconfig "$st/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$(port scheduler)" --cert-dir "$st/pki/scheduler" \
    --leader-elect=false --profiling=false --v=1

  # Node Leases: without them kwok posts a Node's status once, at creation, and never heartbeats
  # again, so kube-controller-manager marks every Node NotReady one grace period after `up`.
  start kwok kwok --kubeconfig "$st/kwok.kubeconfig" \
    --node-lease-duration-seconds 40 \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr 10.244.0.1/16 --node-ip 127.0.0.1 \
    --server-address "127.0.0.1:$(port kwok)"

  create_nodes || { cmd_down_locked; exit 1; }
  wait_for "three Ready nodes" nodes_ready || { cmd_down_locked; exit 1; }
  log "nodes Ready after $((SECONDS - started)) s"
  wait_for "the default ServiceAccount" default_sa || { cmd_down_locked; exit 1; }
  if [ "$REAL_NODE" = 1 ]; then
    realnode_start || { log "the real node did not start; logs in $st/logs"; cmd_down_locked; exit 1; }
  fi

  if [ -n "${SMSC_CLUSTER_OWNER_PID:-}" ]; then
    # Stops the cluster when its owner (a test binary) exits, however it exits.
    SMSC_CLUSTER_DIR="$CLUSTER_DIR" setsid nohup bash -c \
      'while kill -0 "$1" 2>/dev/null && [ -f "$2" ]; do sleep 1; done; [ -f "$2" ] && exec "$3" down' \
      watchdog "$SMSC_CLUSTER_OWNER_PID" "$KUBECONFIG_PATH" "$here/cluster.sh" \
      >"$st/logs/watchdog.log" 2>&1 </dev/null 8>&- &
    echo $! >"$st/watchdog.pid"
  fi
  trap - INT TERM
  log "up in $((SECONDS - started)) s: $(kubectl version -o json --kubeconfig "$KUBECONFIG_PATH" 2>/dev/null |
    sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1), state $st"
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
}

stop_pid() {
  local name="$1" pid="$2" st="$3" deadline
  kill -0 "$pid" 2>/dev/null || return 0
  # Only signal a process that is ours: its command line names our state dir.
  grep -qF "$st" "/proc/$pid/cmdline" 2>/dev/null || { log "pid $pid ($name) is not ours; left alone"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then kill -KILL "$pid" 2>/dev/null || true; break; fi
    sleep 0.1
  done
}

cmd_down_locked() {
  local st name
  st="$(state_dir || true)"
  rm -f "$KUBECONFIG_PATH"
  if [ -n "$st" ] && [ -d "$st" ]; then
    # The real node first, while the API server can still drain it.
    realnode_stop || log "stopping the real node failed; see tools/realnode.sh leftovers"
    # The API server's clients first (together), then the API server, then etcd.
    local stoppers=()
    for name in kwok kube-scheduler kube-controller-manager; do
      if [ -f "$st/pids/$name.pid" ]; then
        stop_pid "$name" "$(cat "$st/pids/$name.pid")" "$st" &
        stoppers+=($!)
      fi
    done
    # Not a bare `wait`: after an interrupted `up` the components are children of this shell.
    [ ${#stoppers[@]} -eq 0 ] || wait "${stoppers[@]}" || true
    for name in kube-apiserver etcd; do
      if [ -f "$st/pids/$name.pid" ]; then stop_pid "$name" "$(cat "$st/pids/$name.pid")" "$st"; fi
    done
    if [ -f "$st/watchdog.pid" ] && [ "$(cat "$st/watchdog.pid")" != "$$" ]; then
      kill "$(cat "$st/watchdog.pid")" 2>/dev/null || true
    fi
    case "$st" in
      "${TMPDIR:-/tmp}"/smsc-cluster.*) rm -rf "$st" ;;
      *) log "not removing unexpected state dir $st" ;;
    esac
  fi
  rm -f "$CLUSTER_DIR/state"
}

# State left by a cluster that is not running (a killed run, a restarted machine): torn down,
# which puts back what its real node changed (sysctls, tables). Called with the lock held and
# all_alive false.
down_stale_locked() {
  [ -n "$(state_dir)" ] || return 0
  log "cleaning up a stale cluster"
  cmd_down_locked
}

# `up`'s clean-up on its own, before anything starts; a live cluster is kept.
cmd_clean() {
  [ -d "$CLUSTER_DIR" ] || return 0
  exec 8>"$CLUSTER_DIR/.lock"
  flock 8
  all_alive || down_stale_locked
}

cmd_down() {
  [ -d "$CLUSTER_DIR" ] || return 0
  exec 8>"$CLUSTER_DIR/.lock"
  flock 8
  [ -f "$CLUSTER_DIR/state" ] || { log "not running"; return 0; }
  cmd_down_locked
  # A per-test-process cluster dir (see tests/e2e) goes with its cluster.
  case "$(basename "$CLUSTER_DIR")" in cluster-test-*) rm -rf "$CLUSTER_DIR" ;; esac
  log "down"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  clean) cmd_clean ;;
  env)
    echo "export PATH=$BIN:\$PATH"
    echo "export KUBECONFIG=$KUBECONFIG_PATH"
    st="$(state_dir)"
    if [ -n "$st" ] && [ -f "$st/node/enabled" ]; then
      echo "export SMSC_CONTAINERD_ADDRESS=$st/node/containerd/containerd.sock"
    fi
    ;;
  status) is_up ;;
  *) echo "usage: tools/cluster.sh up|down|clean|env|status" >&2; exit 2 ;;
esac
