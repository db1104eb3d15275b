#!/usr/bin/env python3
"""SMSC (server) peer on top of the PyPI smpp34==1.5.0 wheel (smpp34.Server). CLI/events: README.md.

smpp34's Python Server runs the whole SMPP session in its Rust core, but its Python API
cannot reject a bind (it accepts any system_id/password), does not say which bind type
an ESME used (only Esme.can_receive), does not report enquire_link/unbind, and cannot
listen on port 0 and tell us the port. So this peer puts a thin, frame-transparent TCP
relay in front of it, on the public port:

  ESME --> [relay 127.0.0.1:P]  --forwards every byte-->  [smpp34.Server 127.0.0.1:<internal>]

The relay only *reads* PDU headers (and the system_id/password of a bind). It answers a
bind itself only to reject it (ESME_RINVSYSID 0x0F / ESME_RINVPASWD 0x0E, header-only
resp, then close); everything else -- bind_resp, submit_sm_resp, deliver_sm,
enquire_link_resp, unbind_resp -- is produced by smpp34 and passed through unchanged.
"""

import argparse
import asyncio
import json
import os
import signal
import struct
import sys
import threading
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (debug, decode_text, emit, free_port, message_state_for,  # noqa: E402
                     receipt_text, wants_receipt)

import smpp34  # noqa: E402

BIND_IDS = {0x00000001: "rx", 0x00000002: "tx", 0x00000009: "trx"}
CMD_UNBIND = 0x00000006
CMD_ENQUIRE_LINK = 0x00000015
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
MAX_PDU = 64 * 1024


def parse_args():
    p = argparse.ArgumentParser(description="SMSC peer (smpp34 + bind-checking relay)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--system-id", default=None)
    p.add_argument("--password", default=None)
    p.add_argument("--receipt-delay-ms", type=int, default=0)
    p.add_argument("--receipt-stat", default="DELIVRD")
    p.add_argument("--smsc-system-id", default="smsc_smpp34")
    p.add_argument("--raw-unbind", action="store_true",
                   help="do not synthesise unbind_resp (show smpp34's native behaviour)")
    a = p.parse_args()
    if a.host != "127.0.0.1":
        print("only 127.0.0.1 is allowed", file=sys.stderr)
        sys.exit(64)
    return a


async def read_pdu(reader):
    head = await reader.readexactly(4)
    (length,) = struct.unpack(">I", head)
    if length < 16 or length > MAX_PDU:
        raise ValueError("bad command_length %d" % length)
    return head + await reader.readexactly(length - 4)


def cstrings(body, n):
    out = []
    pos = 0
    for _ in range(n):
        end = body.find(b"\x00", pos)
        if end < 0:
            out.append(body[pos:].decode("latin-1"))
            pos = len(body)
        else:
            out.append(body[pos:end].decode("latin-1"))
            pos = end + 1
    return out


