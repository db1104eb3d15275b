# Shared by tools/demo/real.sh and tools/demo/kwok.sh: output, polling, sending SMS.
bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
die() { printf '\033[31mdemo failed: %s\033[0m\n' "$*" >&2; exit 1; }

# Poll a command until it succeeds (prints its output), at most $1 seconds.
until_ok() {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  while ! "$@" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# send PORT COUNT SYSTEM_ID PASSWORD: COUNT SMS with receipts through 127.0.0.1:PORT, narrated.
send_sms() {
  local port=$1 n=$2 id=$3 pw=$4
  "$python_peer" tests/peers/esme_smpplib.py --host 127.0.0.1 --port "$port" --system-id "$id" --password "$pw" \
    --bind-type trx --submit "$n" --registered-delivery 1 --wait-receipts "$n" --timeout 30 \
    --text "Hello from make demo" --dest-addr 447700900123 >"$work/esme.out" || return 1
  python3 - "$work/esme.out" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["event"] == "submit_resp":
        print(f"   -> submit_sm #{e['sequence']}: accepted, message_id {e['message_id']}")
    elif e["event"] == "deliver" and e.get("receipt"):
        print(f"   <- receipt for {e.get('receipted_message_id') or e.get('id')}: stat {e.get('stat')}")
    elif e["event"] == "summary":
        print(f"   summary: {e['submitted']} sent, {e['acked']} accepted, {e['receipts']} receipts back")
PY
}

# smsc_manifest HOST PORT [EXTRA]: the demo's SmscCluster (2 replicas, the single-bind carrier at
# HOST:PORT, short Lease timings) with the Secrets it names; EXTRA is more `spec:` lines, indented
# by two spaces.
smsc_manifest() {
  cat <<EOF
apiVersion: v1
kind: Secret
metadata: { name: legacy-esme }
stringData: { password: s3cret }
---
apiVersion: v1
kind: Secret
metadata: { name: carrier-credentials }
stringData: { systemId: legacy_gw, password: changeme }
---
apiVersion: smsc.io/v1alpha1
kind: SmscCluster
metadata: { name: $CLUSTER }
spec:
  replicas: 2
  topology: Auto
  smpp:
    accounts:
      - systemId: legacy
        passwordSecretRef: { name: legacy-esme, key: password }
  upstreams:
    - name: carrier
      host: "$1"
      port: $2
      credentialsSecretRef: { name: carrier-credentials }
      maxBinds: 1
  routing: { defaultChain: [carrier] }
  leaderElection: { leaseDurationSeconds: 6, renewDeadlineSeconds: 4, retryPeriodSeconds: 1 }
${3:-}
EOF
}
