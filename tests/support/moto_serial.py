"""moto's own server, answering one request at a time.

moto runs a DynamoDB transaction on a deep copy of the table and restores that copy when the
transaction is cancelled, so a cancelled transaction undoes whatever other requests wrote to the
table meanwhile (a lease renewal, another run's append). DynamoDB itself isolates requests;
serving them one at a time gives moto that isolation. Everything else is ``moto_server``:
the same WSGI application and request handler, over HTTP.

Usage: ``python -m tests.support.moto_serial HOST PORT``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

_lock = threading.Lock()


def serial(app: Callable[..., Iterable[bytes]]) -> Callable[..., list[bytes]]:
    def one_at_a_time(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with _lock:
            body = app(environ, start_response)
            try:
                return list(body)  # the whole reply is made while the lock is held
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()

    return one_at_a_time


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, serial(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
