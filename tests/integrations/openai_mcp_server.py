"""A tiny real MCP server over stdio for the OpenAI Agents SDK tests (mcp's ``MCPServer``).

Run as ``python openai_mcp_server.py CALL_LOG``. Each ``convert`` call appends ``convert KEY PID``
to ``CALL_LOG``, so a test can count how many times each call reached the server. The log's path
is an argument, not an environment variable, because the stdio client starts the server with a
sanitized environment.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from mcp.server.mcpserver import MCPServer

CALL_LOG = sys.argv[1] if len(sys.argv) > 1 else ""

server: MCPServer[Any] = MCPServer("outlast-oa-tools", instructions="Converts units.")


@server.tool()
def convert(key: str, celsius: int) -> str:
    """Convert a temperature in Celsius to Fahrenheit, labelled with ``key``."""
    if CALL_LOG:
        with open(CALL_LOG, "a", encoding="utf-8") as out:
            out.write(f"convert {key} {os.getpid()}\n")
    return f"{key}={celsius * 9 // 5 + 32}F"


if __name__ == "__main__":
    server.run("stdio")
