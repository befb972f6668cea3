"""Lambda entry point of the example durable agent: one invocation is one leg of a run.

The research agent (``examples/research_agent.py`` and its corpus) is copied next to this file by
the build (``functions/Makefile``), so ``examples.research_agent`` imports the same way here, in
the repository and in the deployed package.
"""

from __future__ import annotations

import os

from examples.research_agent import app
from outlast.platforms.aws_lambda import LambdaHandler

__all__ = ["app", "handler"]

# The platform takes the app (the app knows no platform).
handler = LambdaHandler(app, service=os.environ.get("POWERTOOLS_SERVICE_NAME", "outlast-agent"))
