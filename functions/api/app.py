"""Lambda entry point of the runs HTTP API (start, status, signal, cancel, retry, delete).

It imports the agent's app for its registry (an unknown function is refused with 400 before
anything is written) and for reading results; legs run in the agent function, which this one
invokes asynchronously (``OUTLAST_AGENT_FUNCTION``).
"""

from __future__ import annotations

from examples.research_agent import app
from outlast.platforms.api import ApiHandler

__all__ = ["app", "handler"]

handler = ApiHandler(app)
