"""The agent function's handler as a module of its own (``app.handler``), for ``sam local``
users of the earlier layout and for tests that import the handler.

Deployments name the generic handler, ``outlast.platforms.lambda_entry.agent``, and the app with
``OUTLAST_APP``; this file only re-exports both. Without ``OUTLAST_APP`` it serves the example.
"""

from __future__ import annotations

import os

from outlast.platforms.aws_lambda import APP_ENV, agent_handler, load_app

__all__ = ["app", "handler"]

SPEC = os.environ.get(APP_ENV) or "examples.research_agent:app"
app = load_app(SPEC)
handler = agent_handler(SPEC)
