"""Outlast: durable agent runs that survive timeouts, evictions and kills.

This module is the public surface: what users write and catch. Everything else is
implementation; the machinery a platform needs (``run_leg``, dispatchers, the control-flow
exceptions that unwind a leg) lives in its own modules (``outlast.leg``, ``outlast.dispatch``,
``outlast.errors``).
"""

from outlast.app import App, DurableFunction, RunView
from outlast.async_context import AsyncContext
from outlast.budget import Budget
from outlast.context import Context, current_context
from outlast.errors import (
    FunctionNotFoundError,
    InvalidInputError,
    NonDeterminismError,
    NonRetryableError,
    OutlastError,
    RunFailedError,
    RunNotFinishedError,
    StepFailedError,
    StepInterruptedError,
    StepTimeoutError,
)
from outlast.retry import NO_RETRY, RetryPolicy
from outlast.values import StoredValueError, register_codec
from statestore import (
    RunConflictError,
    RunNotFoundError,
    RunStatus,
)

__all__ = [
    "NO_RETRY",
    "App",
    "AsyncContext",
    "Budget",
    "Context",
    "DurableFunction",
    "FunctionNotFoundError",
    "InvalidInputError",
    "NonDeterminismError",
    "NonRetryableError",
    "OutlastError",
    "RetryPolicy",
    "RunConflictError",
    "RunFailedError",
    "RunNotFinishedError",
    "RunNotFoundError",
    "RunStatus",
    "RunView",
    "StepFailedError",
    "StepInterruptedError",
    "StepTimeoutError",
    "StoredValueError",
    "current_context",
    "register_codec",
]
