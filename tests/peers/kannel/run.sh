#!/usr/bin/env bash
# Run Kannel (bearerbox + smsbox) as an SMPP transceiver ESME against our SMSC.
# Renders kannel.conf.in into a work dir, starts both boxes as children of this script
# (no daemonising), waits until they listen and (by default) until the SMPP bind is online,
# then stays in the foreground until SIGTERM/SIGINT or until a box dies; on exit both
# boxes are stopped (SIGTERM, then SIGKILL after 5 s). 127.0.0.1 only.
#
#   tests/peers/kannel/run.sh --smsc-port 2775 --system-id kannel --password secret \
#       --admin-port 13000 --smsbox-port 13001 --sendsms-port 13013 [options]
#
# Options (defaults in brackets):
#   --smsc-host H            [127.0.0.1]  (only 127.0.0.1 is accepted)
#   --system-type T          [""]
#   --sendsms-user U         [tester]     --sendsms-password P [foobar]
#   --admin-password P       [admin]
#   --mo-url URL             [none]  MO deliver_sm -> GET URL?from=%p&to=%P&text=%a&smsc=%i
#   --enquire-link-interval S [30]
#   --wait-online SECS       [20]    0 = do not wait for the SMPP bind to come online
#   --log-level 0-4          [1]     (0 = debug; SMPP_PEER_DEBUG=1 forces 0)
#   --workdir DIR            [mktemp -d]  kept after exit (logs); removed only if we made it
#                                         and the run ended cleanly, unless --keep
#   --keep
#
# stdout, one JSON object per line:
#   {"event":"rendered","workdir":D,"config":F}
#   {"event":"started","bearerbox_pid":N,"smsbox_pid":N}
#   {"event":"ready","admin_port":A,"sendsms_port":S,"smsc_online":true|false}
#   {"event":"exited","box":"bearerbox"|"smsbox","status":N}   (a box died: exit 1)
#   {"event":"failed","reason":"..."}                           (startup failed: exit 1)
#   {"event":"stopped"}
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SMSC_HOST=127.0.0.1; SMSC_PORT=""; SYSTEM_ID=""; PASSWORD=""; SYSTEM_TYPE=""
ADMIN_PORT=""; SMSBOX_PORT=""; SENDSMS_PORT=""; SENDSMS_USER=tester; SENDSMS_PASSWORD=foobar
ADMIN_PASSWORD=admin; MO_URL=""; ELI=30; WAIT_ONLINE=20; LOG_LEVEL=1; WORKDIR=""; KEEP=0

usage() { sed -n '2,30p' "$0" >&2; exit 64; }
while [ $# -gt 0 ]; do
  case $1 in
    --smsc-host) SMSC_HOST=$2; shift 2 ;;
    --smsc-port) SMSC_PORT=$2; shift 2 ;;
    --system-id) SYSTEM_ID=$2; shift 2 ;;
    --password) PASSWORD=$2; shift 2 ;;
    --system-type) SYSTEM_TYPE=$2; shift 2 ;;
    --admin-port) ADMIN_PORT=$2; shift 2 ;;
    --smsbox-port) SMSBOX_PORT=$2; shift 2 ;;
    --sendsms-port) SENDSMS_PORT=$2; shift 2 ;;
    --sendsms-user) SENDSMS_USER=$2; shift 2 ;;
    --sendsms-password) SENDSMS_PASSWORD=$2; shift 2 ;;
    --admin-password) ADMIN_PASSWORD=$2; shift 2 ;;
    --mo-url) MO_URL=$2; shift 2 ;;
    --enquire-link-interval) ELI=$2; shift 2 ;;
    --wait-online) WAIT_ONLINE=$2; shift 2 ;;
    --log-level) LOG_LEVEL=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
done
for v in SMSC_PORT SYSTEM_ID ADMIN_PORT SMSBOX_PORT SENDSMS_PORT; do
  [ -n "${!v}" ] || { echo "run.sh: missing --$(echo "$v" | tr 'A-Z_' 'a-z-')" >&2; exit 64; }
done
[ "$SMSC_HOST" = 127.0.0.1 ] || { echo "run.sh: only 127.0.0.1 is allowed" >&2; exit 64; }
[ "${SMPP_PEER_DEBUG:-0}" = 1 ] && LOG_LEVEL=0
BEARERBOX=${BEARERBOX:-$(command -v bearerbox || echo /usr/sbin/bearerbox)}
SMSBOX=${SMSBOX:-$(command -v smsbox || echo /usr/sbin/smsbox)}
[ -x "$BEARERBOX" ] && [ -x "$SMSBOX" ] || { echo "run.sh: bearerbox/smsbox not found (tools/deps.sh apt)" >&2; exit 2; }

MADE_WORKDIR=0
if [ -z "$WORKDIR" ]; then WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/kannel-peer.XXXXXX"); MADE_WORKDIR=1; fi
mkdir -p "$WORKDIR"
CONF="$WORKDIR/kannel.conf"

emit() { printf '%s\n' "$1"; }
jstr() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

# --- render -----------------------------------------------------------------------------
if [ -n "$MO_URL" ]; then
  MO_LINE="get-url = \"$MO_URL?from=%p&to=%P&text=%a&smsc=%i\""
else
  MO_LINE='text = ""'
