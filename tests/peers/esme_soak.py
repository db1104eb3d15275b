#!/usr/bin/env python3
"""A long-running ESME on smpplib (PyPI smpplib==2.2.4) that survives its SMSC going away.

It binds transceiver, submits at a steady rate with registered_delivery 1, and when the
connection drops (a Pod deleted, a rolling update) it rebinds with backoff and carries on, as a
production ESME does. It keeps every message id the SMSC acknowledged and every receipt that came
back, so the caller can check that each acknowledged submit got exactly its own receipt.

Bounded: at most --submit messages, and everything ends by --timeout. A submit that was sent but
not answered when its connection dropped was never acknowledged: it is counted (`unanswered`), not
resent, and no receipt is owed for it.

  $VENV/bin/python tests/peers/esme_soak.py --port P --system-id S --password W \\
      --submit 300 --rate 20 --timeout 120 [--stop-file F]

stdout: JSON lines. `bound` (each bind: `n`, `at`), `disconnected` (`error`, `at`), `stopped`
(the stop file appeared), and last `summary`: submitted, acked, rejected, unanswered, binds,
receipts (distinct ids), duplicate_receipts, unknown_receipts (ids we never got acked),
missing (acked ids without a receipt, first 20), missing_count, stats (stat word -> count).
Exit 0 when every acknowledged submit got its receipt, 1 otherwise.
"""

import argparse
import json
import os
import select
import socket
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cstr  # noqa: E402

warnings.simplefilter("ignore", DeprecationWarning)
import smpplib.client  # noqa: E402
import smpplib.consts  # noqa: E402
import smpplib.exceptions  # noqa: E402
import smpplib.smpp  # noqa: E402

T0 = time.monotonic()


def emit(event, **fields):
    fields = dict({"event": event, "at": round(time.monotonic() - T0, 3)}, **fields)
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def receipt_fields(text):
    """The Appendix B `id:` and `stat:` words of a receipt's text."""
    out = {}
    for word in ("id", "stat"):
        i = text.find(word + ":")
        if i >= 0:
            out[word] = text[i + len(word) + 1:].split(" ", 1)[0]
    return out


