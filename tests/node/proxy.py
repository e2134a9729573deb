"""A registry proxy that injects faults: it answers the first `failures` requests with a 503,
or stalls blob downloads, and forwards everything else to the real registry."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devtools.local_stack.servers import free_port


class FaultyProxy:
    def __init__(self, upstream: str, failures: int = 0, stall_blobs: float = 0.0) -> None:
        self.upstream = upstream
        self.failures = failures
        self.stall_blobs = stall_blobs
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                return

            def _forward(self) -> None:
                with proxy._lock:
                    fail = proxy.failures > 0
                    if fail:
                        proxy.failures -= 1
                if fail:
                    proxy.requests.append((self.command, self.path, 503))
                    self.send_response(503, "Service Unavailable")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if proxy.stall_blobs and "/blobs/" in self.path:
                    time.sleep(proxy.stall_blobs)
                request = urllib.request.Request(f"http://{proxy.upstream}{self.path}", method=self.command)
                for name in ("Accept", "Authorization", "Range"):
                    if self.headers.get(name):
                        request.add_header(name, self.headers[name])
                try:
                    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - loopback
                        status, headers, body = answer.status, answer.headers, answer.read()
                except urllib.error.HTTPError as error:
                    status, headers, body = error.code, error.headers, error.read()
                proxy.requests.append((self.command, self.path, status))
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("connection", "transfer-encoding", "date", "server"):
                        self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = _forward
            do_HEAD = _forward

        return Handler
