"""Lambda entry point of the example durable agent: one invocation is one leg of a run.

The research agent (``examples/research_agent.py`` and its corpus) is copied next to this file by
the build (``functions/Makefile``), so ``examples.research_agent`` imports the same way here, in
the repository and in the deployed package.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Only /tmp is writable on Lambda; the agent's `note` tool writes there. Set before the import,
# which reads it.
os.environ.setdefault("OUTLAST_NOTES_DIR", str(Path(tempfile.gettempdir()) / "outlast-notes"))

from examples.research_agent import app

__all__ = ["app", "handler"]

handler = app.lambda_handler(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "outlast-agent"))
