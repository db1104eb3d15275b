#!/usr/bin/env python3
"""Print the environment a Pod's smscd container would get, as `export K='V'` lines.

The demo and the failover tests run smscd as local processes that play the Pods kwok created, so
they need the same environment the kubelet would give the container: plain values, Secret keys
(secretKeyRef) and downward-API fields (fieldRef: metadata.name / metadata.namespace).

usage: podenv.py KUBECTL NAMESPACE DEPLOYMENT POD
"""
import base64
import json
import shlex
import subprocess
import sys


def kubectl(kc, *args):
    out = subprocess.run([kc, *args, "-o", "json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    kc, ns, deploy, pod = sys.argv[1:]
    d = kubectl(kc, "-n", ns, "get", "deployment", deploy)
    containers = d["spec"]["template"]["spec"]["containers"]
    smscd = next((c for c in containers if c["name"] == "smscd"), containers[0])
    secrets = {}
    fields = {"metadata.name": pod, "metadata.namespace": ns}
    for e in smscd.get("env", []):
        name, value = e["name"], e.get("value")
        src = e.get("valueFrom", {})
        if "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            if ref["name"] not in secrets:
                secrets[ref["name"]] = kubectl(kc, "-n", ns, "get", "secret", ref["name"]).get("data", {})
            raw = secrets[ref["name"]].get(ref["key"])
            if raw is None:
                sys.exit(f"podenv: secret {ref['name']} has no key {ref['key']} (env {name})")
            value = base64.b64decode(raw).decode()
        elif "fieldRef" in src:
            value = fields.get(src["fieldRef"]["fieldPath"])
        if value is not None:
            print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
