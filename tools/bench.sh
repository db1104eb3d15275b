#!/usr/bin/env bash
# `make bench` scenarios for the load generator (crates/smsc-bench); figures go to
# $BENCH_OUT/results.jsonl (one JSON report per run) and $BENCH_OUT/summary.md (medians).
# See docs/benchmarks.md for what each scenario measures.
#
#   BENCH_SECS   sending phase per run, seconds (default 5)
#   BENCH_RUNS   runs per cell; the summary takes the median (default 3)
#   BENCH_SCENARIOS  which of: term peers relay redis redis-ha latency mix saf http handlers (default: all)
#   BENCH_HA_CELLS   binds:window cells of redis-ha (Sentinel with and without WAIT, Cluster;
#                default 4:64, the single-instance headline cell)
#   BENCH_REDIS_EXTRA  YAML appended to the redis scenario's two relay configs
#   BENCH_SAF_DESTINATIONS  distinct destination numbers of the saf scenario's messages (default
#                1000: traffic to many subscribers; 1 measures one destination's in-order drain)
#   BENCH_GEN_CPUS / BENCH_SRV_CPUS  taskset cpu lists for the generator and the server under
#                test in single-server scenarios (default: empty, no pinning: on the shared
#                2-core box pinning cost up to 20x, see docs/benchmarks.md; e.g. 0 and 1 on a quiet one)
#
#   BENCH_PERF   set (by tools/profile.sh) to record a perf profile of the server per run
#   BENCH_PORT_BASE  first of the 100 loopback ports used (default 27700), so two engineers
#                can benchmark at once
#
# Everything listens on 127.0.0.1 ports BENCH_PORT_BASE..+99 and is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${BENCH_SECS:-5}
RUNS=${BENCH_RUNS:-3}
SCENARIOS=${BENCH_SCENARIOS:-term peers relay redis redis-ha latency mix saf http handlers}
GEN_CPUS=${BENCH_GEN_CPUS-}
SRV_CPUS=${BENCH_SRV_CPUS-}
P=${BENCH_PORT_BASE:-27700}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${BENCH_OUT:-$TARGET/bench}
NODE_MODULES=${SMSC_CACHE:-$HOME/.cache/smsc-operator}/node/node_modules
CELLS=${BENCH_CELLS:-"1:1 1:64 1:256 4:64"} # binds:window
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
CFG=$OUT/cfg
mkdir -p "$CFG"

has() { [[ " $SCENARIOS " == *" $1 "* ]]; }

echo "== build (release)"
cargo build --release -q -p smscd -p smsc-bench
# Only the peers scenario runs it (a separate build: not worth its minutes otherwise).
if has peers; then
  CARGO_TARGET_DIR=$TARGET/bench-peers cargo build --release -q --manifest-path tools/bench/smpp34-smsc/Cargo.toml
fi
BIN=$TARGET/release
SMPP34=$TARGET/bench-peers/release/smpp34-smsc

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

pin() { # pin CPUS cmd...: taskset when CPUS is non-empty
  local cpus=$1; shift
  if [[ -n $cpus ]] && command -v taskset >/dev/null; then taskset -c "$cpus" "$@"; else "$@"; fi
}

wait_port() { # bounded: 10 s
  local port=$1
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "port $port did not open" >&2
  return 1
}