class Soak:
    def __init__(self, a):
        self.a = a
        self.deadline = T0 + a.timeout
        self.submitted = 0
        self.acked_ids = set()
        self.rejected = 0
        self.unanswered = 0
        self.binds = 0
        self.receipts = {}       # id -> count
        self.stats = {}
        self.client = None
        self.pending = {}        # sequence -> send time

    def stop_requested(self):
        return bool(self.a.stop_file) and os.path.exists(self.a.stop_file)

    def connect(self):
        c = smpplib.client.Client(self.a.host, self.a.port, timeout=5,
                                  allow_unknown_opt_params=True)
        c.connect()
        c.bind_transceiver(system_id=self.a.system_id, password=self.a.password)
        self.client = c
        self.binds += 1
        emit("bound", n=self.binds)

    def drop(self, why):
        emit("disconnected", error=str(why)[:200], pending=len(self.pending))
        self.unanswered += len(self.pending)
        self.pending.clear()
        try:
            if self.client is not None and self.client._socket is not None:
                self.client._socket.close()
        except OSError:
            pass
        self.client = None

    def respond(self, command, pdu):
        resp = smpplib.smpp.make_pdu(command, client=self.client)
        resp.sequence = pdu.sequence
        self.client.send_pdu(resp)

    def on_pdu(self, pdu):
        cmd = pdu.command
        if cmd == "submit_sm_resp":
            if self.pending.pop(pdu.sequence, None) is None:
                return
            if pdu.status == 0:
                self.acked_ids.add(cstr(pdu.message_id))
            else:
                self.rejected += 1
        elif cmd == "deliver_sm":
            text = cstr(pdu.short_message) or ""
            if (pdu.esm_class or 0) & 0x04:
                rid = cstr(getattr(pdu, "receipted_message_id", None)) or receipt_fields(text).get("id")
                stat = receipt_fields(text).get("stat", "?")
                self.stats[stat] = self.stats.get(stat, 0) + 1
                self.receipts[rid] = self.receipts.get(rid, 0) + 1
            self.respond("deliver_sm_resp", pdu)
        elif cmd == "enquire_link":
            self.respond("enquire_link_resp", pdu)
        elif cmd == "unbind":
            self.respond("unbind_resp", pdu)
            raise ConnectionError("the SMSC unbound us")

    def read_ready(self, wait):
        """Handle every PDU that arrives within `wait` seconds."""
        end = time.monotonic() + max(0.0, wait)
        while True:
            left = end - time.monotonic()
            r, _, _ = select.select([self.client._socket], [], [], max(0.0, left))
            if not r:
                return
            pdu = self.client.read_pdu()
            self.on_pdu(pdu)
            if left <= 0:
                return

    def submit_one(self):
        pdu = self.client.send_message(
            source_addr="12345", destination_addr="3160%07d" % self.submitted,
            short_message=b"soak %d" % self.submitted, data_coding=0, registered_delivery=1)
        self.pending[pdu.sequence] = time.monotonic()
        self.submitted += 1

    def owed(self):
        return [i for i in self.acked_ids if i not in self.receipts]

    def done(self):
        sending = self.submitted < self.a.submit and not self.stop_requested()
        return not sending and not self.pending and not self.owed()

    def run(self):
        interval = 1.0 / self.a.rate
        next_send = time.monotonic()
        backoff = 0.2
        stopped = False
        while time.monotonic() < self.deadline and not self.done():
            if self.client is None:
                try:
                    self.connect()
                    backoff = 0.2
                except (OSError, smpplib.exceptions.PDUError, smpplib.exceptions.ConnectionError) as e:
                    emit("bind_failed", error=str(e)[:200])
                    time.sleep(min(backoff, max(0.0, self.deadline - time.monotonic())))
                    backoff = min(backoff * 2, 2.0)
                    continue
            if not stopped and self.stop_requested():
                stopped = True
                emit("stopped", submitted=self.submitted)
            try:
                now = time.monotonic()
                if (self.submitted < self.a.submit and not stopped and now >= next_send
                        and len(self.pending) < self.a.window):
                    self.submit_one()
                    next_send = max(next_send + interval, now - 1.0)
                self.read_ready(min(0.05, max(0.0, next_send - time.monotonic())))
            except (OSError, ConnectionError, smpplib.exceptions.ConnectionError,
                    smpplib.exceptions.PDUError) as e:
                self.drop(e)
        if self.client is not None:
            try:
                self.client.unbind()
                self.client.disconnect()
            except (OSError, smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError):
                pass
        missing = self.owed()
        emit("summary", submitted=self.submitted, acked=len(self.acked_ids), rejected=self.rejected,
             unanswered=self.unanswered + len(self.pending), binds=self.binds,
             receipts=len(self.receipts),
             duplicate_receipts=sum(n - 1 for n in self.receipts.values()),
             unknown_receipts=len([i for i in self.receipts if i not in self.acked_ids]),
             missing=sorted(missing)[:20], missing_count=len(missing), stats=self.stats)
        return 0 if not missing else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--system-id", required=True)
    p.add_argument("--password", default="")
    p.add_argument("--submit", type=int, default=100)
    p.add_argument("--rate", type=float, default=20.0, help="submits per second")
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--stop-file", default="", help="stop submitting once this file exists")
    a = p.parse_args()
    if a.host != "127.0.0.1" and os.environ.get("SMPP_PEER_ALLOW_REMOTE") != "1":
        p.error("--host must be 127.0.0.1")
    if a.rate <= 0 or a.submit < 0 or a.window < 1:
        p.error("--rate must be > 0, --submit >= 0, --window >= 1")
    socket.setdefaulttimeout(10)
    sys.exit(Soak(a).run())


if __name__ == "__main__":
    main()
