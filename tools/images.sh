#!/usr/bin/env bash
# The test bed's container images, built without a registry (none is reachable here):
#
#   tools/images.sh build           release binaries, a base image from Debian packages, then
#                                   localhost/smscd:dev (and :dev-b, same content),
#                                   localhost/smsc-operator:dev, localhost/smsc-redis:dev and
#                                   localhost/smsc-pause:3.10, each written as a docker-archive
#   tools/images.sh import ADDRESS  imports every archive into the containerd at socket ADDRESS,
#                                   namespace k8s.io (idempotent)
#   tools/images.sh names           the image references, one a line
#   tools/images.sh archives        the archive paths, one a line
#
# smscd and the operator are built from deploy/Dockerfile.* as published, with build arguments:
# BASE_IMAGE=localhost/smsc-base:dev (this script's stand-in for distroless cc-debian12:nonroot)
# and BINARY_STAGE=prebuilt (the binaries cargo just built on the host, so the Rust builder image
# is never pulled and the workspace is not compiled twice). Everything lives under
# $SMSC_CACHE/images: buildah's storage (vfs), the downloaded .debs, the build contexts, the
# archives, and a stamp per image keyed by its inputs, so a warm run rebuilds nothing.
# CARGO_TARGET_DIR is honoured.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SMSC_CACHE="${SMSC_CACHE:-$HOME/.cache/smsc-operator}"
C="$SMSC_CACHE/images"
TARGET="$(realpath -m "${CARGO_TARGET_DIR:-$REPO/target}")"
RELEASE="$TARGET/release"

BASE=localhost/smsc-base:dev
SMSCD=localhost/smscd:dev
SMSCD_B=localhost/smscd:dev-b
OPERATOR=localhost/smsc-operator:dev
REDIS=localhost/smsc-redis:dev
PAUSE=localhost/smsc-pause:3.10
# The Python standard library smscd's handlers import (asyncio, traceback, ...), and the shared
# libraries its C modules load on demand.
PYTHON_PACKAGES=(libpython3.11-minimal libpython3.11-stdlib media-types libffi8 libexpat1 zlib1g
  libbz2-1.0 liblzma5 libssl3 libuuid1 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libcrypt1)
# What `import` loads (the base is only a parent).
IMAGES=("$SMSCD" "$SMSCD_B" "$OPERATOR" "$REDIS" "$PAUSE")

# Part of every key: a change to this script or to tools/images/ rebuilds everything.
RECIPE="$(cat "$REPO/tools/images.sh" "$REPO"/tools/images/* | sha256sum | cut -c1-64)"

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf 'tools/images.sh: %s\n' "$*" >&2; exit 1; }

archive_of() { # localhost/smscd:dev-b -> $C/archives/smscd_dev-b.tar
  local ref="${1#localhost/}"
  printf '%s/archives/%s.tar' "$C" "${ref//:/_}"
}

# buildah with its own storage under the cache (nothing in /var/lib/containers): vfs needs no
# mounts and no kernel support, and these images are small.
buildah_env() {
  mkdir -p "$C/storage/root" "$C/storage/run" "$C/tmp" "$C/archives" "$C/stamps" "$C/debs" "$C/ctx"
  cat >"$C/storage.conf.new" <<EOF
[storage]
driver = "vfs"
graphroot = "$C/storage/root"
runroot = "$C/storage/run"
EOF
  mv "$C/storage.conf.new" "$C/storage.conf"
  export CONTAINERS_STORAGE_CONF="$C/storage.conf"
  export TMPDIR="$C/tmp"
}

image_id() { buildah images --noheading --no-trunc --format '{{.ID}}' "$1" 2>/dev/null | head -n1; }

hash_files() { cat "$@" | sha256sum | cut -c1-64; }

# --- Debian packages -------------------------------------------------------------------------

