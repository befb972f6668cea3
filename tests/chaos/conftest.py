"""Chaos suite settings: short by default (part of `make test`), long with CHAOS_LONG=1.

CHAOS_SEED=N runs only seed N; CHAOS_RUNS=N sets the runs per backend and seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.driver import Report

LONG = os.environ.get("CHAOS_LONG", "") not in ("", "0")
REPORTS: list[Report] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTS:
        return
    write = terminalreporter.write_line
    write("")
    write("=" * 30 + " chaos summary " + "=" * 30)
    for report in REPORTS:
        for line in report.summary().splitlines():
            write(line)
    faults: dict[str, int] = {}
    for report in REPORTS:
        for kind, n in report.faults.items():
            faults[kind] = faults.get(kind, 0) + n
    kinds: dict[str, int] = {}
    for report in REPORTS:
        for kind, n in report.violation_kinds().items():
            kinds[kind] = kinds.get(kind, 0) + n
    write(
        f"TOTAL: {sum(r.runs for r in REPORTS)} runs, {sum(r.legs for r in REPORTS)} legs, "
        f"{sum(faults.values())} faults ("
        + ", ".join(f"{k}={v}" for k, v in sorted(faults.items()))
        + f"), {sum(kinds.values())} violations ("
        + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))
        + ")"
    )
    path = os.environ.get("CHAOS_SUMMARY")
    if path:
        Path(path).write_text("\n".join(r.summary() for r in REPORTS) + "\n")
