"""The handlers template.yaml names: one generic entry point for every Outlast function.

- ``outlast.platforms.lambda_entry.agent``: legs of the app ``OUTLAST_APP`` names;
- ``outlast.platforms.lambda_entry.api``: the runs HTTP API of that app;
- ``outlast.platforms.lambda_entry.sweeper``: the scheduled sweeper (needs no app).

The app (``OUTLAST_APP=package.module:app``) is imported at cold start, during the function's
init phase, when the variable is set; the sweeper's function leaves it unset and loads nothing.
Your code is the function's package (``AppCodeUri``); Outlast comes from the layer.
"""

from __future__ import annotations

import os
from typing import Any

from outlast.platforms.aws_lambda import (
    APP_ENV,
    agent_handler,
    api_handler,
    load_app,
    sweeper_handler,
)

__all__ = ["agent", "api", "sweeper"]


def agent(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return agent_handler()(event, context)


def api(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result: dict[str, Any] = api_handler()(event, context)
    return result


def sweeper(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result: dict[str, Any] = sweeper_handler()(event, context)
    return result


if os.environ.get(APP_ENV):
    # Cold start: import the user's app now, not in the first invocation's time budget.
    load_app()
