"""The sweeper function's handler as a module of its own (``app.handler``); see
``functions/agent``. Deployments name ``outlast.platforms.lambda_entry.sweeper``."""

from __future__ import annotations

from outlast.platforms.aws_lambda import sweeper_handler

__all__ = ["handler"]

handler = sweeper_handler()
