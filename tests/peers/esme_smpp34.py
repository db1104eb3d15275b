#!/usr/bin/env python3
"""ESME driver on top of the PyPI smpp34==1.5.0 wheel (Rust/tokio core, asyncio API).

CLI and events: README.md. Library limits that show up in the event stream:
  * the Python Client has no enquire_link call: --enquire-link prints
    {"event":"unsupported","feature":"enquire_link"} and carries on;
  * deliver_sm_resp is sent by the Rust core itself (always ESME_ROK);
  * unbind_resp is not surfaced, so the "unbound" event has "resp": null;
  * the pdu sequence_number of a submit_sm is not exposed ("pdu_sequence": null).
"""

import asyncio
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (EXIT_BIND_FAILED, EXIT_ERROR, EXIT_OK, EXIT_SUBMIT_REJECTED,  # noqa: E402
                     EXIT_TIMEOUT, cstr, debug, deliver_event, emit, encode_text,
                     esme_arg_parser, validate_esme_args)

import smpp34  # noqa: E402

TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427


def status_of(exc):
    """smpp34 puts the command_status in the message: 'ESME_RINVPASWD (0x0000000e)'."""
    m = re.search(r"0x([0-9a-fA-F]{1,8})", str(exc))
    return int(m.group(1), 16) if m else None


class Driver:
    def __init__(self, args):
        self.a = args
        self.deadline = time.monotonic() + args.timeout
        self.submitted = 0
        self.acked = 0
        self.rejected = 0
        self.receipts = 0
        self.mo = 0
        self.disconnected = False
        self.timed_out = False
        self.changed = asyncio.Event()
        self.smsc = None
        self.client = None

    def remaining(self):
        return max(0.0, self.deadline - time.monotonic())

    async def reader(self):
        while True:
            ev = await self.smsc.next()
            if isinstance(ev, smpp34.DeliverSmEvent):
                rmid = None
                mstate = None
                for t in ev.tlvs:
                    if t.tag == TLV_RECEIPTED_MESSAGE_ID:
                        rmid = cstr(t.value)
                    elif t.tag == TLV_MESSAGE_STATE and t.value:
                        mstate = t.value[0]
                out = deliver_event(ev.esm_class, ev.data_coding, ev.short_message,
                                    ev.source_addr, ev.destination_addr,
                                    receipted_message_id=rmid, message_state=mstate)
                if out["receipt"]:
                    self.receipts += 1
                else:
                    self.mo += 1
                emit("deliver", **out)
            else:
                debug("session event", type(ev).__name__)
                self.disconnected = True
                self.changed.set()
                return
            self.changed.set()

    async def submit_one(self, idx, body, sem):
        a = self.a
        try:
            resp = await self.smsc.submit_sm(
                a.dest_addr, body, source_addr=a.source_addr, data_coding=a.data_coding,
                registered_delivery=a.registered_delivery)
            status = resp.command_status
            mid = resp.message_id if status == 0 else None
        except smpp34.SmppError as e:
            debug("submit_sm error", e)
            status = status_of(e)
            if status is None:
                raise
            mid = None
        finally:
            sem.release()
        if status == 0:
            self.acked += 1
        else:
            self.rejected += 1
        emit("submit_resp", sequence=idx, pdu_sequence=None, status=status, message_id=mid)

    async def run(self):
        a = self.a
        self.client = smpp34.Client(
            host=a.host, port=a.port, system_id=a.system_id, password=a.password,
            bind_type=a.bind_type.upper(), system_type=a.system_type,
            connect_timeout_ms=int(max(0.1, self.remaining()) * 1000))
        self.smsc = await asyncio.wait_for(self.client.connect(), self.remaining())
        emit("bound", bind_type=a.bind_type)
        reader = asyncio.ensure_future(self.reader())
        try:
            if a.enquire_link:
                emit("unsupported", feature="enquire_link")

            body = encode_text(a.text, a.data_coding)
            sem = asyncio.Semaphore(a.window)
            tasks = []
            for i in range(a.submit):
                await asyncio.wait_for(sem.acquire(), self.remaining())
                self.submitted += 1
                tasks.append(asyncio.ensure_future(self.submit_one(i + 1, body, sem)))
            if tasks:
                await asyncio.wait_for(asyncio.gather(*tasks), self.remaining())

            while self.receipts < a.wait_receipts or self.mo < a.wait_mo:
                if self.disconnected:
                    raise ConnectionError("session ended before all deliveries arrived")
                self.changed.clear()
                await asyncio.wait_for(self.changed.wait(), self.remaining())
        except asyncio.TimeoutError:
            self.timed_out = True
            emit("timeout", submitted=self.submitted,
                 pending=self.submitted - self.acked - self.rejected,
                 receipts=self.receipts, mo=self.mo)
        finally:
            if not self.disconnected:
                try:
                    await asyncio.wait_for(self.smsc.unbind(), max(2.0, self.remaining()))
                    emit("unbound", resp=None)
                except Exception as e:  # noqa: BLE001
                    emit("error", error="unbind: %r" % e)
            reader.cancel()


async def amain(args):
    d = Driver(args)
    code = EXIT_OK
    try:
        await d.run()
        if d.timed_out:
            code = EXIT_TIMEOUT
        elif d.rejected:
            code = EXIT_SUBMIT_REJECTED
    except asyncio.TimeoutError:
        if d.smsc is None:
            # smpp34 does not surface a rejected bind_resp (see below): no bind within
            # --timeout is reported as a bind failure with an unknown status.
            emit("bind_failed", status=None, error="no successful bind_resp within timeout")
            code = EXIT_BIND_FAILED
            return code
        emit("timeout", submitted=d.submitted, pending=d.submitted - d.acked - d.rejected,
             receipts=d.receipts, mo=d.mo)
        code = EXIT_TIMEOUT
    except smpp34.SmppError as e:
        status = status_of(e)
        if d.smsc is None and status is not None:
            emit("bind_failed", status=status)
            code = EXIT_BIND_FAILED
        elif d.smsc is None and "bind timed out" in str(e):
            # smpp34 does not surface a rejected bind_resp: connect() just runs into its
            # connect timeout. Report a bind failure with an unknown status.
            emit("bind_failed", status=None, error=str(e))
            code = EXIT_BIND_FAILED
        else:
            emit("error", error=str(e))
            code = EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - connection refused etc.
        if d.smsc is None and "bind timed out" in str(e):
            # smpp34 does not surface a rejected bind_resp: the connect() just runs into
            # its connect timeout. Report it as a bind failure with an unknown status.
            emit("bind_failed", status=None, error=str(e))
            code = EXIT_BIND_FAILED
        else:
            emit("error", error="%s: %s" % (type(e).__name__, e))
            code = EXIT_ERROR
    finally:
        if d.client is not None:
            try:
                await asyncio.wait_for(d.client.stop(), 2.0)
            except Exception:  # noqa: BLE001
                pass
        emit("summary", submitted=d.submitted, acked=d.acked, rejected=d.rejected,
             receipts=d.receipts, mo=d.mo)
    return code


def main():
    args = esme_arg_parser("SMPP ESME driver (smpp34)").parse_args()
    validate_esme_args(args)
    code = asyncio.run(amain(args))
    sys.stdout.flush()
    # The tokio runtime may keep threads alive; do not wait for them.
    os._exit(code)


if __name__ == "__main__":
    main()
