"""Fault-injection points inside the runtime, for crash tests and the emulator.

``OUTLAST_FAULT=commit:N:PHASE`` makes this process kill itself with SIGKILL at the Nth commit
(1-based), at PHASE ``before-cold`` (value encoded, nothing written), ``before-hot`` (cold blob
written, hot append not yet) or ``after-hot`` (hot append done, the code not yet told). These are
the moments a real crash hurts most, and random timing rarely hits them.
"""

from __future__ import annotations

import os
import signal

PHASES = ("before-cold", "before-hot", "after-hot")


class FaultPlan:
    def __init__(self, spec: str | None = None) -> None:
        spec = spec if spec is not None else os.environ.get("OUTLAST_FAULT", "")
        self.commit_no: int | None = None
        self.phase = ""
        self._commits = 0
        if spec:
            what, _, rest = spec.partition(":")
            number, _, phase = rest.partition(":")
            if what != "commit" or not number.isdigit() or phase not in PHASES:
                raise ValueError(
                    f"OUTLAST_FAULT={spec!r}: expected commit:N:PHASE with PHASE one of {PHASES}"
                )
            self.commit_no, self.phase = int(number), phase

    def next_commit(self) -> None:
        self._commits += 1

    def point(self, phase: str) -> None:
        # "before-cold" runs while a step's value is encoded, before its commit is counted.
        number = self._commits + 1 if phase == "before-cold" else self._commits
        if self.commit_no is not None and number == self.commit_no and phase == self.phase:
            os.kill(os.getpid(), signal.SIGKILL)
