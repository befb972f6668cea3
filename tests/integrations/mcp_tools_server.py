"""A tiny real MCP server over stdio, for the Pydantic AI integration tests (mcp's ``MCPServer``).

Run as ``python mcp_tools_server.py CALL_LOG [SLOW_SECONDS]``. It appends ``mcp start`` to
``CALL_LOG`` when it starts, ``mcp list`` when a client lists its tools and ``mcp KEY`` on each
``lookup`` call, so a test can tell whether a replay started the server, listed its tools or
called its tool again. The log's path is an argument, not an environment variable, because the
stdio client starts the server with a sanitized environment.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp_types import Tool

CALL_LOG = sys.argv[1] if len(sys.argv) > 1 else ""
SLOW = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0


def _record(line: str) -> None:
    if CALL_LOG:
        with open(CALL_LOG, "a", encoding="utf-8") as out:
            out.write(line + "\n")


class LoggingServer(MCPServer[Any]):
    async def list_tools(self) -> list[Tool]:
        _record("mcp list")
        return await super().list_tools()


server = LoggingServer("outlast-test-tools", instructions="Looks keys up.")


@server.tool()
async def lookup(key: str, n: int) -> dict[str, str | int]:
    """Look a key up: its value is ten times ``n``."""
    _record(f"mcp {key}")
    await asyncio.sleep(SLOW)
    return {"key": key, "value": n * 10}


if __name__ == "__main__":
    _record("mcp start")
    server.run("stdio")
