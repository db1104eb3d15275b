#!/usr/bin/env bash
# The test bed's real Node: containerd + runc, a kubelet and kube-proxy beside the kwok Nodes of
# tools/cluster.sh, so Pods really run (images built here by tools/images.sh; no registry).
# Measured facts behind every setting: docs/control-plane.md ("The real node").
#
# tools/cluster.sh sources this file and calls, with $st its state dir:
#   realnode_prepare         before kube-apiserver: certificates, the bridge, sysctls
#   realnode_apiserver_args  extra kube-apiserver flags (prints one per line)
#   realnode_start           after the API server: RBAC, containerd, images, kubelet, kube-proxy
#   realnode_stop            drain, stop, and remove everything the node left on the host
# and, standalone:
#   tools/realnode.sh baseline    what a real node changes, as the machine has it now (sysctls,
#                                 nftables tables); for `leftovers` to compare with
#   tools/realnode.sh leftovers [BASELINE]   exit 1 and list what a real node left on this machine
#
# Where things live: everything under $st/node (containerd root/state/socket, kubelet root and
# certs, CNI config and IPAM data, logs in $st/logs). containerd and the kubelet run in a private
# mount namespace whose root is rshared (mount propagation for Pods needs it, and the host's own
# mounts stay untouched); the few host paths the kubelet and containerd hard-code are bind-mounted
# from $st/node inside that namespace. What cannot be kept inside (iptables chains, the bridge,
# cgroups, VM-wide sysctls) is undone by realnode_stop and checked by `leftovers`.
#
# One real node per machine: the kubelet and kube-proxy use fixed ports (10250, 10248, 10249,
# 10256) and fixed iptables chain names.

REALNODE_NAME="${SMSC_REAL_NODE_NAME:-smsc-real-node}"
# The Pod network of the real node: a bridge in the root network namespace, its gateway address
# doubling as the node's InternalIP (the kubelet refuses a loopback node IP) and the address Pods
# reach the API server on. Apart from kwok's fake 10.244.0.0/16.
REALNODE_BRIDGE=smsc0
REALNODE_CIDR=10.245.0.0/24
REALNODE_IP=10.245.0.1
REALNODE_NFACCT="ct_state_invalid_dropped_pkts localhost_nps_accepted_pkts"
REALNODE_PAUSE_IMAGE="localhost/smsc-pause:3.10"
# Host paths the kubelet and containerd use whatever their flags say (measured).
REALNODE_HOST_PATHS=(/var/lib/kubelet/device-plugins /var/log/containers /var/log/pods /var/lib/cni /run/containerd)
# VM-wide sysctls the kubelet (protectKernelDefaults wants them set), kube-proxy and the CNI
# bridge plugin change; saved on prepare, put back on stop.
REALNODE_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)
REALNODE_KUBELET_SYSCTLS=(vm.overcommit_memory=1 vm.panic_on_oom=0 kernel.panic=10 kernel.panic_on_oops=1
  kernel.keys.root_maxkeys=1000000 kernel.keys.root_maxbytes=25000000)

rn_log() { printf '[real-node] %s\n' "$*" >&2; }

# Why the real node cannot run here, or nothing.
realnode_unavailable() {
  [ "$(id -u)" -eq 0 ] || { echo "not root"; return; }
  local b
  for b in containerd containerd-shim-runc-v2 runc ctr iptables iptables-save iptables-restore unshare nsenter ip; do
    command -v "$b" >/dev/null 2>&1 || { echo "$b is not installed (tools/deps.sh realnode)"; return; }
  done
  [ -x /usr/lib/cni/bridge ] || { echo "CNI plugins are missing (tools/deps.sh realnode)"; return; }
  for b in kubelet kube-proxy; do [ -x "$BIN/$b" ] || { echo "$BIN/$b is missing (make k8s-tools)"; return; }; done
  if ss -Hltn 2>/dev/null | awk '{print $4}' | grep -qE ':(10250|10248|10249|10256)$'; then
    echo "a kubelet or kube-proxy port (10250, 10248, 10249, 10256) is taken: another real node runs on this machine"
    return
  fi
  if ip link show "$REALNODE_BRIDGE" >/dev/null 2>&1; then
    echo "bridge $REALNODE_BRIDGE exists: another real node runs here, or one was not cleaned (tools/realnode.sh leftovers)"
    return
  fi
}

