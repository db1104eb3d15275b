#!/usr/bin/env bash
# A profile of smscd's hot path under the load generator: perf samples of the server process
# during one bench.sh run, folded and drawn as a flamegraph (inferno), plus the top symbols.
#
#   tools/profile.sh [SCENARIO] [CELL]     SCENARIO: term (default) or relay; CELL binds:window (1:64)
#
# Output in target/profile/: <scenario>.svg (open in a browser), <scenario>.folded, <scenario>-top.txt.
# Needs perf (Debian linux-perf, installed here when missing) and perf_event_paranoid <= 2;
# inferno is installed into $SMSC_CACHE/cargo-bin on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCENARIO=${1:-term}
CELL=${2:-1:64}
SMSC_CACHE=${SMSC_CACHE:-$HOME/.cache/smsc-operator}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/profile
mkdir -p "$OUT"

if ! command -v perf >/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends linux-perf >/dev/null
fi
bin=$SMSC_CACHE/cargo-bin/bin
if [[ ! -x $bin/inferno-flamegraph ]]; then
  cargo install --quiet --locked --root "$SMSC_CACHE/cargo-bin" inferno@0.12.8
fi

case $SCENARIO in
  term) scen=term label=term ;;
  relay) scen=relay label=relay-memory ;;
  *) echo "tools/profile.sh: scenario must be term or relay" >&2; exit 2 ;;
esac
b=${CELL%%:*} w=${CELL##*:}
rm -f "$OUT"/perf-*.data
BENCH_PERF=1 BENCH_RUNS=1 BENCH_SECS=${BENCH_SECS:-4} BENCH_SCENARIOS=$scen BENCH_CELLS=$CELL \
  BENCH_OUT=$OUT tools/bench.sh | tail -n 3
data=$OUT/perf-$label-${b}x$w.data
perf script -i "$data" 2>/dev/null | "$bin/inferno-collapse-perf" >"$OUT/$SCENARIO.folded"
"$bin/inferno-flamegraph" --title "smscd $SCENARIO ${b}x$w" <"$OUT/$SCENARIO.folded" >"$OUT/$SCENARIO.svg"
top() { # top N perf-report-args...: the first N sample lines of a flat report
  local n=$1; shift
  perf report -i "$data" --no-children -g none --stdio "$@" 2>/dev/null | grep '%' | head -n "$n" || true
}
{
  echo "== share of samples by object (kernel, libc, smscd itself)"
  top 8 --sort dso
  echo "== top symbols"
  top 30 --sort dso,sym
} >"$OUT/$SCENARIO-top.txt"
cat "$OUT/$SCENARIO-top.txt"
echo "== flamegraph: $OUT/$SCENARIO.svg"
