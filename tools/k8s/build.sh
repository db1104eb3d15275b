#!/usr/bin/env bash
# Builds the test control plane from the Go module proxy, once per version, into a cache outside
# the clone:  $SMSC_CACHE/k8s/<KUBE_VERSION>/bin  (SMSC_CACHE defaults to ~/.cache/smsc-operator).
#
#   tools/k8s/build.sh               build what is missing or stale (a no-op when cached)
#   tools/k8s/build.sh --bin-dir     print the bin dir and exit
#   tools/k8s/build.sh kwok helm     only these components (kubernetes|etcd|kwok|helm)
#
# Each Go module here builds one component; they are separate because their dependency versions
# clash (kwok and helm pin other k8s.io/* versions than Kubernetes itself). A component is rebuilt
# only when its go.mod/go.sum, its version in versions.env, the Go version or BUILD_REVISION
# change (a stamp per component).
# Builds run with -p 2 under `nice -n 10`: the machine has two cores shared with Rust builds.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=/dev/null
. "$here/versions.env"

SMSC_CACHE="${SMSC_CACHE:-$HOME/.cache/smsc-operator}"
BIN="$SMSC_CACHE/k8s/$KUBE_VERSION/bin"
if [ "${1:-}" = "--bin-dir" ]; then echo "$BIN"; exit 0; fi

export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
# Go's own defaults (~/go/pkg/mod, ~/.cache/go-build) are outside the clone; keep them unless set.
mkdir -p "$BIN"
log() { printf '[k8s-tools] %s\n' "$*" >&2; }

components=("$@")
[ ${#components[@]} -eq 0 ] && components=(etcd kubernetes kwok helm)

binaries_of() {
  case "$1" in
    kubernetes) echo "kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy" ;;
    etcd) echo "etcd" ;;
    kwok) echo "kwok" ;;
    helm) echo "helm" ;;
    *) log "unknown component '$1' (kubernetes|etcd|kwok|helm)"; exit 2 ;;
  esac
}

# Bump when the way a component is built changes (flags, ldflags), to rebuild cached binaries.
BUILD_REVISION=1

version_of() {
  case "$1" in
    kubernetes) echo "$KUBE_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
  esac
}

# What a component's binaries depend on: the Go version, its pinned version and its module.
stamp_of() {
  { go version; echo "rev $BUILD_REVISION $1 $(version_of "$1")"; cat "$here/$1/go.mod" "$here/$1/go.sum"; } |
    sha256sum | cut -d' ' -f1
}

build_component() {
  local c="$1" ldflags="-s -w" pkgs=() out
  case "$c" in
    kubernetes)
      local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
      local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
      done
      pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
        k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy) ;;
    etcd)
      ldflags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}"
      pkgs=(go.etcd.io/etcd/server/v3) ;;
    kwok)
      pkgs=(sigs.k8s.io/kwok/cmd/kwok) ;;
    helm)
      ldflags+=" -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
      pkgs=(helm.sh/helm/v3/cmd/helm) ;;
  esac
  out="$(mktemp -d "$BIN/.build-$c.XXXXXX")"
  log "building $c (${pkgs[*]}) -> $BIN"
  local dest="$out/"
  # One package: name the binary (etcd's main package is its module root, which go would call "server").
  [ ${#pkgs[@]} -eq 1 ] && dest="$out/$(binaries_of "$c")"
  (cd "$here/$c" && nice -n 10 go build -p 2 -trimpath -ldflags "$ldflags" -o "$dest" "${pkgs[@]}")
  for b in $(binaries_of "$c"); do
    [ -x "$out/$b" ] || { log "build of $c produced no $b"; exit 1; }
    mv -f "$out/$b" "$BIN/$b"
  done
  rmdir "$out" 2>/dev/null || rm -rf "$out"
}

# One build at a time per cache (make test and a test binary may both ask).
exec 9>"$BIN/.lock"
flock 9
for c in "${components[@]}"; do
  bins="$(binaries_of "$c")"
  want="$(stamp_of "$c")"
  ok=1
  for b in $bins; do [ -x "$BIN/$b" ] || ok=0; done
  if [ $ok = 1 ] && [ -f "$BIN/.$c.stamp" ] && [ "$(cat "$BIN/.$c.stamp")" = "$want" ]; then
    continue
  fi
  start=$SECONDS
  build_component "$c"
  printf '%s' "$want" >"$BIN/.$c.stamp"
  log "built $c in $((SECONDS - start)) s"
done
