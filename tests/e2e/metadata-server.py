#!/usr/bin/env python3
"""An EC2-style instance metadata service for the end-to-end tests, in
IMDSv2-only mode: PUT /latest/api/token gives a session token, and every
GET without it is refused (401), as an instance with "HttpTokens: required".
Paths under /nocloud/ are served without a token, as a NoCloud seed URL.

QEMU runs it for each guest connection to 169.254.169.254:80 (guestfwd with
cmd:), the connection on stdin and stdout. Python's own HTTP server parses
the requests. Usage: metadata-server.py DIR LOG, where DIR holds the
answers (user-data, meta-data/instance-id, ...) and each request is
appended to LOG as "METHOD PATH TOKEN-OR-DASH STATUS".
"""

import http.server
import os
import sys

TOKEN = "AQAEAbrig-e2e-token=="
root, log = sys.argv[1], sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        # The connection is our stdin and stdout, not a socket.
        self.rfile = sys.stdin.buffer
        self.wfile = sys.stdout.buffer

    def finish(self):
        self.wfile.flush()

    def answer(self, status, body=b""):
        token = self.headers.get("X-aws-ec2-metadata-token", "-")
        with open(log, "a") as f:
            f.write(f"{self.command} {self.path} {token} {status}\n")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        if self.path == "/latest/api/token" and ttl:
            self.answer(200, TOKEN.encode())
        else:
            self.answer(400)

    def do_GET(self):
        # /nocloud/ is a plain web server for NoCloud seed URLs; the rest is
        # the metadata service, which wants its token.
        nocloud = self.path.startswith("/nocloud/")
        if not nocloud and self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            return self.answer(401)
        relative = os.path.normpath(self.path.removeprefix("/latest/")).lstrip("/")
        path = os.path.join(root, relative)
        if os.path.isdir(path):
            # A listing, as the service gives for directories.
            self.answer(200, "\n".join(sorted(os.listdir(path))).encode())
        elif os.path.isfile(path):
            with open(path, "rb") as f:
                self.answer(200, f.read())
        else:
            self.answer(404)

    def log_message(self, *args):
        pass


Handler(None, ("guest", 0), None)