rn_cert() { # NAME CN O [SAN]
  local d="$st/pki" name="$1" cn="$2" o="$3" san="${4:-}" subj
  subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o/CN=$cn"
  openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$d/$name.key" -out "$d/$name.csr" 2>/dev/null
  {
    if [ -n "$san" ]; then echo "subjectAltName=$san"; echo "extendedKeyUsage=serverAuth,clientAuth"
    else echo "extendedKeyUsage=clientAuth"; fi
  } >"$d/$name.ext"
  openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 3650 \
    -extfile "$d/$name.ext" -out "$d/$name.crt" 2>/dev/null
}

# A kubeconfig authenticating with the client certificate $st/pki/CERT.{crt,key}.
rn_kubeconfig() { # FILE USER CERT
  kubeconfig_with "$2" "$1" "client-certificate: $st/pki/$3.crt
    client-key: $st/pki/$3.key"
}

realnode_prepare() {
  local n="$st/node"
  mkdir -p "$n"/{containerd,kubelet,cni/net.d,cni/ipam,kube-proxy,host} "$st/logs"
  touch "$n/enabled"
  rn_cert kubelet "system:node:$REALNODE_NAME" system:nodes
  rn_cert kube-proxy system:kube-proxy ""
  rn_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  # Saved once: a second prepare (a retried up) must not save the values we set ourselves.
  [ -f "$n/baseline" ] || realnode_baseline >"$n/baseline"
  # The bridge exists before the kubelet starts: its address is the node IP the kubelet checks.
  ip link add "$REALNODE_BRIDGE" type bridge
  ip addr add "$REALNODE_IP/${REALNODE_CIDR#*/}" dev "$REALNODE_BRIDGE"
  ip link set "$REALNODE_BRIDGE" up
  # The kubelet runs with protectKernelDefaults: true, so it changes no sysctl itself; it checks
  # these and refuses to start when they differ. They go back on stop.
  sysctl -q -w "${REALNODE_KUBELET_SYSCTLS[@]}" net.ipv4.ip_forward=1
}

realnode_apiserver_args() {
  # Pods reach the API server through the `kubernetes` Service, whose endpoint is the advertised
  # address: the bridge gateway. So it listens on every address (tokens and certificates still
  # guard it) and keeps the Service's endpoint itself (lease reconciler).
  printf '%s\n' --bind-address 0.0.0.0 --advertise-address "$REALNODE_IP" \
    --endpoint-reconciler-type lease \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --kubelet-client-certificate "$st/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$st/pki/apiserver-kubelet-client.key"
}

