#!/usr/bin/env python3
"""A service to put behind opgate, in Python with the standard library only.

opgate authenticates the caller, checks the scope, validates the body against the schema in opgate.toml,
applies rate limits, idempotency and audit, then POSTs the body here with the caller's identity signed in
three headers. This service trusts the identity only after verifying that signature.

    REPORTS_UPSTREAM_SECRET=... python3 service.py [PORT]      # default 9000; 0 picks a free port

Operations (declared in opgate.toml):
    reports.generate  POST /generate  one JSON object back
    reports.list      POST /list      an NDJSON stream, one report per line
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["REPORTS_UPSTREAM_SECRET"].encode()
TOLERANCE_SECONDS = 300


def verify(secret: bytes, headers, body: bytes, tolerance: int = TOLERANCE_SECONDS):
    """The caller's identity if opgate signed this request (and this body) recently, else None."""
    identity = headers.get("Opgate-Identity", "")
    timestamp = headers.get("Opgate-Timestamp", "")
    signature = headers.get("Opgate-Signature", "")
    request_id = headers.get("X-Request-Id", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return None
    signed = f"{timestamp}.{request_id}.{identity}.".encode() + body
    expected = "v1=" + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(signature, expected):
        return None
    return json.loads(base64.urlsafe_b64decode(identity + "=" * (-len(identity) % 4)))


REPORTS = []  # (org_id, mode, report): each organization and mode sees only its own
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        caller = verify(SECRET, self.headers, body)
        if caller is None:
            return self.answer(403, {"error": {"code": "permission_denied",
                                               "message": "the caller's identity does not verify"}})
        request = json.loads(body)
        if self.path == "/generate":
            with LOCK:
                report = {
                    "id": f"rep_{len(REPORTS) + 1}",
                    "title": request["title"],
                    "pages": request.get("pages", 1),
                    "requested_by": caller["principal"]["id"],
                }
                REPORTS.append((caller["org_id"], caller["mode"], report))
            return self.answer(200, report)
        if self.path == "/list":
            with LOCK:
                mine = [r for org, mode, r in REPORTS if (org, mode) == (caller["org_id"], caller["mode"])]
            lines = b"".join(json.dumps(r).encode() + b"\n" for r in mine[: request.get("limit", 1000)])
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Content-Length", str(len(lines)))
            self.end_headers()
            self.wfile.write(lines)
            return None
        return self.answer(404, {"error": {"code": "not_found", "message": f"no route {self.path}"}})

    def answer(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"reports service listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
