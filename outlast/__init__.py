"""Outlast: durable agent runs that survive timeouts, evictions and kills.

This module is the public surface; everything else is implementation.
"""

from outlast.app import App, DurableFunction, RunView
from outlast.budget import Budget
from outlast.context import Context
from outlast.dispatch import CollectingDispatcher, Dispatcher, NullDispatcher
from outlast.errors import (
    DurableControl,
    FunctionNotFoundError,
    HandOff,
    LeaseLost,
    NonDeterminismError,
    NonRetryableError,
    OutlastError,
    RunFailedError,
    RunNotFinishedError,
    StepFailedError,
    Suspend,
    TargetError,
)
from outlast.leg import LegOutcome, run_leg
from outlast.retry import NO_RETRY, RetryPolicy

__all__ = [
    "NO_RETRY",
    "App",
    "Budget",
    "CollectingDispatcher",
    "Context",
    "Dispatcher",
    "DurableControl",
    "DurableFunction",
    "FunctionNotFoundError",
    "HandOff",
    "LeaseLost",
    "LegOutcome",
    "NonDeterminismError",
    "NonRetryableError",
    "NullDispatcher",
    "OutlastError",
    "RetryPolicy",
    "RunFailedError",
    "RunNotFinishedError",
    "RunView",
    "StepFailedError",
    "Suspend",
    "TargetError",
    "run_leg",
]
