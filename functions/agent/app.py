"""Lambda entry point of the example durable agent: one invocation is one leg of a run."""

from __future__ import annotations

from typing import Any


def handler(event: dict[str, Any], context: Any) -> Any:
    raise NotImplementedError("wired in by the runtime issue")
