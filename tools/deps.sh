#!/usr/bin/env bash
# Installs what the test tiers, the demo and the benchmarks need, idempotently.
# Everything that is not a Debian package lives under $SMSC_CACHE (default ~/.cache/smsc-operator),
# outside the clone, so a fresh clone on a used machine reuses it and CI installs it on a new one.
#
#   tools/deps.sh [apt|realnode|python|node|rust|all]...
#
# Each step leaves a stamp keyed by the list of packages it installed, so re-running is cheap.
set -euo pipefail

SMSC_CACHE="${SMSC_CACHE:-$HOME/.cache/smsc-operator}"
mkdir -p "$SMSC_CACHE/stamps"

# python3.11 + libpython3.11-dev: smscd embeds CPython for its handlers (PyO3 links libpython3.11).
APT_PACKAGES=(redis-server kannel python3.11 libpython3.11-dev)
# The test bed's real node (tools/realnode.sh) and the images it runs (tools/images.sh).
REALNODE_PACKAGES=(containerd runc containernetworking-plugins buildah iptables conntrack nfacct nftables)
PY_PACKAGES=(smpplib==2.2.4 smpp34==1.5.0 requests==2.32.3)
NODE_PACKAGES=(smpp@0.5.1)

log() { printf '[deps] %s\n' "$*" >&2; }

stamp_ok() { [ -f "$SMSC_CACHE/stamps/$1" ] && [ "$(cat "$SMSC_CACHE/stamps/$1")" = "$2" ]; }
stamp_set() { printf '%s' "$2" >"$SMSC_CACHE/stamps/$1"; }

deps_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  # The packages' own services are not wanted: tests start redis-server/bearerbox themselves.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for svc in redis-server kannel containerd; do
    $sudo service "$svc" stop >/dev/null 2>&1 || true
  done
}

deps_python() {
  local venv="$SMSC_CACHE/venv"
  local key="${PY_PACKAGES[*]}"
  if [ -x "$venv/bin/python" ] && stamp_ok python "$key"; then return 0; fi
  log "installing Python packages into $venv: $key"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  stamp_set python "$key"
}

deps_node() {
  local dir="$SMSC_CACHE/node"
  local key="${NODE_PACKAGES[*]}"
  if [ -d "$dir/node_modules" ] && stamp_ok node "$key"; then return 0; fi
  log "installing npm packages into $dir: $key"
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || printf '{"name":"smsc-operator-peers","private":true}\n' >"$dir/package.json"
  (cd "$dir" && npm install --silent --no-audit --no-fund "${NODE_PACKAGES[@]}" >/dev/null)
  stamp_set node "$key"
}

deps_rust() {
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
}

[ $# -eq 0 ] && set -- all
for step in "$@"; do
  case "$step" in
    apt) deps_apt "${APT_PACKAGES[@]}" ;;
    realnode) deps_apt "${REALNODE_PACKAGES[@]}" ;;
    python) deps_python ;;
    node) deps_node ;;
    rust) deps_rust ;;
    all) deps_rust; deps_apt "${APT_PACKAGES[@]}" "${REALNODE_PACKAGES[@]}"; deps_python; deps_node ;;
    *) echo "tools/deps.sh: unknown step '$step' (apt|realnode|python|node|rust|all)" >&2; exit 2 ;;
  esac
done