# Packages owning the shared libraries (and loader) the given ELF files need, per ldd. One dpkg
# call: Debian 12 is merged-/usr on disk, but dpkg records either /lib/... or /usr/lib/..., so
# every library is asked under both spellings (and its link target's).
packages_for() {
  local libs lib real cands=() owners found p
  libs="$(ldd "$@" | awk '/=> \//{print $3} /^\t\/[^ ]+ \(0x/{print $1}' | sort -u)"
  [ -n "$libs" ] || die "ldd names no libraries for $*"
  for lib in $libs; do
    real="$(realpath "$lib")"
    for p in "$lib" "$real"; do cands+=("/usr${p#/usr}" "${p#/usr}"); done
  done
  owners="$(dpkg -S "${cands[@]}" 2>/dev/null || true)"
  for lib in $libs; do
    real="$(realpath "$lib")"
    found=""
    for p in "/usr${lib#/usr}" "${lib#/usr}" "/usr${real#/usr}" "${real#/usr}"; do
      found="$(printf '%s\n' "$owners" | awk -v p="$p" '$NF == p { sub(/:.*/, "", $1); print $1; exit }')"
      [ -n "$found" ] && break
    done
    [ -n "$found" ] || die "no Debian package owns $lib (needed by $*)"
    echo "$found"
  done | sort -u
}

# Downloads the candidate version of each package into $C/debs (kept: a .deb is fetched once,
# checked against the archive's SHA256) and prints the .deb paths. One apt-get call to resolve,
# one to download what is missing.
fetch_debs() {
  local uris url file size hash missing=() paths=()
  if ! uris="$(apt-get download --print-uris "$@" 2>/dev/null | grep "^'")"; then
    log "apt-get update (no download URIs for $*)"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    uris="$(apt-get download --print-uris "$@" | grep "^'")" || die "apt cannot download $*"
  fi
  while read -r url file size hash; do
    paths+=("$C/debs/$file")
    if ! [ -f "$C/debs/$file" ] || [ "$(sha256sum "$C/debs/$file" | cut -c1-64)" != "${hash#SHA256:}" ]; then
      missing+=("${file%%_*}")
    fi
  done <<<"$uris"
  [ "${#paths[@]}" -eq "$#" ] || die "apt resolved ${#paths[@]} files for $# packages: $*"
  if [ "${#missing[@]}" -gt 0 ]; then
    log "downloading ${missing[*]}"
    (cd "$C/debs" && apt-get download -q -o APT::Sandbox::User=root "${missing[@]}" >/dev/null) \
      || die "apt-get download ${missing[*]} failed"
    while read -r url file size hash; do
      [ -f "$C/debs/$file" ] && [ "$(sha256sum "$C/debs/$file" | cut -c1-64)" = "${hash#SHA256:}" ] \
        || die "$file: missing or SHA256 mismatch after download"
    done <<<"$uris"
  fi
  printf '%s\n' "${paths[@]}"
}

# Unpacks .debs into DIR and drops what a container never reads (docs but the copyright files,
# man pages, init scripts, systemd units, lintian overrides).
unpack_debs() {
  local dir="$1"
  shift
  local deb
  for deb in "$@"; do dpkg-deb -x "$deb" "$dir"; done
  if [ -d "$dir/usr/share/doc" ]; then
    find "$dir/usr/share/doc" -type f ! -name copyright -delete
    find "$dir/usr/share/doc" -depth -type d -empty -delete
  fi
  rm -rf "$dir"/usr/share/{man,info,lintian,locale,bug,bash-completion,zsh,menu,gdb} \
    "$dir"/etc/{init.d,logrotate.d,default,systemd} "$dir"/{lib,usr/lib}/{systemd,tmpfiles.d}
}

