"""One local Lambda invocation: ``python -m outlast.platforms.local_lambda_child SPEC.json``.

``outlast lambda invoke`` (``outlast.platforms.local_lambda``) starts this in a fresh process
per invocation and kills it with SIGKILL at the deadline, as Lambda does. The spec names the
handler (``module.function`` under the code directory), the event, the context's fields and the
deadline (wall clock, so the time the process took to start is counted). The answer (the
handler's return value, or its error in Lambda's ``errorType``/``errorMessage`` shape) is
written to the spec's ``result`` path; only the standard library is imported before the handler.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["LocalContext", "main"]


class LocalContext:
    """The attributes and methods of Lambda's context object."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.function_name: str = spec["function_name"]
        self.function_version: str = spec["function_version"]
        self.invoked_function_arn: str = spec["invoked_function_arn"]
        self.memory_limit_in_mb: int = int(spec.get("memory_mb", 128))
        self.aws_request_id: str = spec["request_id"]
        self.log_group_name: str = f"/aws/lambda/{self.function_name}"
        self.log_stream_name: str = f"local/[{self.function_version}]{self.aws_request_id}"
        self.identity: Any = None
        self.client_context: Any = None
        self._deadline: float = float(spec["deadline"])

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec: dict[str, Any] = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    result_path = Path(spec["result"])
    code_dir = spec["code_dir"]
    sys.path.insert(0, code_dir)
    answer: dict[str, Any]
    try:
        module_name, _, attr = spec["handler"].rpartition(".")
        handler = getattr(importlib.import_module(module_name), attr)
        value = handler(spec["event"], LocalContext(spec))
        answer = {"ok": True, "result": value}
    except Exception as exc:  # noqa: BLE001 - reported to the caller as Lambda reports it
        answer = {
            "ok": False,
            "errorType": type(exc).__name__,
            "errorMessage": str(exc),
            "stackTrace": traceback.format_exception(exc)[-20:],
        }
    try:
        text = json.dumps(answer, default=str)
    except (TypeError, ValueError) as exc:
        text = json.dumps(
            {"ok": False, "errorType": "Runtime.MarshalError", "errorMessage": str(exc)}
        )
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, result_path)
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
