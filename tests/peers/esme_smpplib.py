#!/usr/bin/env python3
"""ESME driver on top of smpplib (PyPI smpplib==2.2.4). CLI and events: README.md.

Run with the venv interpreter from tools/deps.sh:
  ~/.cache/smsc-operator/venv/bin/python tests/peers/esme_smpplib.py --port 2775 --system-id s ...
"""

import logging
import os
import select
import socket
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (EXIT_BIND_FAILED, EXIT_ERROR, EXIT_OK, EXIT_SUBMIT_REJECTED,  # noqa: E402
                     EXIT_TIMEOUT, cstr, debug, deliver_event, emit, encode_text,
                     esme_arg_parser, validate_esme_args, DEBUG)

warnings.simplefilter("ignore", DeprecationWarning)
import smpplib.client  # noqa: E402
import smpplib.consts  # noqa: E402
import smpplib.exceptions  # noqa: E402
import smpplib.smpp  # noqa: E402

if DEBUG:
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)


class Timeout(Exception):
    pass


class Driver:
    def __init__(self, args):
        self.a = args
        self.deadline = time.monotonic() + args.timeout
        self.client = None
        self.pending = {}          # pdu sequence -> submit ordinal
        self.submitted = 0
        self.acked = 0
        self.rejected = 0
        self.receipts = 0
        self.mo = 0
        self.enquire_resp = False
        self.unbind_resp = False
        self.peer_unbound = False

    def remaining(self, floor=0.0):
        return max(floor, self.deadline - time.monotonic())

    # -- I/O ---------------------------------------------------------------
    def read_one(self, deadline):
        """Read and dispatch one PDU, waiting until `deadline` (monotonic)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout()
        r, _, _ = select.select([self.client._socket], [], [], left)
        if not r:
            raise Timeout()
        self.client._socket.settimeout(max(0.5, deadline - time.monotonic()))
        try:
            pdu = self.client.read_pdu()
        except socket.timeout:
            raise Timeout()
        self.dispatch(pdu)

    def send(self, pdu):
        self.client.send_pdu(pdu)

    def dispatch(self, pdu):
        cmd = pdu.command
        debug("<<", cmd, "seq", pdu.sequence, "status", pdu.status)
        if cmd in ("submit_sm_resp", "generic_nack") and pdu.sequence in self.pending:
            idx = self.pending.pop(pdu.sequence)
            status = int(pdu.status)
            mid = cstr(getattr(pdu, "message_id", None)) if status == 0 else None
            if status == 0:
                self.acked += 1
            else:
                self.rejected += 1
            emit("submit_resp", sequence=idx, pdu_sequence=pdu.sequence, status=status,
                 message_id=mid)
        elif cmd == "deliver_sm":
            esm = int(pdu.esm_class or 0)
            dc = int(pdu.data_coding or 0)
            ev = deliver_event(esm, dc, pdu.short_message,
                               cstr(pdu.source_addr), cstr(pdu.destination_addr),
                               receipted_message_id=cstr(getattr(pdu, "receipted_message_id", None)),
                               message_state=getattr(pdu, "message_state", None))
            resp = smpplib.smpp.make_pdu("deliver_sm_resp", client=self.client)
            resp.sequence = pdu.sequence
            self.send(resp)
            if ev["receipt"]:
                self.receipts += 1
            else:
                self.mo += 1
            emit("deliver", **ev)
        elif cmd == "enquire_link":
            resp = smpplib.smpp.make_pdu("enquire_link_resp", client=self.client)
            resp.sequence = pdu.sequence
            self.send(resp)
            emit("enquire_link_received")
        elif cmd == "enquire_link_resp":
            self.enquire_resp = True
        elif cmd == "unbind":
            resp = smpplib.smpp.make_pdu("unbind_resp", client=self.client)
            resp.sequence = pdu.sequence
            self.send(resp)
            self.peer_unbound = True
            emit("unbind_received")
        elif cmd == "unbind_resp":
            self.unbind_resp = True
        else:
            debug("ignoring", cmd)

    # -- flow --------------------------------------------------------------
    def bind(self):
        a = self.a
        self.client = smpplib.client.Client(a.host, a.port, timeout=self.remaining(0.5),
                                            allow_unknown_opt_params=True)
        self.client.connect()
        fn = {"tx": self.client.bind_transmitter, "rx": self.client.bind_receiver,
              "trx": self.client.bind_transceiver}[a.bind_type]
        fn(system_id=a.system_id, password=a.password, system_type=a.system_type)
        emit("bound", bind_type=a.bind_type)

    def run(self):
        a = self.a
        if a.enquire_link:
            el = smpplib.smpp.make_pdu("enquire_link", client=self.client)
            self.send(el)
            while not self.enquire_resp:
                self.read_one(self.deadline)
            emit("enquire_link_resp")

        body = encode_text(a.text, a.data_coding)
        while self.submitted < a.submit or self.pending:
            while self.submitted < a.submit and len(self.pending) < a.window:
                pdu = self.client.send_message(
                    source_addr=a.source_addr, destination_addr=a.dest_addr,
                    short_message=body, data_coding=a.data_coding,
                    registered_delivery=a.registered_delivery)
                self.submitted += 1
                self.pending[pdu.sequence] = self.submitted
                debug(">> submit_sm seq", pdu.sequence)
            self.read_one(self.deadline)

        while self.receipts < a.wait_receipts or self.mo < a.wait_mo:
            if self.peer_unbound:
                raise smpplib.exceptions.ConnectionError("peer unbound before all deliveries")
            self.read_one(self.deadline)

    def unbind(self):
        if self.peer_unbound or self.client is None or self.client._socket is None:
            return
        grace = time.monotonic() + max(2.0, self.remaining())
        self.send(smpplib.smpp.make_pdu("unbind", client=self.client))
        try:
            while not self.unbind_resp:
                self.read_one(grace)
        except smpplib.exceptions.ConnectionError:
            pass  # peer closed right after (or instead of) unbind_resp
        emit("unbound", resp=self.unbind_resp)

    def close(self):
        if self.client is not None and self.client._socket is not None:
            try:
                self.client._socket.close()
            except OSError:
                pass
            self.client._socket = None
            self.client.state = smpplib.consts.SMPP_CLIENT_STATE_CLOSED

    def summary(self):
        emit("summary", submitted=self.submitted, acked=self.acked, rejected=self.rejected,
             receipts=self.receipts, mo=self.mo)


def main():
    args = esme_arg_parser("SMPP ESME driver (smpplib)").parse_args()
    validate_esme_args(args)
    d = Driver(args)
    code = EXIT_OK
    try:
        try:
            d.bind()
        except smpplib.exceptions.PDUError as e:
            status = e.args[1] if len(e.args) > 1 else -1
            emit("bind_failed", status=status)
            return EXIT_BIND_FAILED
        except (smpplib.exceptions.ConnectionError, socket.timeout, OSError) as e:
            emit("error", error="connect/bind: %s" % (e or type(e).__name__))
            return EXIT_ERROR
        try:
            d.run()
        except Timeout:
            emit("timeout", submitted=d.submitted, pending=len(d.pending),
                 receipts=d.receipts, mo=d.mo, enquire_link_resp=d.enquire_resp)
            code = EXIT_TIMEOUT
        except (smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError, OSError) as e:
            emit("error", error=str(e) or type(e).__name__)
            code = EXIT_ERROR
        try:
            d.unbind()
        except (Timeout, smpplib.exceptions.PDUError, OSError) as e:
            emit("error", error="unbind: %s" % (str(e) or type(e).__name__))
            code = code or EXIT_ERROR
        if code == EXIT_OK and d.rejected:
            code = EXIT_SUBMIT_REJECTED
        return code
    finally:
        d.close()
        d.summary()


if __name__ == "__main__":
    sys.exit(main())
