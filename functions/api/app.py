"""Lambda entry point of the runs HTTP API (start, status, signal, cancel)."""

from __future__ import annotations

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise NotImplementedError("wired in by the runtime issue")
