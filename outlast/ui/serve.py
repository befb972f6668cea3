"""uvicorn's server for the console, which ends the console's event streams as it stops.

uvicorn's graceful shutdown waits for every open response to end, and an event stream never
ends by itself: without this, one open run page would hold ``outlast ui`` up at Ctrl-C.
"""

from __future__ import annotations

import socket

import uvicorn
from starlette.applications import Starlette

from outlast.ui.live import Feeds

# If a response still has not ended this long after shutdown began, uvicorn cancels it.
GRACEFUL_S = 5


class ConsoleServer(uvicorn.Server):
    def __init__(self, app: Starlette, host: str, port: int, log_level: str = "warning") -> None:
        super().__init__(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level=log_level,
                timeout_graceful_shutdown=GRACEFUL_S,
            )
        )
        feeds = getattr(app.state, "feeds", None)
        self._feeds = feeds if isinstance(feeds, Feeds) else None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._feeds is not None:
            self._feeds.stop()
        await super().shutdown(sockets)
