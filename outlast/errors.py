"""Outlast's exceptions.

Two families, as in AWS's durable execution SDK:

- ``Exception`` subclasses are errors a caller may handle: a failed step, a failed run, bad input.
- ``DurableControl`` subclasses derive from ``BaseException``. They unwind a durable function when
  the leg must stop (suspend, hand off, lease lost, non-determinism); an ``except Exception:`` in
  user code cannot swallow them, so a leg can always stop cleanly.
"""

from __future__ import annotations

from datetime import datetime

from statestore import ErrorInfo, StateStoreError


class OutlastError(Exception):
    """Base of Outlast's ordinary errors."""


class FunctionNotFoundError(OutlastError, LookupError):
    """A run names a durable function that this app did not register."""


class InvalidInputError(OutlastError, ValueError):
    """A run's input that does not match the durable function's input annotation."""


class TargetError(OutlastError, ValueError):
    """A CLI target (``module:function`` or ``path.py:function``) that cannot be loaded."""


class StepFailedError(OutlastError):
    """A step failed for good (not retryable, or out of attempts).

    Raised the same way live and on replay, so code that catches it behaves the same in both.
    """

    def __init__(
        self, step: str, error: ErrorInfo, attempts: int = 1, seq: int | None = None
    ) -> None:
        self.step = step
        self.error = error
        self.attempts = attempts
        self.seq = seq  # the journal seq of the step's failure entry
        super().__init__(
            f"step {step!r} failed after {attempts} attempt(s): {error.type}: {error.message}"
        )


class StepInterruptedError(StepFailedError):
    """A step was in flight when its leg died, was killed or timed out, and may not run again.

    Either it was interrupted ``max_interruptions`` times (it is longer than its leg can give
    it), or it is ``at_most_once`` and was interrupted once (a payment, an email: whether it
    took effect is unknown, so it is not repeated). Committed as the step's failure, so the same
    error reaches the code live and on replay; ``except StepFailedError`` catches it too.
    """


class StepTimeoutError(OutlastError, TimeoutError):
    """A step ran past its ``timeout``: an ordinary step failure, retried by the step's policy.

    The function's thread cannot be stopped from outside; it is abandoned and its result, if it
    ever comes, is ignored. Steps with side effects should pass the timeout on to what they call.
    """


class NonRetryableError(OutlastError):
    """Raise (or subclass) this in a step to fail it at once, without retries."""


class RunFailedError(OutlastError):
    """``App.result`` of a run that failed or was cancelled."""

    def __init__(self, run_id: str, status: str, error: ErrorInfo | None) -> None:
        self.run_id = run_id
        self.status = status
        self.error = error
        detail = f": {error.type}: {error.message}" if error else ""
        super().__init__(f"run {run_id!r} {status}{detail}")


class RunNotFinishedError(OutlastError):
    """``App.result`` of a run that is still going."""


class DurableControl(BaseException):
    """Unwinds a durable function; user code must not catch it."""


class Suspend(DurableControl):
    """The run waits for a timer or a signal; the state is committed, no compute is held."""

    def __init__(self, wake_at: datetime | None, waiting_for: str | None) -> None:
        super().__init__(wake_at, waiting_for)
        self.wake_at = wake_at
        self.waiting_for = waiting_for


class HandOff(DurableControl):
    """The leg stops early on purpose (budget nearly spent, drain requested)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LeaseLost(DurableControl):
    """Another leg owns the run now (or it was cancelled); stop without writing."""


class StoreFailure(DurableControl):
    """The store failed under a runtime call (a commit, a replayed value's read), not user code.

    It unwinds the durable function like the other control flow, so ``except Exception`` cannot
    turn a failed commit into a run that "succeeded" with a journal that disagrees with it. The
    leg gives its lease back and re-raises ``error`` for the platform to retry.
    """

    def __init__(self, error: StateStoreError) -> None:
        super().__init__(str(error))
        self.error = error


class NonDeterminismError(DurableControl):
    """Replayed code asked for a different operation than the journal holds at that seq.

    A ``BaseException`` on purpose: it means the code changed under a running run, and no
    ``except Exception`` in that code may hide it.
    """

    def __init__(self, run_id: str, seq: int, journal: str, code: str) -> None:
        self.run_id = run_id
        self.seq = seq
        super().__init__(
            f"run {run_id!r} is not deterministic at seq {seq}: the journal has {journal} but "
            f"the code {code if code.startswith('returned') else 'called ' + code}; the code "
            'changed under the run. Guard such a change with `if ctx.patched("change-id"):` '
            "so runs already past this point keep the old path"
        )
