"""Shared helpers for the Python SMPP peer drivers (stdlib only).

Imported by esme_smpplib.py, esme_smpp34.py and smsc_smpp34.py; see README.md
for the CLI contract and the JSON event stream these helpers produce.
"""

import argparse
import json
import os
import re
import sys
import time

DEBUG = os.environ.get("SMPP_PEER_DEBUG") == "1"

# Exit codes shared by all ESME drivers (README.md, "Exit codes").
EXIT_OK = 0
EXIT_TIMEOUT = 1
EXIT_BIND_FAILED = 2
EXIT_ERROR = 3
EXIT_SUBMIT_REJECTED = 4
EXIT_USAGE = 64


def emit(event, **fields):
    """Write one JSON event line to stdout and flush it."""
    obj = {"event": event}
    obj.update(fields)
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def debug(*args):
    if DEBUG:
        print("[%s %.3f]" % (os.path.basename(sys.argv[0]), time.monotonic()), *args,
              file=sys.stderr, flush=True)


def esme_arg_parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--system-id", required=True)
    p.add_argument("--password", default="")
    p.add_argument("--system-type", default="")
    p.add_argument("--bind-type", choices=("tx", "rx", "trx"), default="trx")
    p.add_argument("--submit", type=int, default=0, metavar="N")
    p.add_argument("--text", default="hello")
    p.add_argument("--data-coding", type=int, choices=(0, 8), default=0)
    p.add_argument("--registered-delivery", type=int, choices=(0, 1, 2), default=0)
    p.add_argument("--wait-receipts", type=int, default=0, metavar="N")
    p.add_argument("--wait-mo", type=int, default=0, metavar="N")
    p.add_argument("--enquire-link", action="store_true")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECS")
    p.add_argument("--source-addr", default="12345")
    p.add_argument("--dest-addr", default="31600000000")
    p.add_argument("--window", type=int, default=10,
                   help="max outstanding submit_sm (default 10)")
    return p


def validate_esme_args(args):
    if args.host != "127.0.0.1" and not os.environ.get("SMPP_PEER_ALLOW_REMOTE"):
        print("refusing to talk to %s: only 127.0.0.1 is allowed" % args.host, file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if args.submit > 0 and args.bind_type == "rx":
        print("--submit needs a tx or trx bind", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if (args.wait_receipts or args.wait_mo) and args.bind_type == "tx":
        print("--wait-receipts/--wait-mo need an rx or trx bind", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if args.window < 1:
        args.window = 1


def encode_text(text, data_coding):
    if data_coding == 8:
        return text.encode("utf-16-be")
    return text.encode("latin-1", errors="replace")


def decode_text(raw, data_coding):
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if data_coding == 8:
        try:
            return raw.decode("utf-16-be")
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1")


def cstr(v):
    """TLV / field value (bytes with optional NUL, str or None) -> str or None."""
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)):
        v = bytes(v).split(b"\x00", 1)[0].decode("latin-1")
    return str(v)


_RECEIPT_FIELDS = {
    "id": re.compile(r"(?:^|\s)id:(\S*)", re.I),
    "sub": re.compile(r"(?:^|\s)sub:(\S*)", re.I),
    "dlvrd": re.compile(r"(?:^|\s)dlvrd:(\S*)", re.I),
    "submit_date": re.compile(r"(?:^|\s)submit date:(\S*)", re.I),
    "done_date": re.compile(r"(?:^|\s)done date:(\S*)", re.I),
    "stat": re.compile(r"(?:^|\s)stat:(\S*)", re.I),
    "err": re.compile(r"(?:^|\s)err:(\S*)", re.I),
    "text": re.compile(r"(?:^|\s)text:(.*)$", re.I | re.S),
}


def parse_receipt_text(text):
    """Parse SMPP 3.4 Appendix B receipt text; missing fields are None."""
    out = {}
    for k, rx in _RECEIPT_FIELDS.items():
        m = rx.search(text or "")
        out[k] = m.group(1) if m else None
    return out


def deliver_event(esm_class, data_coding, raw_short_message, source_addr, dest_addr,
                  receipted_message_id=None, message_state=None):
    """Build the fields of a {"event":"deliver"} line (shared by all Python ESMEs)."""
    text = decode_text(raw_short_message, data_coding)
    receipt = bool(esm_class & 0x04)
    ev = {
        "receipt": receipt,
        "esm_class": esm_class,
        "data_coding": data_coding,
        "source_addr": source_addr,
        "dest_addr": dest_addr,
        "text": text,
    }
    if receipt:
        r = parse_receipt_text(text)
        ev.update({
            "receipted_message_id": receipted_message_id,
            "message_state": message_state,
            "id": r["id"],
            "stat": r["stat"],
            "err": r["err"],
            "sub": r["sub"],
            "dlvrd": r["dlvrd"],
            "submit_date": r["submit_date"],
            "done_date": r["done_date"],
        })
    return ev


def free_port():
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


_STATES = {"ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5,
           "ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8}


def message_state_for(stat):
    return _STATES.get(stat.upper(), 7)


def receipt_text(msg_id, stat, short_message_text):
    now = time.strftime("%y%m%d%H%M", time.gmtime())
    dlvrd = "001" if stat.upper() == "DELIVRD" else "000"
    err = "000" if stat.upper() == "DELIVRD" else "001"
    return "id:%s sub:001 dlvrd:%s submit date:%s done date:%s stat:%s err:%s text:%s" % (
        msg_id, dlvrd, now, now, stat, err, ascii_only((short_message_text or "")[:20]))


def ascii_only(text):
    """Receipt text is sent with data_coding 0: keep it printable ASCII ('?' otherwise)."""
    return "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in text)


def wants_receipt(registered_delivery, stat):
    rd = registered_delivery & 0x03
    if rd == 1:
        return True
    if rd == 2:
        return stat.upper() != "DELIVRD"
    return False
