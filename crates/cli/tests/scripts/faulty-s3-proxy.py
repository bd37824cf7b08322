#!/usr/bin/env python3
"""An HTTP proxy in front of an S3 server that fails and slows down some requests.

    faulty-s3-proxy.py LISTEN_PORT UPSTREAM_PORT CONTROL_FILE

Listens on 127.0.0.1:LISTEN_PORT and forwards every request, headers (Host and the
signature included) and body unchanged, to 127.0.0.1:UPSTREAM_PORT. Before each request
it reads CONTROL_FILE, which holds "FAIL SLOW DELAY_MS" (e.g. "0.1 0.05 3000"): with
probability FAIL the request is answered 503 SlowDown, as a throttling S3 service does,
without reaching the server; with probability SLOW it is forwarded after DELAY_MS. A
missing or empty file means "0 0 0". Counts go to stderr as "served N failed F slowed S"
every 100 requests. Runs until killed.
"""
import http.client
import http.server
import random
import sys
import threading
import time

LISTEN, UPSTREAM, CONTROL = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
counts = {"served": 0, "failed": 0, "slowed": 0}
lock = threading.Lock()
local = threading.local()


def settings():
    try:
        with open(CONTROL) as f:
            parts = f.read().split()
        fail, slow, delay = (float(p) for p in (parts + ["0", "0", "0"])[:3])
        return fail, slow, delay / 1000.0
    except (OSError, ValueError):
        return 0.0, 0.0, 0.0


def count(what):
    with lock:
        counts[what] += 1
        total = counts["served"] + counts["failed"]
        if total % 100 == 0:
            print("served {served} failed {failed} slowed {slowed}".format(**counts),
                  file=sys.stderr, flush=True)


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        fail, slow, delay = settings()
        if random.random() < fail:
            count("failed")
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOW_DOWN)))
            self.send_header("Retry-After", "1")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(SLOW_DOWN)
            return
        if random.random() < slow:
            count("slowed")
            time.sleep(delay)
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True,
                            skip_accept_encoding=True)
            for name, value in self.headers.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            local.conn = None
            conn.close()
            self.send_error(502)
            return
        count("served")
        self.send_response(resp.status, resp.reason)
        for name, value in resp.getheaders():
            # A HEAD's Content-Length is the object's; otherwise the body's, read whole.
            if name.lower() in ("transfer-encoding", "connection") or (
                    name.lower() == "content-length" and self.command != "HEAD"):
                continue
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


server = http.server.ThreadingHTTPServer(("127.0.0.1", LISTEN), Proxy)
server.daemon_threads = True
server.serve_forever()
