"""Kill points inside the commit path, for crash tests and the local emulator.

``FaultPlan("commit:N:PHASE")`` kills this process with SIGKILL at the Nth commit (1-based) of a
leg, at PHASE ``before-cold`` (value encoded, nothing written), ``before-hot`` (cold blob written,
hot append not yet) or ``after-hot`` (hot append done, the code not yet told). These are the
moments a real crash hurts most, and random timing rarely hits them.

It is armed only by code that passes ``plan.point`` as a leased run's ``fault`` hook (the
emulator's leg subprocess does, from its command line); nothing reads it from the environment.
"""

from __future__ import annotations

import os
import signal

PHASES = ("before-cold", "before-hot", "after-hot")


class FaultPlan:
    def __init__(self, spec: str = "") -> None:
        self.commit_no: int | None = None
        self.phase = ""
        self._commits = 0
        if spec:
            what, _, rest = spec.partition(":")
            number, _, phase = rest.partition(":")
            if what != "commit" or not number.isdigit() or phase not in PHASES:
                raise ValueError(
                    f"fault {spec!r}: expected commit:N:PHASE with PHASE one of {PHASES}"
                )
            self.commit_no, self.phase = int(number), phase

    def point(self, phase: str) -> None:
        """The leased run's fault hook: called at each phase of each commit, in order.

        Every commit passes "before-hot" once; "before-cold" comes before it for a value.
        """
        if phase == "before-hot":
            self._commits += 1
        number = self._commits + 1 if phase == "before-cold" else self._commits
        if self.commit_no is not None and number == self.commit_no and phase == self.phase:
            os.kill(os.getpid(), signal.SIGKILL)
