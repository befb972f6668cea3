"""Lambda entry point of the sweeper: re-drives runs with expired leases, wakes due runs.

It needs no durable functions: it reads the hot tier's due index and invokes the agent function
(``OUTLAST_AGENT_FUNCTION``) with a recovery event for each due run.
"""

from __future__ import annotations

from outlast.platforms.sweeper import SweeperHandler

__all__ = ["handler"]

handler = SweeperHandler()