start() { # start NAME CPUS cmd...: background, logs in $OUT/NAME.log; sets LAST_PID (the server's own pid)
  local name=$1 cpus=$2; shift 2
  if [[ -n $cpus ]] && command -v taskset >/dev/null; then
    taskset -c "$cpus" "$@" >"$OUT/$name.log" 2>&1 &
  else
    "$@" >"$OUT/$name.log" 2>&1 &
  fi
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

smscd_cfg() { # smscd_cfg FILE PORT ADMIN_PORT CHAIN [extra yaml]
  cat >"$1" <<EOF
server: { bind_address: "127.0.0.1", port: $2 }
admin: { bind_address: "127.0.0.1", port: $3 }
accounts:
  - { system_id: bench, password: benchpw, window: 1024 }
  - { system_id: relay, password: relaypw, window: 1024 }
routing: { default_chain: [$4] }
sim: { receipt_delay_ms: 0 }
${5:-}
EOF
}

# gen SCENARIO SERVER_PID binds window [smsc-bench args...]: RUNS runs appended to results.jsonl
gen() {
  local scenario=$1 spid=$2 binds=$3 window=$4; shift 4
  for run in $(seq 1 "$RUNS"); do
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    local perf_pid=""
    if [[ -n ${BENCH_PERF:-} ]]; then
      # tools/profile.sh: sample the server under test for the sending phase (DWARF unwinding:
      # release builds keep line tables, not frame pointers).
      perf record -q -F "${BENCH_PERF_HZ:-999}" --call-graph dwarf,16384 -p "$spid" \
        -o "$OUT/perf-$scenario-${binds}x$window.data" -- sleep "$SECS" 2>>"$OUT/perf.log" &
      perf_pid=$!
    fi
    pin "$GEN_CPUS" "$BIN/smsc-bench" esme --binds "$binds" --window "$window" --duration "$SECS" \
      --server-pid "$spid" --json "$@" 2>>"$OUT/gen.log" |
      jq -c --arg s "$scenario" --argjson r "$run" --argjson l "$load" '. + {scenario: $s, run: $r, load1: $l}' \
        >>"$RESULTS" || echo "  (run failed, see $OUT/gen.log)"
    if [[ -n $perf_pid ]]; then wait "$perf_pid" || true; fi
    tail -n 1 "$OUT/gen.log" | cut -c1-220
  done
}

median_rate() { # median submit_sm/s of SCENARIO TARGET BINDS WINDOW
  jq -s --arg s "$1" --arg t "$2" --argjson b "$3" --argjson w "$4" \
    '[.[] | select(.scenario==$s and .target==$t and .binds==$b and .window==$w and .rate_target==null)
      | .submit_sm_per_sec] | sort | if length==0 then 0 else .[(length-1)/2|floor] end' "$RESULTS"
}

# A leftover server on one of our ports would be measured instead of the one started here.
for off in 0 1 10 20 30 31 40 41 42 43 50 51 52 53 54 55 60 61 62 63 64 65 70 71 72 73 74 75 80 81 82 83 84 85 86 87 90 91; do
  port=$((P + off))
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "127.0.0.1:$port is already in use: stop whatever listens there first" >&2
    exit 1
  fi
done

echo "== machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), load $(cut -d' ' -f1-3 /proc/loadavg)"