fi
esc() { printf '%s' "$1" | sed -e 's/[\/&|]/\\&/g'; }
sed -e "s|@SMSC_HOST@|$(esc "$SMSC_HOST")|g" \
    -e "s|@SMSC_PORT@|$(esc "$SMSC_PORT")|g" \
    -e "s|@SYSTEM_ID@|$(esc "$SYSTEM_ID")|g" \
    -e "s|@PASSWORD@|$(esc "$PASSWORD")|g" \
    -e "s|@SYSTEM_TYPE@|$(esc "$SYSTEM_TYPE")|g" \
    -e "s|@ADMIN_PORT@|$(esc "$ADMIN_PORT")|g" \
    -e "s|@ADMIN_PASSWORD@|$(esc "$ADMIN_PASSWORD")|g" \
    -e "s|@SMSBOX_PORT@|$(esc "$SMSBOX_PORT")|g" \
    -e "s|@SENDSMS_PORT@|$(esc "$SENDSMS_PORT")|g" \
    -e "s|@SENDSMS_USER@|$(esc "$SENDSMS_USER")|g" \
    -e "s|@SENDSMS_PASSWORD@|$(esc "$SENDSMS_PASSWORD")|g" \
    -e "s|@ENQUIRE_LINK_INTERVAL@|$(esc "$ELI")|g" \
    -e "s|@LOG_LEVEL@|$(esc "$LOG_LEVEL")|g" \
    -e "s|@WORKDIR@|$(esc "$WORKDIR")|g" \
    -e "s|@MO_URL@|$(esc "$MO_URL")|g" \
    -e "s|@MO_SERVICE_LINE@|$(esc "$MO_LINE")|g" \
    "$HERE/kannel.conf.in" >"$CONF"
if grep -q '@[A-Z_]*@' "$CONF"; then
  echo "run.sh: unrendered placeholders: $(grep -o '@[A-Z_]*@' "$CONF" | sort -u | tr '\n' ' ')" >&2
  exit 2
fi
emit "{\"event\":\"rendered\",\"workdir\":$(jstr "$WORKDIR"),\"config\":$(jstr "$CONF")}"

# --- lifecycle --------------------------------------------------------------------------
BB_PID=""; SB_PID=""; CLEAN=0
dbg() { [ "${SMPP_PEER_DEBUG:-0}" = 1 ] && echo "[run.sh $(date +%T.%N)] $*" >&2; return 0; }
alive() { # pid: running and not a zombie (kill -0 succeeds on unreaped zombies)
  [ -r "/proc/$1/stat" ] || return 1
  local st; st=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
stop_box() { # pid
  [ -n "$1" ] || return 0
  dbg "stopping $1"
  kill -TERM "$1" 2>/dev/null
  local end=$((SECONDS + 5))
  while alive "$1" && [ "$SECONDS" -le "$end" ]; do sleep 0.1; done
  alive "$1" && { dbg "SIGKILL $1"; kill -KILL "$1" 2>/dev/null; }
  wait "$1" 2>/dev/null
  dbg "stopped $1"
}
cleanup() {
  trap - EXIT INT TERM
  stop_box "$SB_PID"; stop_box "$BB_PID"
  emit '{"event":"stopped"}'
  if [ "$MADE_WORKDIR" = 1 ] && [ "$KEEP" = 0 ] && [ "$CLEAN" = 1 ]; then rm -rf "$WORKDIR"; fi
}
trap cleanup EXIT
trap 'dbg "signal"; CLEAN=1; exit 0' INT TERM

fail() {
  emit "{\"event\":\"failed\",\"reason\":$(jstr "$1")}"
  for f in bearerbox.stderr bearerbox.log smsbox.stderr smsbox.log; do
    [ -s "$WORKDIR/$f" ] && { echo "--- $f (tail)" >&2; tail -15 "$WORKDIR/$f" >&2; }
  done
  exit 1
}

http_ok() { curl -s -o /dev/null --max-time 1 "$1"; }
wait_until() { # secs cmd...
  local end=$((SECONDS + $1)); shift
  while [ "$SECONDS" -le "$end" ]; do
    "$@" && return 0
    alive "$BB_PID" || return 1
    [ -z "$SB_PID" ] || alive "$SB_PID" || return 1
    sleep 0.1
  done
  return 1
}
status_url="http://127.0.0.1:$ADMIN_PORT/status.txt?password=$ADMIN_PASSWORD"
smsc_online() { curl -s --max-time 1 "$status_url" | grep -q '(online'; }

"$BEARERBOX" -v "$LOG_LEVEL" "$CONF" >"$WORKDIR/bearerbox.stdout" 2>"$WORKDIR/bearerbox.stderr" &
BB_PID=$!
wait_until 15 http_ok "$status_url" || fail "bearerbox admin port $ADMIN_PORT did not come up"
"$SMSBOX" -v "$LOG_LEVEL" "$CONF" >"$WORKDIR/smsbox.stdout" 2>"$WORKDIR/smsbox.stderr" &
SB_PID=$!
emit "{\"event\":\"started\",\"bearerbox_pid\":$BB_PID,\"smsbox_pid\":$SB_PID}"
wait_until 15 http_ok "http://127.0.0.1:$SENDSMS_PORT/" || fail "smsbox sendsms port $SENDSMS_PORT did not come up"
ONLINE=false
if [ "$WAIT_ONLINE" != 0 ]; then
  wait_until "$WAIT_ONLINE" smsc_online || fail "SMPP bind to $SMSC_HOST:$SMSC_PORT not online after ${WAIT_ONLINE}s"
  ONLINE=true
elif smsc_online; then
  ONLINE=true
fi
emit "{\"event\":\"ready\",\"admin_port\":$ADMIN_PORT,\"sendsms_port\":$SENDSMS_PORT,\"smsc_online\":$ONLINE}"

# Foreground until a signal arrives or a box dies.
wait -n "$BB_PID" "$SB_PID"
st=$?
if alive "$BB_PID"; then box=smsbox; SB_PID=""; else box=bearerbox; BB_PID=""; fi
emit "{\"event\":\"exited\",\"box\":\"$box\",\"status\":$st}"
exit 1
