"""Retry policy for steps: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from outlast.errors import NonRetryableError


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing step is tried again.

    ``max_attempts`` counts the first try. ``non_retryable`` exception types fail the step at once;
    so does any exception with a false ``retryable`` attribute (model adapters set it) and any
    ``NonRetryableError``. ``retry_on``, when given, limits retries to those types.
    """

    max_attempts: int = 3
    initial_delay: float = 0.5
    backoff: float = 2.0
    max_delay: float = 60.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = ()
    non_retryable: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.backoff < 1:
            raise ValueError("delays must be >= 0 and backoff >= 1")

    def retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, (NonRetryableError, *self.non_retryable)):
            return False
        if getattr(exc, "retryable", True) is False:
            return False
        return not self.retry_on or isinstance(exc, self.retry_on)

    def delay(
        self, attempt: int, rng: random.Random | None = None, exc: BaseException | None = None
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        A server that said when to come back (an error with ``retry_after`` seconds, as the
        model adapters raise for HTTP 429) is not asked again sooner than that.
        """
        ceiling = min(self.max_delay, self.initial_delay * self.backoff ** (attempt - 1))
        # Full jitter spreads a thundering herd of retries (AWS architecture blog's advice).
        chosen = (rng or random).uniform(0, ceiling) if self.jitter else ceiling
        asked = getattr(exc, "retry_after", None)
        if isinstance(asked, int | float) and asked > chosen:
            return min(float(asked), self.max_delay)
        return chosen


NO_RETRY = RetryPolicy(max_attempts=1)
