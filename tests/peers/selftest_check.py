#!/usr/bin/env python3
"""Assertions for selftest.sh over an ESME driver's JSON output (stdlib only).

  selftest_check.py ESME_OUT RC EXPECT [key=value ...]

EXPECT is one of:
  ok        rc 0; bound; n submit_resp with status 0 and a message_id; r receipts whose
            receipted_message_id (and Appendix B id:) match submitted ids (unless
            ids=any); enquire_link_resp if el=1 (or an 'unsupported' line if el=unsupported);
            unbound; summary consistent.
  bindfail  rc 2; bind_failed with status=S (S may be 'null').
"""
import json
import sys


def fail(msg, events):
    print("CHECK FAILED: " + msg, file=sys.stderr)
    for e in events:
        print("   " + json.dumps(e), file=sys.stderr)
    sys.exit(1)


def main():
    path, rc, expect = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    kv = dict(a.split("=", 1) for a in sys.argv[4:])
    events = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except ValueError:
                fail("non-JSON stdout line: %r" % line, events)
    names = [e["event"] for e in events]
    if not events or names[-1] != "summary":
        fail("last line is not a summary", events)
    summary = events[-1]

    if expect == "bindfail":
        if rc != 2:
            fail("expected exit 2, got %d" % rc, events)
        bf = [e for e in events if e["event"] == "bind_failed"]
        if not bf:
            fail("no bind_failed event", events)
        want = kv.get("status", "14")
        got = bf[0]["status"]
        if want != "any" and str(got if got is not None else "null") != want:
            fail("bind_failed status %r, want %s" % (got, want), events)
        return

    n = int(kv.get("n", "0"))
    r = int(kv.get("r", "0"))
    bind_type = kv.get("bind", "trx")
    if rc != 0:
        fail("expected exit 0, got %d" % rc, events)
    if names[0] != "bound" or events[0].get("bind_type") != bind_type:
        fail("first event is not bound/%s" % bind_type, events)
    el = kv.get("el", "0")
    if el == "1" and "enquire_link_resp" not in names:
        fail("no enquire_link_resp", events)
    if el == "unsupported" and not any(e["event"] == "unsupported" and e.get("feature") == "enquire_link"
                                       for e in events):
        fail("no unsupported/enquire_link line", events)
    subs = [e for e in events if e["event"] == "submit_resp"]
    if len(subs) != n or sorted(e["sequence"] for e in subs) != list(range(1, n + 1)):
        fail("want %d submit_resp with sequence 1..%d" % (n, n), events)
    for e in subs:
        if e["status"] != 0 or not e.get("message_id"):
            fail("bad submit_resp %r" % e, events)
    ids = {e["message_id"] for e in subs}
    if len(ids) != n:
        fail("message ids are not unique", events)
    rcpts = [e for e in events if e["event"] == "deliver" and e["receipt"]]
    if len(rcpts) != r:
        fail("want %d receipts, got %d" % (r, len(rcpts)), events)
    for e in rcpts:
        if e["stat"] != "DELIVRD":
            fail("receipt stat %r" % e["stat"], events)
        if kv.get("ids", "own") == "own":
            if e["receipted_message_id"] not in ids or e["id"] not in ids:
                fail("receipt for unknown id %r" % e, events)
        if e["receipted_message_id"] != e["id"]:
            fail("receipted_message_id TLV != Appendix B id", events)
        if e.get("message_state") != 2:
            fail("message_state TLV %r, want 2" % e.get("message_state"), events)
    mo = [e for e in events if e["event"] == "deliver" and not e["receipt"]]
    want_mo = int(kv.get("mo", "0"))
    if len(mo) != want_mo:
        fail("want %d MO deliver, got %d" % (want_mo, len(mo)), events)
    if want_mo and kv.get("mo_texts"):
        texts = sorted(e["text"] for e in mo)
        if texts != sorted(kv["mo_texts"].split("|")):
            fail("MO texts %r" % texts, events)
    if "unbound" not in names:
        fail("no unbound event", events)
    if kv.get("unbind_resp") == "1":
        ub = [e for e in events if e["event"] == "unbound"][0]
        if ub.get("resp") is False:
            fail("unbind_resp not received", events)
    if (summary["submitted"], summary["acked"], summary["receipts"], summary["mo"]) != (n, n, r, want_mo):
        fail("summary mismatch", events)


if __name__ == "__main__":
    main()
