#!/usr/bin/env python3
"""A real HTTP receiver for notification tests: records every POST (path, headers, body) as a
JSON line in OUT and answers STATUS (default 200). Repeats are recorded too: the callers count
them by their X-FlowKit-Delivery id.

  scripts/webhook_receiver.py PORT OUT [--status N]
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, out = int(sys.argv[1]), sys.argv[2]
status = int(sys.argv[sys.argv.index("--status") + 1]) if "--status" in sys.argv else 200
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with lock, open(out, "a") as f:
            f.write(json.dumps({"path": self.path, "headers": dict(self.headers), "body": body.decode()}) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