class Peer:
    def __init__(self, args):
        self.a = args
        self.server = None
        self.internal_port = None
        self.esmes = {}           # smpp34 session_id -> Esme
        self.conn_ids = 0
        self.tasks = set()

    # -- relay ---------------------------------------------------------------
    async def handle_conn(self, creader, cwriter):
        self.conn_ids += 1
        cid = self.conn_ids
        state = {"bound": False, "unbind": False, "bind_seq": {}}
        sreader = swriter = None
        try:
            first = await read_pdu(creader)
            _, cmd, _, seq = struct.unpack(">IIII", first[:16])
            if cmd in BIND_IDS:
                system_id, password = cstrings(first[16:], 2)
                status = 0
                if self.a.system_id is not None and system_id != self.a.system_id:
                    status = ESME_RINVSYSID
                elif self.a.password is not None and password != self.a.password:
                    status = ESME_RINVPASWD
                if status:
                    emit("bind_rejected", bind_type=BIND_IDS[cmd], system_id=system_id,
                         status=status)
                    cwriter.write(struct.pack(">IIII", 16, cmd | 0x80000000, status, seq))
                    await cwriter.drain()
                    return
                state["bind_seq"][seq] = (BIND_IDS[cmd], system_id)
            sreader, swriter = await asyncio.open_connection("127.0.0.1", self.internal_port)
            swriter.write(first)
            await swriter.drain()

            async def up():
                while True:
                    pdu = await read_pdu(creader)
                    _, c, _, s = struct.unpack(">IIII", pdu[:16])
                    debug("conn", cid, ">>", hex(c), "seq", s)
                    if c == CMD_ENQUIRE_LINK:
                        emit("enquire_link", session=cid)
                    elif c == CMD_UNBIND:
                        state["unbind"] = True
                        emit("unbind", session=cid)
                        state["unbind_seq"] = s
                    elif c in BIND_IDS:
                        state["bind_seq"][s] = (BIND_IDS[c], cstrings(pdu[16:], 1)[0])
                    swriter.write(pdu)
                    await swriter.drain()

            async def down():
                while True:
                    pdu = await read_pdu(sreader)
                    _, c, st, s = struct.unpack(">IIII", pdu[:16])
                    debug("conn", cid, "<<", hex(c), "status", st, "seq", s)
                    if c == CMD_UNBIND | 0x80000000:
                        state["unbind_resp"] = True
                    if (c & 0x7FFFFFFF) in BIND_IDS and s in state["bind_seq"]:
                        bt, sid = state["bind_seq"].pop(s)
                        if st == 0:
                            state["bound"] = True
                            emit("bind", bind_type=bt, system_id=sid, session=cid)
                        else:
                            emit("bind_rejected", bind_type=bt, system_id=sid, status=st)
                    cwriter.write(pdu)
                    await cwriter.drain()

            t_up = asyncio.ensure_future(up())
            t_down = asyncio.ensure_future(down())
            done, pending = await asyncio.wait({t_up, t_down}, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            for t in done:
                if t.exception() is not None:
                    debug("conn", cid, "relay ended:", repr(t.exception()))
            if ("unbind_seq" in state and not state.get("unbind_resp")
                    and not self.a.raw_unbind and t_down in done):
                # smpp34 1.5.0 closes tx/trx sessions on unbind without an unbind_resp
                # (it does send one on rx binds): answer it here, once, before closing.
                debug("conn", cid, "synthesising unbind_resp seq", state["unbind_seq"])
                cwriter.write(struct.pack(">IIII", 16, CMD_UNBIND | 0x80000000, 0,
                                          state["unbind_seq"]))
                await cwriter.drain()
            if state["bound"] and not state["unbind"]:
                emit("disconnect", session=cid)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as e:
            debug("conn", cid, "closed:", repr(e))
        finally:
            for w in (swriter, cwriter):
                if w is not None:
                    try:
                        w.close()
                    except Exception:  # noqa: BLE001
                        pass

    # -- smpp34 events ------------------------------------------------------
    async def send_receipt(self, ev, message_id, stat, system_id):
        await asyncio.sleep(self.a.receipt_delay_ms / 1000.0)
        target = self.esmes.get(ev.session_id)
        if target is None or not target.can_receive:
            target = None
            for e in self.esmes.values():
                if e.can_receive and e.system_id == system_id:
                    target = e
                    break
        if target is None:
            emit("receipt_skipped", message_id=message_id, reason="no receiver/transceiver session")
            return
        text = receipt_text(message_id, stat, decode_text(ev.short_message, ev.data_coding))
        try:
            resp = await target.deliver_sm(
                ev.source_addr, text.encode("latin-1"),
                source_addr=ev.destination_addr,
                source_addr_ton=ev.dest_addr_ton, source_addr_npi=ev.dest_addr_npi,
                dest_addr_ton=ev.source_addr_ton, dest_addr_npi=ev.source_addr_npi,
                esm_class=0x04, data_coding=0,
                tlvs=[smpp34.Tlv(smpp34.TLV_RECEIPTED_MESSAGE_ID,
                                 message_id.encode("latin-1") + b"\x00"),
                      smpp34.Tlv(smpp34.TLV_MESSAGE_STATE, bytes([message_state_for(stat)]))])
            emit("receipt_sent", message_id=message_id, status=resp.command_status)
        except Exception as e:  # noqa: BLE001 - session gone, RustPanic, ...
            emit("receipt_skipped", message_id=message_id, reason="deliver_sm failed: %r" % e)

    async def events(self):
        while True:
            ev = await self.server.next()
            if isinstance(ev, smpp34.Esme):
                debug("esme bound", ev.session_id, ev.system_id, "can_receive", ev.can_receive)
                self.esmes[ev.session_id] = ev
            elif isinstance(ev, smpp34.SubmitSmEvent):
                mid = str(uuid.uuid4())
                ev.accept(mid)
                emit("submit", message_id=mid, registered_delivery=ev.registered_delivery,
                     source_addr=ev.source_addr, dest_addr=ev.destination_addr,
                     data_coding=ev.data_coding, esm_class=ev.esm_class,
                     text=decode_text(ev.short_message, ev.data_coding))
                if wants_receipt(ev.registered_delivery, self.a.receipt_stat):
                    t = asyncio.ensure_future(self.send_receipt(ev, mid, self.a.receipt_stat,
                                                            ev_system_id(self, ev)))
                    self.tasks.add(t)
                    t.add_done_callback(self.tasks.discard)
            elif isinstance(ev, smpp34.Unbound):
                debug("esme session ended", ev.session_id)
                self.esmes.pop(ev.session_id, None)

    async def command(self, line):
        """stdin control line, same contract as smsc_node.js (README.md, "Control channel")."""
        try:
            c = json.loads(line)
        except ValueError:
            emit("command_error", error="bad JSON")
            return
        if c.get("cmd") != "deliver":
            emit("command_error", error="unknown cmd %s" % c.get("cmd"))
            return
        target = None
        # Newest session first: a session the ESME just unbound may not be reaped yet.
        for e in reversed(list(self.esmes.values())):
            if e.can_receive and (not c.get("system_id") or e.system_id == c["system_id"]):
                target = e
                break
        if target is None:
            emit("mo_failed", reason="no receiver/transceiver session")
            return
        dc = 8 if c.get("data_coding") == 8 else 0
        text = "hello" if c.get("text") is None else str(c["text"])
        body = text.encode("utf-16-be") if dc == 8 else text.encode("latin-1", "replace")
        try:
            resp = await target.deliver_sm(c.get("dest_addr") or "12345", body,
                                           source_addr=c.get("source_addr") or "31600000000",
                                           esm_class=0, data_coding=dc)
            emit("mo_sent", status=resp.command_status)
        except Exception as e:  # noqa: BLE001
            emit("mo_failed", reason="deliver_sm failed: %r" % e)

    def stdin_reader(self, loop):
        for line in sys.stdin:
            if line.strip():
                asyncio.run_coroutine_threadsafe(self.command(line.strip()), loop)

    async def run(self):
        last = None
        for _ in range(5):
            self.internal_port = free_port()
            self.server = smpp34.Server(host="127.0.0.1", port=self.internal_port,
                                        system_id=self.a.smsc_system_id)
            try:
                await self.server.start()
                break
            except smpp34.SmppError as e:   # port raced away; try another one
                last = e
                self.server = None
        if self.server is None:
            raise SystemExit("smpp34.Server failed to start: %s" % last)
        front = await asyncio.start_server(self.handle_conn, "127.0.0.1", self.a.port)
        port = front.sockets[0].getsockname()[1]
        emit("listening", port=port)
        debug("internal smpp34 port", self.internal_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        events = asyncio.ensure_future(self.events())
        threading.Thread(target=self.stdin_reader, args=(loop,), daemon=True).start()
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({events, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if events.done() and events.exception():
            print("smpp34 event loop failed: %r" % events.exception(), file=sys.stderr)
        front.close()
        try:
            await asyncio.wait_for(self.server.stop(), 2.0)
        except Exception:  # noqa: BLE001
            pass


def ev_system_id(peer, ev):
    e = peer.esmes.get(ev.session_id)
    return e.system_id if e is not None else None


def main():
    args = parse_args()
    try:
        asyncio.run(Peer(args).run())
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
