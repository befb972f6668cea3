"""``GET /healthz``: 200 while the worker takes runs, 503 once it drains (a readiness probe)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer

    def log_message(self, format: str, *args: object) -> None:
        """Probes arrive every few seconds; logging each would drown the worker's own lines."""

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/healthz":
            self._answer(404, b"not found\n")
        elif self.server.ready():
            self._answer(200, b"ok\n")
        else:
            self._answer(503, b"draining\n")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class HealthServer(ThreadingHTTPServer):
    """Serves in a daemon thread; ``ready`` is asked on every request."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, ready: Callable[[], bool]) -> None:
        super().__init__((host, port), _Handler)
        self.ready = ready
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.2},
            daemon=True,
            name="outlast-health",
        )

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