passwd_lines() {
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin'
}
group_lines() { printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:'; }

# --- images ----------------------------------------------------------------------------------

# bud REF DOCKERFILE CONTEXT [buildah bud args...]
bud() {
  local ref="$1" file="$2" ctx="$3"
  shift 3
  buildah bud --quiet --isolation chroot --pull=never --layers=false \
    -f "$file" -t "$ref" "$@" "$ctx" >/dev/null
}

# built REF KEY: true when REF was built from KEY and is still in the store (and archived, when
# it is imported).
built() {
  local ref="$1" key="$2" name="${1#localhost/}"
  name="${name//[:\/]/_}"
  [ -f "$C/stamps/$name" ] && [ "$(cat "$C/stamps/$name")" = "$key" ] && [ -n "$(image_id "$ref")" ] || return 1
  [ "$ref" = "$BASE" ] || [ -f "$(archive_of "$ref")" ]
}
stamp() {
  local name="${1#localhost/}"
  printf '%s' "$2" >"$C/stamps/${name//[:\/]/_}"
}

archive() {
  local ref="$1" out
  out="$(archive_of "$ref")"
  rm -f "$out.tmp"
  buildah push --quiet "$ref" "docker-archive:$out.tmp:$ref" >/dev/null
  mv "$out.tmp" "$out"
}

build_base() {
  local pkgs out debs key ctx
  pkgs="$(packages_for "$RELEASE/smscd" "$RELEASE/smsc-operator")"
  # smscd embeds CPython (handlers): ldd finds libpython3.11; its standard library and the
  # libraries of the stdlib's C modules come as packages of their own.
  # shellcheck disable=SC2046 # one package name a word
  out="$(fetch_debs $(printf '%s\n' $pkgs ca-certificates netbase "${PYTHON_PACKAGES[@]}" | sort -u))"
  mapfile -t debs <<<"$out"
  key="$RECIPE $(basename -a "${debs[@]}" | sort | tr '\n' ' ')"
  if built "$BASE" "$key"; then return 0; fi
  log "building $BASE from $(basename -a "${debs[@]}" | tr '\n' ' ')"
  ctx="$C/ctx/base"
  rm -rf "$ctx"
  mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/home"
  unpack_debs "$ctx/rootfs" "${debs[@]}"
  # What ca-certificates' postinst (update-ca-certificates) would write: the one bundle rustls
  # and OpenSSL read. The individual files are then not needed.
  find "$ctx/rootfs/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | xargs cat \
    >"$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$ctx/rootfs/usr/share/ca-certificates" "$ctx/rootfs/usr/sbin/update-ca-certificates" \
    "$ctx/rootfs/etc/ca-certificates"
  # glibc's iconv modules (8 MB): neither Rust's std nor redis calls iconv.
  rm -rf "$ctx/rootfs/usr/lib/x86_64-linux-gnu/gconv"
  passwd_lines >"$ctx/rootfs/etc/passwd"
  group_lines >"$ctx/rootfs/etc/group"
  printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' 'services: files' \
    'protocols: files' >"$ctx/rootfs/etc/nsswitch.conf"
  chmod 1777 "$ctx/rootfs/tmp"
  bud "$BASE" "$REPO/tools/images/Dockerfile.base" "$ctx"
  rm -rf "$ctx"
  stamp "$BASE" "$key"
}

# build_rust REF BINARY DOCKERFILE
build_rust() {
  local ref="$1" bin="$2" file="$3" key ctx
  key="$RECIPE $(hash_files "$RELEASE/$bin" "$file") $(image_id "$BASE")"
  if built "$ref" "$key"; then return 0; fi
  log "building $ref"
  ctx="$C/ctx/$bin"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  # As the Dockerfiles' build stage does (CARGO_PROFILE_RELEASE_STRIP=debuginfo): the release
  # profile's debuginfo is for profiling on the host, ~110 MB an image does not need.
  strip --strip-debug -o "$ctx/$bin" "$RELEASE/$bin"
  bud "$ref" "$file" "$ctx" --build-arg "BASE_IMAGE=$BASE" --build-arg BINARY_STAGE=prebuilt \
    --build-arg PREBUILT_DIR=.
  rm -rf "$ctx"
  archive "$ref"
  stamp "$ref" "$key"
}

build_redis() {
  local server pkgs debs key ctx base_pkgs libs out p
  server="$(realpath /usr/bin/redis-server 2>/dev/null)" \
    || die "redis-server is not installed (tools/deps.sh apt)"
  base_pkgs="$(packages_for "$RELEASE/smscd" "$RELEASE/smsc-operator")"
  base_pkgs=" $(echo $base_pkgs) "
  libs="$(packages_for "$server")"
  pkgs=(redis-server redis-tools)
  for p in $libs; do
    [[ "$base_pkgs" == *" $p "* ]] || pkgs+=("$p")
  done
  out="$(fetch_debs "${pkgs[@]}")"
  mapfile -t debs <<<"$out"
  key="$RECIPE $(basename -a "${debs[@]}" | sort | tr '\n' ' ') $(image_id "$BASE")"
  if built "$REDIS" "$key"; then return 0; fi
  log "building $REDIS from $(basename -a "${debs[@]}" | tr '\n' ' ')"
  ctx="$C/ctx/redis"
  rm -rf "$ctx"
  mkdir -p "$ctx/rootfs" "$ctx/data"
  unpack_debs "$ctx/rootfs" "${debs[@]}"
  # redis-server, redis-cli (for exec probes) and redis-check-rdb (the binary redis-server links
  # to); no config file (the arguments say everything), no benchmark, no AOF checker.
  rm -rf "$ctx/rootfs/etc/redis" "$ctx/rootfs/var" "$ctx/rootfs/usr/bin/redis-benchmark" \
    "$ctx/rootfs/usr/bin/redis-check-aof"
  mkdir -p "$ctx/rootfs/etc"
  { passwd_lines; echo 'redis:x:999:999:redis:/data:/sbin/nologin'; } >"$ctx/rootfs/etc/passwd"
  { group_lines; echo 'redis:x:999:'; } >"$ctx/rootfs/etc/group"
  [ -x "$ctx/rootfs/usr/bin/redis-server" ] || die "no usr/bin/redis-server in ${pkgs[*]}"
  bud "$REDIS" "$REPO/tools/images/Dockerfile.redis" "$ctx" --build-arg "BASE_IMAGE=$BASE"
  rm -rf "$ctx"
  archive "$REDIS"
  stamp "$REDIS" "$key"
}

build_pause() {
  local src="$REPO/tools/images/pause.c" file="$REPO/tools/images/Dockerfile.pause" key ctx cc
  cc="${CC:-cc}"
  key="$RECIPE $(hash_files "$src" "$file") $("$cc" --version | head -n1)"
  if built "$PAUSE" "$key"; then return 0; fi
  log "building $PAUSE"
  ctx="$C/ctx/pause"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  "$cc" -Os -static -Wall -Wextra -Werror -o "$ctx/pause" "$src"
  strip "$ctx/pause"
  bud "$PAUSE" "$file" "$ctx"
  rm -rf "$ctx"
  archive "$PAUSE"
  stamp "$PAUSE" "$key"
}

cmd_build() {
  command -v buildah >/dev/null || die "buildah is not installed (tools/deps.sh realnode)"
  log "cargo build --release -p smscd -p smsc-operator --bins"
  (cd "$REPO" && cargo build --release -p smscd -p smsc-operator --bins)
  [ -x "$RELEASE/smscd" ] && [ -x "$RELEASE/smsc-operator" ] || die "no release binaries in $RELEASE"
  buildah_env
  exec 9>"$C/lock"
  flock 9
  build_base
  build_rust "$SMSCD" smscd "$REPO/deploy/Dockerfile.smscd"
  # The same image under a second tag, so a test can roll a Deployment by changing the tag.
  local key
  key="$(cat "$C/stamps/smscd_dev")"
  if ! built "$SMSCD_B" "$key"; then
    buildah tag "$SMSCD" "$SMSCD_B"
    archive "$SMSCD_B"
    stamp "$SMSCD_B" "$key"
  fi
  build_rust "$OPERATOR" smsc-operator "$REPO/deploy/Dockerfile.operator"
  build_redis
  build_pause
  # Old images replaced by a rebuild, and the multi-stage builds' intermediate stages (buildah
  # 1.28 leaves a working container behind for the instruction-less `FROM prebuilt AS binary`
  # stage). This storage is ours alone, and the lock is held.
  buildah rm --all >/dev/null
  buildah rmi --prune >/dev/null
  local ref
  for ref in "${IMAGES[@]}"; do
    log "$(printf '%-28s %s  %s' "$ref" "$(buildah images --noheading --format '{{.Size}}' "$ref" | head -n1)" "$(archive_of "$ref")")"
  done
}

cmd_import() {
  local addr="${1:-}" ref a
  [ -n "$addr" ] || die "usage: tools/images.sh import ADDRESS (containerd's socket)"
  [ -S "$addr" ] || die "$addr is not a socket (is containerd running?)"
  for ref in "${IMAGES[@]}"; do
    a="$(archive_of "$ref")"
    [ -f "$a" ] || die "no archive $a: run tools/images.sh build first"
  done
  for ref in "${IMAGES[@]}"; do
    ctr --address "$addr" -n k8s.io images import "$(archive_of "$ref")" >/dev/null \
      || die "ctr import of $ref into $addr failed"
  done
  log "imported ${IMAGES[*]} into $addr (namespace k8s.io)"
}

case "${1:-}" in
  build) cmd_build ;;
  import) cmd_import "${2:-}" ;;
  names) printf '%s\n' "${IMAGES[@]}" ;;
  archives) for ref in "${IMAGES[@]}"; do archive_of "$ref"; echo; done ;;
  *) echo "usage: tools/images.sh build | import ADDRESS | names | archives" >&2; exit 2 ;;
esac
