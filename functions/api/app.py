"""The API function's handler as a module of its own (``app.handler``); see ``functions/agent``.

Deployments name ``outlast.platforms.lambda_entry.api``; without ``OUTLAST_APP`` this serves the
example.
"""

from __future__ import annotations

import os

from outlast.platforms.aws_lambda import APP_ENV, api_handler, load_app

__all__ = ["app", "handler"]

SPEC = os.environ.get(APP_ENV) or "examples.research_agent:app"
app = load_app(SPEC)
handler = api_handler(SPEC)
