#!/usr/bin/env python3
"""Tiny HTTP capture server for Kannel callbacks (dlr-url, MO get-url). stdlib only.

  http_capture.py [--port 0]
prints {"event":"listening","port":P} first, then one line per request:
  {"event":"http","method":"GET","path":"/dlr","query":{"type":"1","id":"..."},"raw":"/dlr?type=1&id=..."}
and answers 200 "ok". Query values are single strings (the first one if repeated).
Only binds 127.0.0.1. Exits on SIGTERM/SIGINT.
"""
import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class H(BaseHTTPRequestHandler):
    def _handle(self):
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
        emit({"event": "http", "method": self.command, "path": u.path, "query": q,
              "raw": self.path, "body": body})
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = _handle
    do_POST = _handle

    def log_message(self, fmt, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), H)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    emit({"event": "listening", "port": srv.server_address[1]})
    try:
        srv.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
