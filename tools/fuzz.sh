#!/usr/bin/env bash
# Bounded fuzzing of the SMPP decoder with cargo-fuzz (libFuzzer).
#   tools/fuzz.sh [SECONDS]     default 60
# cargo-fuzz is installed into $SMSC_CACHE/cargo-bin on first use. The stable toolchain is used
# with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags); no nightly download is needed.
set -euo pipefail
secs="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
SMSC_CACHE="${SMSC_CACHE:-$HOME/.cache/smsc-operator}"
bin="$SMSC_CACHE/cargo-bin"
if [ ! -x "$bin/bin/cargo-fuzz" ]; then
  echo "[fuzz] installing cargo-fuzz into $bin" >&2
  cargo install --quiet --locked --root "$bin" cargo-fuzz@0.13.2
fi
export PATH="$bin/bin:$PATH" RUSTC_BOOTSTRAP=1
cd "$root/crates/smpp"
corpus="$SMSC_CACHE/fuzz-corpus/decode"
mkdir -p "$corpus"
echo "[fuzz] fuzzing the decoder for ${secs}s (corpus: $corpus)" >&2
cargo fuzz run --sanitizer address decode "$corpus" -- -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048 2>&1 |
  tee "$SMSC_CACHE/fuzz-last.log" | grep -E "^(#[0-9]+.*(DONE|pulse)|Done|==[0-9]+==|SUMMARY|thread)" || true
grep -E "^Done [0-9]+ runs" "$SMSC_CACHE/fuzz-last.log" || { echo "[fuzz] fuzzing did not finish cleanly; see $SMSC_CACHE/fuzz-last.log" >&2; exit 1; }
