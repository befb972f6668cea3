"""Validation of run ids, which become parts of keys, file names and S3 object names."""

from __future__ import annotations

import re

from statestore.errors import InvalidRunIdError

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` if it is legal, else raise ``InvalidRunIdError`` saying why."""
    if not isinstance(run_id, str):
        raise InvalidRunIdError(f"run id must be a string, got {type(run_id).__name__}")
    if RUN_ID_PATTERN.fullmatch(run_id) is None:
        if not run_id:
            why = "it is empty"
        elif len(run_id) > 64:
            why = f"it is {len(run_id)} characters long (at most 64)"
        else:
            bad = sorted({c for c in run_id if not (c.isascii() and (c.isalnum() or c in "_-"))})
            why = "it contains " + ", ".join(repr(c) for c in bad)
        raise InvalidRunIdError(
            f"illegal run id {run_id!r}: {why}; a run id is 1-64 characters of A-Z a-z 0-9 _ -"
        )
    return run_id