# 1 + 4: terminating smscd (sim, no receipts) and the peers, cell by cell so the ratios come
# from the same minutes of machine load.
if has term || has peers || has latency || has mix; then
  smscd_cfg "$CFG/term.yaml" $((P + 0)) $((P + 1)) '"sim"'
  start smscd-term "$SRV_CPUS" "$BIN/smscd" --config "$CFG/term.yaml" --log-level warn
  SMSCD=$LAST_PID
  wait_port $((P + 0))
  if has peers; then
    start smpp34 "$SRV_CPUS" "$SMPP34" $((P + 10))
    P34=$LAST_PID
    # stdout is the peer's JSON event per submit: discarded (/dev/null), but still written.
    NODE_PATH=$NODE_MODULES start npm "$SRV_CPUS" bash -c "exec node tests/peers/smsc_node.js --port $((P + 20)) >/dev/null"
    NPM=$LAST_PID
    wait_port $((P + 10))
    wait_port $((P + 20))
  fi
  for cell in $CELLS; do
    has term || has peers || break
    b=${cell%%:*} w=${cell##*:}
    echo "== terminating, $b bind(s) window $w"
    if has term; then gen term "$SMSCD" "$b" "$w" --addr 127.0.0.1:$((P + 0)) --target smscd; fi
    if has peers; then
      gen term "$P34" "$b" "$w" --addr 127.0.0.1:$((P + 10)) --target smpp34
      gen term "$NPM" "$b" "$w" --addr 127.0.0.1:$((P + 20)) --target npm-smpp
    fi
  done
  if has latency; then
    peak=$(median_rate term smscd 1 64)
    half=$(jq -n --argjson p "$peak" '$p/2|floor')
    if [[ $half -gt 0 ]]; then
      echo "== latency: one bind window 64 at half the peak ($half submit_sm/s)"
      gen latency "$SMSCD" 1 64 --addr 127.0.0.1:$((P + 0)) --target smscd --rate "$half"
    fi
  fi
  if has mix; then
    # The message mix an SMS platform sees: mostly GSM7, some UCS2, some 3-part concatenated
    # (each part is a submit_sm; the rate counts submit_sm).
    echo "== mix: one bind window 64, gsm7=8,ucs2=1,long=1"
    gen mix "$SMSCD" 1 64 --addr 127.0.0.1:$((P + 0)) --target smscd --mix gsm7=8,ucs2=1,long=1
  fi
  stop "$SMSCD"
  if has peers; then stop "$P34"; stop "$NPM"; fi
fi

# 2: relay. ESME -> smscd A (memory store) -> upstream smscd B (sim, receipts after 0 ms) ->
# receipts back through A to the ESME. Servers unpinned (two processes).
if has relay; then
  up='binds:
  - { name: up, host: 127.0.0.1, port: '"$((P + 40))"', system_id: relay, password: relaypw, window: 256, binds: 4 }'
  smscd_cfg "$CFG/upstream.yaml" $((P + 40)) $((P + 41)) '"sim"'
  smscd_cfg "$CFG/relay.yaml" $((P + 30)) $((P + 31)) '"bind:up"' "$up"
  start smscd-up "" "$BIN/smscd" --config "$CFG/upstream.yaml" --log-level warn
  UP=$LAST_PID
  wait_port $((P + 40))
  start smscd-relay "" "$BIN/smscd" --config "$CFG/relay.yaml" --log-level warn
  RELAY=$LAST_PID
  wait_port $((P + 30))
  sleep 1 # upstream binds
  for cell in $CELLS; do
    b=${cell%%:*} w=${cell##*:}
    echo "== relay (memory store, receipts), $b bind(s) window $w"
    gen relay-memory "$RELAY" "$b" "$w" --addr 127.0.0.1:$((P + 30)) --target smscd-relay --registered-delivery
  done
  stop "$RELAY"
  stop "$UP"
fi

# 3: the same with the Redis store and two front replicas (binds spread over both).
if has redis; then
  if ! command -v redis-server >/dev/null; then
    echo "== redis: redis-server not installed (tools/deps.sh apt); skipped"
  else
    start redis "" redis-server --bind 127.0.0.1 --port $((P + 90)) --save '' --appendonly no
    REDIS=$LAST_PID
    wait_port $((P + 90))
    up='binds:
  - { name: up, host: 127.0.0.1, port: '"$((P + 40))"', system_id: relay, password: relaypw, window: 256, binds: 4 }'
    store='store: { type: redis, url: "redis://127.0.0.1:'"$((P + 90))"'", key_prefix: bench }'
    # BENCH_REDIS_EXTRA: more YAML for both relays, e.g. 'store_and_forward: { keep_relayed: 0s }'
    # (what the per-message query_sm record costs).
    store+=${BENCH_REDIS_EXTRA:+$'\n'$BENCH_REDIS_EXTRA}
    smscd_cfg "$CFG/upstream.yaml" $((P + 40)) $((P + 41)) '"sim"'
    smscd_cfg "$CFG/redis-a.yaml" $((P + 50)) $((P + 51)) '"bind:up"' "$up
$store"
    smscd_cfg "$CFG/redis-b.yaml" $((P + 52)) $((P + 53)) '"bind:up"' "$up
$store"
    start smscd-up2 "" "$BIN/smscd" --config "$CFG/upstream.yaml" --log-level warn
    UP=$LAST_PID
    wait_port $((P + 40))
    start smscd-redis-a "" "$BIN/smscd" --config "$CFG/redis-a.yaml" --log-level warn
    RA=$LAST_PID
    start smscd-redis-b "" "$BIN/smscd" --config "$CFG/redis-b.yaml" --log-level warn
    RB=$LAST_PID
    wait_port $((P + 50))
    wait_port $((P + 52))
    sleep 1
    for cell in $CELLS; do
      b=${cell%%:*} w=${cell##*:}
      echo "== relay (redis store, 2 replicas), $b bind(s) window $w"
      gen relay-redis "$RA" "$b" "$w" --addr 127.0.0.1:$((P + 50)) --addr 127.0.0.1:$((P + 52)) \
        --target smscd-relay-redis --registered-delivery
    done
    stop "$RA"
    stop "$RB"
    stop "$UP"
    stop "$REDIS"
  fi
fi

# 3b: the Redis store on a Sentinel master set (master + 2 replicas + 3 sentinels, ports +60..65)
# without and with `wait: { replicas: 1 }`, and on a 3-master Redis Cluster (+ 3 replicas,
# ports +70..75; cluster bus ports +10070..10075): two front replicas as in 3.
relay_pair() { # relay_pair SCENARIO STORE_YAML: two smscd replicas on the store, relay cells
  local scenario=$1 store=$2 up='binds:
  - { name: up, host: 127.0.0.1, port: '"$((P + 40))"', system_id: relay, password: relaypw, window: 256, binds: 4 }'
  smscd_cfg "$CFG/upstream.yaml" $((P + 40)) $((P + 41)) '"sim"'
  smscd_cfg "$CFG/ha-a.yaml" $((P + 50)) $((P + 51)) '"bind:up"' "$up
$store"
  smscd_cfg "$CFG/ha-b.yaml" $((P + 52)) $((P + 53)) '"bind:up"' "$up
$store"
  start smscd-up-$scenario "" "$BIN/smscd" --config "$CFG/upstream.yaml" --log-level warn
  local up_pid=$LAST_PID
  wait_port $((P + 40))
  start smscd-$scenario-a "" "$BIN/smscd" --config "$CFG/ha-a.yaml" --log-level warn
  local a=$LAST_PID
  start smscd-$scenario-b "" "$BIN/smscd" --config "$CFG/ha-b.yaml" --log-level warn
  local b=$LAST_PID
  wait_port $((P + 50))
  wait_port $((P + 52))
  sleep 1
  for cell in ${BENCH_HA_CELLS:-4:64}; do
    local nb=${cell%%:*} w=${cell##*:}
    echo "== relay ($scenario, 2 replicas), $nb bind(s) window $w"
    gen "$scenario" "$a" "$nb" "$w" --addr 127.0.0.1:$((P + 50)) --addr 127.0.0.1:$((P + 52)) \
      --target smscd-relay-redis --registered-delivery
  done
  stop "$a"
  stop "$b"
  stop "$up_pid"
}

redis_node() { # redis_node NAME PORT [args...]
  local name=$1 port=$2; shift 2
  mkdir -p "$OUT/$name"
  start "$name" "" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$OUT/$name" "$@"
  wait_port "$port"
}

if has redis-ha && command -v redis-server >/dev/null; then
  HA=()
  redis_node ha-master $((P + 60)); HA+=("$LAST_PID")
  redis_node ha-replica1 $((P + 61)) --replicaof 127.0.0.1 $((P + 60)); HA+=("$LAST_PID")
  redis_node ha-replica2 $((P + 62)) --replicaof 127.0.0.1 $((P + 60)); HA+=("$LAST_PID")
  for i in 3 4 5; do
    mkdir -p "$OUT/ha-sentinel$i"
    printf 'port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 %s 2\nsentinel down-after-milliseconds mymaster 1000\n' \
      $((P + 60 + i)) "$OUT/ha-sentinel$i" $((P + 60)) >"$OUT/ha-sentinel$i/sentinel.conf"
    start ha-sentinel$i "" redis-server "$OUT/ha-sentinel$i/sentinel.conf" --sentinel
    HA+=("$LAST_PID")
    wait_port $((P + 60 + i))
  done
  sentinel='sentinel: { master_name: mymaster, sentinels: ["127.0.0.1:'"$((P + 63))"'", "127.0.0.1:'"$((P + 64))"'", "127.0.0.1:'"$((P + 65))"'"] }'
  relay_pair relay-sentinel "store: { type: redis, key_prefix: bench-s, $sentinel }"
  relay_pair relay-sentinel-wait "store: { type: redis, key_prefix: bench-w, $sentinel, wait: { replicas: 1, timeout_ms: 100 } }"
  for p in "${HA[@]}"; do stop "$p"; done
  HA=()
  nodes=()
  for i in 0 1 2 3 4 5; do
    redis_node ha-cluster$i $((P + 70 + i)) --cluster-enabled yes --cluster-config-file nodes.conf
    HA+=("$LAST_PID")
    nodes+=("127.0.0.1:$((P + 70 + i))")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$OUT/ha-cluster-create.log"
  for _ in $(seq 1 100); do # bounded: 10 s
    redis-cli -p $((P + 70)) cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.1
  done
  relay_pair relay-cluster "store: { type: redis, key_prefix: bench-c, cluster: { nodes: [\"${nodes[0]}\", \"${nodes[1]}\"] } }"
  for p in "${HA[@]}"; do stop "$p"; done
elif has redis-ha; then
  echo "== redis-ha: redis-server not installed (tools/deps.sh apt); skipped"
fi

# The HTTP API (issue 17): 64 keep-alive clients POST /v1/messages against the sim target,
# without receipts and with them (the receipts' webhooks go to the generator's own receiver).
if has http; then
  HTTP_RESULTS=$OUT/http.jsonl
  : >"$HTTP_RESULTS"
  smscd_cfg "$CFG/http.yaml" $((P + 80)) $((P + 81)) '"sim"' "http:
  enabled: true
  bind_address: 127.0.0.1
  port: $((P + 82))
  accounts:
    - { account: bench, dlr_url: \"http://127.0.0.1:$((P + 83))/dlr\", secret: benchsecret, tokens: [benchtoken] }"
  start smscd-http "$SRV_CPUS" "$BIN/smscd" --config "$CFG/http.yaml" --log-level warn
  SH=$LAST_PID
  wait_port $((P + 82))
  for receipts in "" --receipts; do
    echo "== http API, 64 keep-alive clients ${receipts:-(no receipts)}"
    for run in $(seq 1 "$RUNS"); do
      load=$(cut -d' ' -f1 /proc/loadavg)
      # shellcheck disable=SC2086 # $receipts is one flag or none
      pin "$GEN_CPUS" "$BIN/smsc-bench" http --addr 127.0.0.1:$((P + 82)) --token benchtoken \
        --concurrency 64 --duration "$SECS" --server-pid "$SH" --webhook-port $((P + 83)) $receipts --json \
        2>>"$OUT/gen.log" | jq -c --argjson r "$run" --argjson l "$load" '. + {run: $r, load1: $l}' \
        >>"$HTTP_RESULTS" || echo "  (run failed, see $OUT/gen.log)"
      tail -n 1 "$OUT/gen.log" | cut -c1-220
    done
  done
  stop "$SH"
  jq -rs '
    def med(f): [.[] | f] | sort | if length==0 then null else .[(length-1)/2|floor] end;
    "| http API | receipts | runs | submits/s (median) | p50 us | p99 us | webhooks/s while sending | webhooks/s overall | server cpu cores | load1 |",
    "|---|---|---|---|---|---|---|---|---|---|",
    (group_by(.receipts)[] |
      "| 64 keep-alive | \(.[0].receipts) | \(length) | \(med(.submits_per_sec)|floor) | \(med(.latency.p50_us)|floor) | \(med(.latency.p99_us)|floor) | \(med(.webhooks_per_sec)|floor) | \(med(.webhooks_per_sec_overall)|floor) | \(med(.server_cpu_cores // 0)*100|round/100) | \(med(.load1)) |")
  ' "$HTTP_RESULTS" >"$OUT/http-summary.md"
  cat "$OUT/http-summary.md"
fi


# 6: terminating smscd (sim, no receipts) with a trivial Python on_pdu("submit_sm") handler that
# lets every message through (returns None), sync and async; one bind, window 64. The `term`
# scenario's smscd 1 x 64 cell is the same server without a handlers section.
if has handlers; then
  printf 'from siphon import smpp\n@smpp.on_pdu("submit_sm")\ndef on_submit(pdu, session):\n    return None\n' >"$CFG/sync.py"
  printf 'from siphon import smpp\n@smpp.on_pdu("submit_sm")\nasync def on_submit(pdu, session):\n    return None\n' >"$CFG/async.py"
  for kind in sync async; do
    smscd_cfg "$CFG/handlers-$kind.yaml" $((P + 84)) $((P + 85)) '"sim"' "handlers: { script: $kind.py, timeout_ms: 1000 }"
    start "smscd-handlers-$kind" "$SRV_CPUS" "$BIN/smscd" --config "$CFG/handlers-$kind.yaml" --log-level warn
    H=$LAST_PID
    wait_port $((P + 84))
    echo "== handlers: terminating, trivial $kind on_pdu handler, 1 bind window 64"
    gen "handlers-$kind" "$H" 1 64 --addr 127.0.0.1:$((P + 84)) --target smscd
    stop "$H"
  done
fi


# 6: store-and-forward on Redis (issue 16): queue then drain. The relay's only upstream is down,
# so every submit is held in Redis (accept rate); then the upstream (an smscd with the sim)
# starts and the relay drains the queue (drain rate, polled on the Redis sorted set, bounded).
# The messages go to BENCH_SAF_DESTINATIONS numbers (default 1000, round robin): the drain keeps
# order per destination, so one destination's messages go one after the other and a single
# destination measures that serial round trip, not the drain.
# Footprint: Redis used_memory and the relay's RSS per held message. Lost = accepted - what the
# upstream counted; dup = the excess. Figures in $OUT/saf.md (one line per run).
if has saf; then
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "== saf: redis-server/redis-cli not installed (tools/deps.sh apt); skipped"
  else
    DESTS=${BENCH_SAF_DESTINATIONS:-1000}
    echo "| run | destinations | accepted | accept/s | drain s | drain/s | delivered | lost | dup | redis bytes/msg | relay RSS bytes/msg | load1 |" >"$OUT/saf.md"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|" >>"$OUT/saf.md"
    for run in $(seq 1 "$RUNS"); do
      start redis-saf "" redis-server --bind 127.0.0.1 --port $((P + 91)) --save '' --appendonly no
      REDIS=$LAST_PID
      wait_port $((P + 91))
      rc() { redis-cli -p $((P + 91)) "$@"; }
      up='binds:
  - { name: up, host: 127.0.0.1, port: '"$((P + 42))"', system_id: relay, password: relaypw, window: 256, binds: 4,
      reconnect: { min_ms: 50, max_ms: 200 } }'
      saf='store: { type: redis, url: "redis://127.0.0.1:'"$((P + 91))"'", key_prefix: bench }
store_and_forward: { max_per_account: 10000000, retry_min: 100ms, retry_max: 200ms }'
      smscd_cfg "$CFG/saf-up.yaml" $((P + 42)) $((P + 43)) '"sim"'
      smscd_cfg "$CFG/saf-relay.yaml" $((P + 54)) $((P + 55)) '"bind:up"' "$up
$saf"
      sed -i 's/routing: { default_chain: \["bind:up"\] }/routing: { default_chain: ["bind:up"], store_and_forward: true }/' "$CFG/saf-relay.yaml"
      start smscd-saf-relay "" "$BIN/smscd" --config "$CFG/saf-relay.yaml" --log-level warn
      RELAY=$LAST_PID
      wait_port $((P + 54))
      mem0=$(rc info memory | awk -F: '/^used_memory:/{print $2+0}')
      rss0=$(awk '/VmRSS/{print $2*1024}' "/proc/$RELAY/status")
      load=$(cut -d' ' -f1 /proc/loadavg)
      pin "$GEN_CPUS" "$BIN/smsc-bench" esme --binds 4 --window 256 --duration "$SECS" --drain 5 \
        --destinations "$DESTS" --addr 127.0.0.1:$((P + 54)) --target smscd-saf --json 2>>"$OUT/gen.log" >"$OUT/saf-accept.json" || true
      accepted=$(jq '.submit_sm_ok // 0' "$OUT/saf-accept.json")
      accept_rate=$(jq '.submit_sm_per_sec // 0 | floor' "$OUT/saf-accept.json")
      held=$(rc zcard 'bench:saf:{bench}:due')
      mem1=$(rc info memory | awk -F: '/^used_memory:/{print $2+0}')
      rss1=$(awk '/VmRSS/{print $2*1024}' "/proc/$RELAY/status")
      echo "== saf run $run: accepted $accepted ($accept_rate/s), held in Redis $held"
      start smscd-saf-up "" "$BIN/smscd" --config "$CFG/saf-up.yaml" --log-level warn
      UP=$LAST_PID
      t0=$(date +%s.%N)
      for _ in $(seq 1 6000); do # bounded: 600 s
        [[ $(rc zcard 'bench:saf:{bench}:due') == 0 ]] && break
        sleep 0.1
      done
      t1=$(date +%s.%N)
      delivered=$(curl -s "http://127.0.0.1:$((P + 43))/metrics" |
        awk '/^smscd_submits_total\{/ && /account="relay"/ && /status="ESME_ROK"/ {s += $NF} END {print s+0}')
      jq -nr --argjson run "$run" --argjson dests "$DESTS" --argjson a "$accepted" --argjson ar "$accept_rate" --argjson t0 "$t0" --argjson t1 "$t1" \
        --argjson d "$delivered" --argjson h "$held" --argjson m0 "$mem0" --argjson m1 "$mem1" \
        --argjson r0 "$rss0" --argjson r1 "$rss1" --argjson l "$load" '
        ($t1 - $t0) as $s |
        "| \($run) | \($dests) | \($a) | \($ar) | \($s*10|round/10) | \(if $s > 0 then ($a/$s|floor) else 0 end) | \($d) | \([$a-$d,0]|max) | \([$d-$a,0]|max) | \(if $h > 0 then (($m1-$m0)/$h|floor) else 0 end) | \(if $h > 0 then (($r1-$r0)/$h|floor) else 0 end) | \($l) |"' \
        | tee -a "$OUT/saf.md"
      stop "$UP"
      stop "$RELAY"
      stop "$REDIS"
    done
    cat "$OUT/saf.md"
  fi
fi


# Medians per cell, as a markdown table (docs/benchmarks.md quotes it).
jq -rs '
  def med(f): [.[] | f] | sort | if length==0 then null else .[(length-1)/2|floor] end;
  "| scenario | target | binds | window | rate target | runs | submit_sm/s (median) | resp p50 us | resp p99 us | receipts/s | lost | dup | gen cpu cores | gen busiest thread | server cpu cores | load1 |",
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  (group_by([.scenario, .target, .binds, .window, .rate_target]) | sort_by(.[0].run)[] |
    "| \(.[0].scenario) | \(.[0].target) | \(.[0].binds) | \(.[0].window) | \(.[0].rate_target // "max") | \(length) | \(med(.submit_sm_per_sec)|floor) | \(med(.resp_latency.p50_us)|floor) | \(med(.resp_latency.p99_us)|floor) | \(if .[0].registered_delivery then (med(.receipts_per_sec)|floor|tostring) else "-" end) | \(if .[0].registered_delivery then (map(.receipts_lost)|add|tostring) else "-" end) | \(if .[0].registered_delivery then (map(.receipts_duplicated)|add|tostring) else "-" end) | \(med(.generator_cpu_cores)*100|round/100) | \(med(.generator_max_thread_util)*100|round)% | \(med(.server_cpu_cores // 0)*100|round/100) | \(med(.load1)) |")
' "$RESULTS" >"$OUT/summary.md"
cat "$OUT/summary.md"
echo "== results: $RESULTS, $OUT/summary.md"
