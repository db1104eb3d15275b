#!/usr/bin/env bash
# Self-test of the Kannel ESME setup (run.sh) against our third-party SMSC peers
# (smsc_node.js and smsc_smpp34.py): transceiver bind, HTTP sendsms -> submit_sm at the SMSC,
# DLR callbacks (type 8 = SMSC ack, type 1 = delivered) on the dlr-url, MO deliver_sm -> MO URL,
# unbind on shutdown. 127.0.0.1 only; every wait is bounded. Exit 0 = all checks passed.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEERS="$(dirname "$HERE")"
SMSC_CACHE="${SMSC_CACHE:-$HOME/.cache/smsc-operator}"
PY="${SMSC_PEER_PYTHON:-$SMSC_CACHE/venv/bin/python}"
export NODE_PATH="${NODE_PATH:-$SMSC_CACHE/node/node_modules}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/kannel-selftest.XXXXXX")"
PIDS=()
FAILS=0; PASSES=0

cleanup() {
  exec 9>&- 2>/dev/null
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    local end=$((SECONDS + 8))
    while kill -0 "$p" 2>/dev/null && [ "$SECONDS" -le "$end" ]; do sleep 0.1; done
    kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null
  done
  PIDS=()
}
finish() { cleanup; if [ "$FAILS" -ne 0 ] || [ "${KEEP_TMP:-0}" = 1 ]; then echo "logs kept in $TMP" >&2; else rm -rf "$TMP"; fi; }
trap finish EXIT

command -v bearerbox >/dev/null || [ -x /usr/sbin/bearerbox ] || { echo "kannel not installed (tools/deps.sh apt)" >&2; exit 2; }
pass() { PASSES=$((PASSES + 1)); echo "ok   $*"; }
failed() { FAILS=$((FAILS + 1)); echo "FAIL $*"; }
wait_line() { # file pattern count secs
  local end=$((SECONDS + $4))
  while [ "$SECONDS" -le "$end" ]; do
    [ "$(grep -c -- "$2" "$1" 2>/dev/null || true)" -ge "$3" ] && return 0
    sleep 0.05
  done
  return 1
}
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
json_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

for server in node smpp34; do
  echo "# Kannel against smsc_$server"
  D="$TMP/$server"; mkdir -p "$D"
  mkfifo "$D/ctl"
  case $server in
    node) timeout -s TERM 300 node "$PEERS/smsc_node.js" --port 0 --system-id kannel --password secret \
            --receipt-delay-ms 100 <"$D/ctl" >"$D/smsc.out" 2>"$D/smsc.err" & ;;
    smpp34) timeout -s TERM 300 "$PY" "$PEERS/smsc_smpp34.py" --port 0 --system-id kannel --password secret \
            --receipt-delay-ms 100 <"$D/ctl" >"$D/smsc.out" 2>"$D/smsc.err" & ;;
  esac
  PIDS+=($!)
  exec 9>"$D/ctl"
  timeout -s TERM 300 python3 "$HERE/http_capture.py" --port 0 >"$D/http.out" 2>"$D/http.err" &
  PIDS+=($!)
  if ! wait_line "$D/smsc.out" '"listening"' 1 15 || ! wait_line "$D/http.out" '"listening"' 1 15; then
    failed "$server: peers did not start"; cleanup; continue
  fi
  SMSC_PORT=$(json_field "$(head -1 "$D/smsc.out")" port)
  HTTP_PORT=$(json_field "$(head -1 "$D/http.out")" port)
  ADMIN=$(free_port); BOX=$(free_port); SENDSMS=$(free_port)

  timeout -s TERM 300 "$HERE/run.sh" --smsc-port "$SMSC_PORT" --system-id kannel --password secret \
    --admin-port "$ADMIN" --smsbox-port "$BOX" --sendsms-port "$SENDSMS" \
    --mo-url "http://127.0.0.1:$HTTP_PORT/mo" --workdir "$D/kannel" --wait-online 20 \
    >"$D/run.out" 2>"$D/run.err" &
  RUN_PID=$!
  PIDS+=($RUN_PID)
  if wait_line "$D/run.out" '"event":"ready"' 1 40 && grep -q '"smsc_online":true' "$D/run.out"; then
    pass "$server: bearerbox+smsbox up, SMPP bind online"
  else
    failed "$server: kannel not ready"; sed 's/^/     /' "$D/run.out" "$D/run.err" | tail -20; cleanup; continue
  fi
  grep -q '"event":"bind","bind_type":"trx","system_id":"kannel"' "$D/smsc.out" \
    && pass "$server: Kannel bound as transceiver" || failed "$server: no trx bind event"

  dlr=$(python3 -c 'import sys,urllib.parse as u; print(u.quote(sys.argv[1], safe=""))' \
    "http://127.0.0.1:$HTTP_PORT/dlr?type=%d&fid=%F&status=%A&msgid=%I")
  resp=$(curl -s --max-time 10 "http://127.0.0.1:$SENDSMS/cgi-bin/sendsms?username=tester&password=foobar&from=12345&to=31600000000&text=hello+kannel&dlr-mask=9&dlr-url=$dlr")
  case $resp in
    0:*|"Accepted"*|*"Accepted for delivery"*) pass "$server: sendsms accepted ($resp)" ;;
    *) failed "$server: sendsms said: $resp" ;;
  esac
  if wait_line "$D/smsc.out" '"event":"submit"' 1 15; then
    mid=$(json_field "$(grep '"event":"submit"' "$D/smsc.out" | head -1)" message_id)
    pass "$server: submit_sm reached the SMSC (message_id $mid)"
    if wait_line "$D/http.out" '"type":"1"' 1 20; then
      line=$(grep '"type":"1"' "$D/http.out" | head -1)
      python3 - "$line" "$mid" <<'PYEOF' && pass "$server: DLR delivered callback (type 1, fid=$mid, stat:DELIVRD)" || failed "$server: bad DLR callback: $line"
import json, sys
q = json.loads(sys.argv[1])["query"]
assert q["fid"] == sys.argv[2], q
assert "stat:DELIVRD" in q["status"], q
PYEOF
    else
      failed "$server: no DLR type 1 callback"
    fi
    wait_line "$D/http.out" '"type":"8"' 1 5 && pass "$server: DLR smsc-ack callback (type 8)" \
      || failed "$server: no DLR type 8 callback"
  else
    failed "$server: no submit_sm at the SMSC"
  fi

  echo '{"cmd":"deliver","source_addr":"31600000001","dest_addr":"4444","text":"mo to kannel","system_id":"kannel"}' >&9
  if wait_line "$D/http.out" '"path":"/mo"' 1 15 && grep '"path":"/mo"' "$D/http.out" | grep -q '"text":"mo to kannel"'; then
    pass "$server: MO deliver_sm forwarded by smsbox to the MO URL"
  else
    failed "$server: no MO callback"
  fi

  kill -TERM "$RUN_PID"
  end=$((SECONDS + 15))
  while kill -0 "$RUN_PID" 2>/dev/null && [ "$SECONDS" -le "$end" ]; do sleep 0.1; done
  wait "$RUN_PID" 2>/dev/null
  grep -q '"event":"stopped"' "$D/run.out" && pass "$server: run.sh stopped both boxes" || failed "$server: run.sh did not stop"
  if wait_line "$D/smsc.out" '"event":"unbind"' 1 5; then pass "$server: Kannel unbound on shutdown"
  else failed "$server: no unbind from Kannel on shutdown"; fi
  cleanup
done
echo "# $PASSES passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