rn_write_configs() {
  local n="$st/node" d="$st/node/containerd"
  cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$REALNODE_PAUSE_IMAGE"
  # Without CAP_SYS_RESOURCE a negative oom_score_adj is refused and every sandbox fails.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$n/cni/net.d"
    max_conf_num = 1
EOF
  cat >"$n/cni/net.d/10-smsc.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "smsc-pods",
  "plugins": [
    {"type": "bridge", "bridge": "$REALNODE_BRIDGE", "isGateway": true, "ipMasq": true,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$n/cni/ipam",
              "ranges": [[{"subnet": "$REALNODE_CIDR", "gateway": "$REALNODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
  # No cluster DNS here: Pods resolve nothing beyond /etc/hosts (tests use Service IPs).
  : >"$n/kubelet/resolv.conf"
  rn_kubeconfig "$n/kubelet/kubeconfig" "system:node:$REALNODE_NAME" kubelet
  rn_kubeconfig "$n/kube-proxy/kubeconfig" system:kube-proxy kube-proxy
  cat >"$n/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Hybrid cgroups, no systemd: cgroup v1 through cgroupfs (this version refuses v1 by default).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
containerRuntimeEndpoint: unix://$d/containerd.sock
# The sysctls it wants are set before it starts (tools/realnode.sh), so it changes none itself.
protectKernelDefaults: true
oomScoreAdj: 0
failSwapOn: false
address: $REALNODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
podCIDR: $REALNODE_CIDR
podLogsDir: $n/pod-logs
resolvConf: $n/kubelet/resolv.conf
# ConfigMap projections reach Pods within ~15 s.
syncFrequency: 10s
maxPods: 40
serializeImagePulls: false
# Images are imported, never pulled: never collect them, evict only when really out of room.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
registerWithTaints:
- {key: smsc.io/real-node, value: "true", effect: NoSchedule}
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $st/pki/ca.crt}
authorization: {mode: Webhook}
EOF
}

rn_pid() { cat "$st/pids/$1.pid" 2>/dev/null; }

rn_ctr() { ctr --address "$st/node/containerd/containerd.sock" -n k8s.io "$@"; }

rn_node_ready() {
  [ "$(kc get node "$REALNODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

realnode_start() {
  local n="$st/node" t0=$SECONDS
  rn_write_configs
  # The kubelet's identity: the API server has no Node authorizer, so RBAC grants system:node.
  kc apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: smsc-test:nodes}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:nodes"}
EOF
  # The private, rshared mount namespace; the hard-coded host paths bind-mounted from $n/host.
  # Mount points the host lacks are created and listed in $n/created-dirs for stop to remove.
  local binds="" p
  : >"$n/created-dirs"
  for p in "${REALNODE_HOST_PATHS[@]}"; do
    if [ ! -d "$p" ]; then
      local q="$p"
      while [ ! -d "$(dirname "$q")" ]; do q="$(dirname "$q")"; done
      mkdir -p "$p"
      echo "$q" >>"$n/created-dirs"
    fi
    mkdir -p "$n/host$p"
    binds+="mount --bind '$n/host$p' '$p' && "
  done
  start containerd unshare --mount --propagation unchanged sh -c \
    "mount --make-rshared / && ${binds} exec containerd --config '$n/containerd/config.toml'"
  wait_for "containerd" rn_ctr version || return 1
  rn_log "containerd up after $((SECONDS - t0)) s"
  # The Pod sandbox image (and whatever else tools/images.sh built) before any Pod starts.
  SMSC_CACHE="$SMSC_CACHE" "$here/images.sh" import "$n/containerd/containerd.sock" >>"$st/logs/images.log" 2>&1 ||
    { rn_log "importing images failed; see $st/logs/images.log"; tail -n 5 "$st/logs/images.log" >&2; return 1; }
  rn_ctr images check "name==$REALNODE_PAUSE_IMAGE" 2>/dev/null | grep -q complete ||
    { rn_log "the pause image $REALNODE_PAUSE_IMAGE is not in containerd (tools/images.sh build)"; return 1; }
  start kubelet nsenter -m -t "$(rn_pid containerd)" -- "$BIN/kubelet" \
    --config "$n/kubelet/config.yaml" --kubeconfig "$n/kubelet/kubeconfig" \
    --hostname-override "$REALNODE_NAME" --node-ip "$REALNODE_IP" \
    --node-labels "smsc.io/real-node=true,topology.kubernetes.io/zone=zone-real,topology.kubernetes.io/region=local" \
    --root-dir "$n/kubelet/root" --cert-dir "$n/kubelet/pki" --v=1
  start kube-proxy "$BIN/kube-proxy" --kubeconfig "$n/kube-proxy/kubeconfig" \
    --hostname-override "$REALNODE_NAME" --proxy-mode iptables --cluster-cidr "$REALNODE_CIDR" \
    --nodeport-addresses 127.0.0.0/8 --iptables-localhost-nodeports=true \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0 \
    --oom-score-adj 0 --healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249 --v=1
  wait_for "the real node Ready" rn_node_ready || return 1
  rn_log "real node $REALNODE_NAME Ready after $((SECONDS - t0)) s"
}

# Only signal processes whose command line names our state dir (nsenter's child is the kubelet
# itself: nsenter execs it).
rn_our_pids() { # PATTERN
  local p
  for p in $(pgrep -f "$1" 2>/dev/null); do
    grep -qF "$st" "/proc/$p/cmdline" 2>/dev/null && echo "$p"
  done
}

rn_running_tasks() { [ -n "$(rn_ctr tasks ls -q 2>/dev/null)" ]; }

realnode_stop() {
  local n="$st/node"
  [ -f "$n/enabled" ] || return 0
  # 1. Drain while the API server and the kubelet still run: the kubelet stops every Pod through
  #    CRI, so each sandbox's network is torn down by CNI (addresses, portmap rules).
  if [ -n "$(rn_pid kubelet)" ] && kill -0 "$(rn_pid kubelet)" 2>/dev/null && kc get node "$REALNODE_NAME" >/dev/null 2>&1; then
    kc cordon "$REALNODE_NAME" >/dev/null 2>&1 || true
    kc delete pods -A --field-selector "spec.nodeName=$REALNODE_NAME" --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 30))
    while rn_running_tasks && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
    kc delete node "$REALNODE_NAME" --wait=false >/dev/null 2>&1 || true
  fi
  # 2. Stop the node's processes; whatever still runs in a Pod cgroup is killed.
  local name
  for name in kube-proxy kubelet; do
    [ -n "$(rn_pid $name)" ] && stop_pid "$name" "$(rn_pid $name)" "$st"
  done
  rn_kill_pod_cgroups
  for p in $(rn_our_pids containerd-shim); do kill -KILL "$p" 2>/dev/null || true; done
  [ -n "$(rn_pid containerd)" ] && stop_pid containerd "$(rn_pid containerd)" "$st"
  # The mount namespace died with its last process, and with it every mount and netns bind mount.
  # 3. What lives outside it.
  "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  rn_clean_iptables
  rn_clean_cgroups
  ip link del "$REALNODE_BRIDGE" >/dev/null 2>&1 || true
  # kube-proxy's packet counters (nfacct objects; `--cleanup` leaves them).
  if command -v nfacct >/dev/null 2>&1; then
    for p in $REALNODE_NFACCT; do nfacct del "$p" >/dev/null 2>&1 || true; done
  fi
  if [ -f "$n/baseline" ]; then
    local kv
    sed -n 's/^sysctl //p' "$n/baseline" | while IFS= read -r kv; do
      sysctl -q -w "$kv" >/dev/null 2>&1 || rn_log "could not restore $kv"
    done
    rn_clean_nft_tables "$n/baseline"
  fi
  if [ -f "$n/created-dirs" ]; then
    while IFS= read -r d; do case "$d" in /var/*|/run/*) rm -rf "$d" ;; esac; done <"$n/created-dirs"
  fi
  rm -f "$n/enabled"
}

# Every process in a kubepods cgroup (v1 hierarchies; cgroupfs driver) is a container of ours.
rn_kill_pod_cgroups() {
  local f p
  for f in /sys/fs/cgroup/*/kubepods*/ /sys/fs/cgroup/unified/kubepods*/; do
    [ -d "$f" ] || continue
    find "$f" -name cgroup.procs 2>/dev/null | while read -r p; do
      xargs -r kill -KILL <"$p" 2>/dev/null || true
    done
  done
}

rn_clean_cgroups() {
  local f i
  for i in 1 2 3 4 5; do
    for f in /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/unified/kubepods*; do
      [ -d "$f" ] || continue
      find "$f" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    ls -d /sys/fs/cgroup/*/kubepods* >/dev/null 2>&1 || return 0
    sleep 0.2
  done
}

# kube-proxy's, the kubelet's and the CNI plugins' chains (KUBE-*, CNI-*) and every rule that
# names them or the node's Pod CIDR, removed table by table in one iptables-restore each.
rn_clean_iptables() {
  local save restore t cidr_re
  cidr_re="${REALNODE_CIDR%/*}"; cidr_re="${cidr_re%.*}"; cidr_re="${cidr_re//./\\.}\\."
  for save in iptables-save ip6tables-save; do
    restore="${save%-save}-restore"
    command -v "$save" >/dev/null 2>&1 || continue
    for t in filter nat mangle raw; do
      local cur new
      cur="$($save -t "$t" 2>/dev/null)" || continue
      echo "$cur" | grep -qE 'KUBE-|CNI-|'"$cidr_re" || continue
      new="$(echo "$cur" | grep -vE '^:(KUBE-|CNI-)|^-A (KUBE-|CNI-)|-j (KUBE-|CNI-)|-g (KUBE-|CNI-)|'"$cidr_re")"
      echo "$new" | $restore -w 5 -T "$t" 2>/dev/null || rn_log "could not clean $save table $t"
    done
  done
}

# What a real node changes on the machine, as it is now: `sysctl key=value` for each sysctl it
# touches, `table FAMILY NAME` for each nftables table (iptables-nft makes them on first use).
realnode_baseline() {
  local k
  for k in "${REALNODE_SYSCTLS[@]}"; do
    [ -e "/proc/sys/${k//.//}" ] && echo "sysctl $k=$(sysctl -n "$k")"
  done
  if command -v nft >/dev/null 2>&1; then nft list tables 2>/dev/null; fi
}

# Tables iptables-nft created for the node's chains, now empty: gone, unless they were there before.
rn_clean_nft_tables() { # BASELINE
  command -v nft >/dev/null 2>&1 || return 0
  local fam name
  nft list tables 2>/dev/null | while read -r _ fam name; do
    grep -qxF "table $fam $name" "$1" && continue
    # Only base chains and no rule: nothing of anyone's.
    nft list table "$fam" "$name" 2>/dev/null | grep -qvE '^\s*(table|chain|type|policy|\}|$)' && continue
    nft delete table "$fam" "$name" 2>/dev/null || rn_log "could not delete nftables table $fam $name"
  done
}

# What a real node may leave on this machine; empty output when nothing. [BASELINE]: a file from
# `realnode.sh baseline` taken before `up`, to check the sysctls and tables came back.
realnode_leftovers() {
  local p t save
  for p in $(pgrep -f 'containerd|kubelet|kube-proxy' 2>/dev/null); do
    grep -qF 'smsc-cluster.' "/proc/$p/cmdline" 2>/dev/null && echo "process $p: $(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-120)"
  done
  for p in $(pgrep -f 'containerd-shim' 2>/dev/null); do echo "process $p: a containerd shim"; done
  grep -hE 'smsc-cluster\.|/var/lib/kubelet|/run/containerd|/var/lib/cni|/var/log/(containers|pods)' /proc/[0-9]*/mountinfo 2>/dev/null |
    awk '{print "mount: "$5}' | sort -u
  ls -d /sys/fs/cgroup/*/kubepods* 2>/dev/null | sed 's/^/cgroup: /'
  for save in iptables-save ip6tables-save; do
    command -v "$save" >/dev/null 2>&1 || continue
    for t in filter nat mangle raw; do
      $save -t "$t" 2>/dev/null | grep -E '^:(KUBE-|CNI-)|10\.245\.' | sed "s/^/$save -t $t: /"
    done
  done
  ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep -E "^($REALNODE_BRIDGE|veth)" | sed 's/^/link: /'
  ls /run/netns 2>/dev/null | grep -E '^cni-' | sed 's/^/netns: /'
  if command -v nfacct >/dev/null 2>&1; then
    for p in $REALNODE_NFACCT; do nfacct get "$p" >/dev/null 2>&1 && echo "nfacct: $p"; done
  fi
  if [ -n "${1:-}" ] && [ -f "$1" ]; then
    realnode_baseline | diff - "$1" | sed -n 's/^< sysctl /sysctl changed: /p; s/^< table /nftables table added: /p'
  fi
  true
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    baseline) realnode_baseline ;;
    leftovers)
      out="$(realnode_leftovers "${2:-}")"
      if [ -n "$out" ]; then echo "$out"; exit 1; fi
      ;;
    *) echo "usage: tools/realnode.sh baseline | leftovers [BASELINE]   (the rest is sourced by tools/cluster.sh)" >&2; exit 2 ;;
  esac
fi
