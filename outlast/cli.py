"""The ``outlast`` command: run durable functions locally through the emulator, inspect runs."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from outlast.app import App
from outlast.emulator import Emulator, EmulatorReport, Event, Faults
from outlast.errors import TargetError
from outlast.report import run_report
from outlast.targets import load_target
from outlast.worker.cli import register as register_worker
from statestore import (
    InvalidRunIdError,
    InvalidStoreUrlError,
    RunNotFoundError,
    RunStatus,
    StateStore,
    StateStoreError,
    open_store,
    validate_run_id,
)

cli = typer.Typer(
    name="outlast",
    help="Durable agent runs that survive timeouts, evictions and kills.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
runs_cli = typer.Typer(help="Inspect and steer runs in a store.", no_args_is_help=True)
cli.add_typer(runs_cli, name="runs")
register_worker(cli)

err = Console(stderr=True)
out = Console()

HotOpt = Annotated[
    str | None, typer.Option("--hot", help="Hot-tier URL (default: $OUTLAST_HOT_URL or SQLite).")
]
ColdOpt = Annotated[
    str | None,
    typer.Option("--cold", help="Cold-tier URL (default: $OUTLAST_COLD_URL or .outlast/)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _point_env(hot: str | None, cold: str | None) -> None:
    # Child legs inherit these, so every process of the run uses the same store.
    if hot:
        os.environ["OUTLAST_HOT_URL"] = hot
    if cold:
        os.environ["OUTLAST_COLD_URL"] = cold


def _store(hot: str | None, cold: str | None) -> StateStore:
    try:
        return open_store(hot, cold)
    except (InvalidStoreUrlError, StateStoreError) as exc:
        fail(str(exc))


def _parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            f"{text!r}"
        )


def _check_run_id(run_id: str) -> str:
    try:
        return validate_run_id(run_id)
    except InvalidRunIdError as exc:
        fail(str(exc))


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------- run


class _Progress:
    """Live progress on a terminal, one line per event otherwise."""

    def __init__(self, run_id: str, enabled: bool) -> None:
        self.run_id = run_id
        self.started = time.monotonic()
        self.live: Live | None = None
        self.enabled = enabled
        self.tty = enabled and err.is_terminal
        self.last = ""

    def __enter__(self) -> _Progress:
        if self.tty:
            self.live = Live(
                self._render(EmulatorReport(run_id=self.run_id, status=RunStatus.PENDING)),
                console=err,
                refresh_per_second=8,
            )
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def _render(self, report: EmulatorReport) -> Table:
        table = Table.grid(padding=(0, 2))
        elapsed = time.monotonic() - self.started
        table.add_row(
            f"[bold]{self.run_id}[/]",
            f"legs [cyan]{report.legs}[/]",
            f"steps [green]{report.steps_executed}[/] run, {report.steps_replayed} replayed",
            f"evictions [yellow]{report.evictions}[/]",
            f"kills [red]{report.kills}[/]",
            f"duplicates {report.duplicates}",
            f"{elapsed:5.1f}s",
        )
        if self.last:
            table.add_row(f"[dim]{self.last}[/]")
        return table

    def __call__(self, event: Event, report: EmulatorReport) -> None:
        if not self.enabled:
            return
        if event.kind == "done":
            self.last = f"run {event.detail}"
        else:
            leg = f"leg {event.leg}" if event.leg is not None else "recovery leg"
            self.last = f"{event.kind}: {leg} {event.detail}".strip()
        if event.kind == "leg":
            report.legs += 1  # shown live; the final count comes from the store
        if self.live is not None:
            self.live.update(self._render(report))
        else:
            err.print(f"[{time.monotonic() - self.started:6.2f}s] {self.last}", highlight=False)


@cli.command()
def run(
    target: Annotated[str, typer.Argument(help="module:function or path/to/file.py:function")],
    input: Annotated[str | None, typer.Option("--input", help="The run's input, as JSON.")] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Run id (idempotent start).")
    ] = None,
    leg_timeout: Annotated[float, typer.Option(help="Hard deadline of each leg, seconds.")] = 10.0,
    evict_rate: Annotated[
        float, typer.Option(help="Chance a leg gets SIGTERM (then SIGKILL).")
    ] = 0.0,
    kill_rate: Annotated[
        float, typer.Option(help="Chance a leg gets SIGKILL at a random moment.")
    ] = 0.0,
    duplicate_rate: Annotated[
        float, typer.Option(help="Chance a continuation is delivered twice.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the fault injector.")] = 0,
    grace: Annotated[float | None, typer.Option(help="SIGTERM-to-SIGKILL grace, seconds.")] = None,
    hot: HotOpt = None,
    cold: ColdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start (or resume) a run and drive it to an end through legs in subprocesses."""
    _point_env(hot, cold)
    payload = _parse_json(input, "--input")
    if run_id is not None:
        _check_run_id(run_id)
    try:
        faults = Faults(evict_rate, kill_rate, duplicate_rate, seed, grace)
    except ValueError as exc:
        fail(str(exc))
    try:
        durable = load_target(target)
    except TargetError as exc:
        fail(str(exc))
    app = durable.app
    try:
        rid = app.start(durable.name, payload, run_id=run_id, tags={"target": target})
    except TypeError as exc:
        fail(f"--input cannot be stored: {exc}")
    except StateStoreError as exc:
        fail(str(exc))
    _drive(app, target, rid, leg_timeout, faults, as_json)


def _drive(
    app: Any, target: str, run_id: str, leg_timeout: float, faults: Faults, as_json: bool
) -> None:
    try:
        with _Progress(run_id, enabled=True) as progress:
            emulator = Emulator(
                app, target, leg_timeout=leg_timeout, faults=faults, on_event=progress
            )
            report = emulator.run(run_id)
    except ValueError as exc:
        fail(str(exc))
    _print_report(report, as_json)
    if report.status is RunStatus.FAILED:
        raise typer.Exit(1)


def _print_report(report: EmulatorReport, as_json: bool) -> None:
    if report.waiting_for:
        err.print(
            f"waiting for signal {report.waiting_for!r}: send it with "
            f"`outlast runs signal {report.run_id} {report.waiting_for}`, then "
            f"`outlast runs resume {report.run_id}`",
            highlight=False,
        )
    if as_json:
        keys = (
            "run_id",
            "status",
            "result",
            "legs",
            "steps_executed",
            "steps_replayed",
            "evictions",
            "kills",
        )
        data = report.model_dump(mode="json")
        _emit_json(
            {**{k: data[k] for k in keys}, **{k: v for k, v in data.items() if k not in keys}}
        )
        return
    status = report.status.value
    colour = {"succeeded": "green", "failed": "red"}.get(status, "yellow")
    err.print(
        f"[bold {colour}]{status}[/] after {report.legs} legs: {report.steps_executed} steps run, "
        f"{report.steps_replayed} replayed; survived {report.evictions} evictions, "
        f"{report.kills} kills, {report.timeouts} timeouts, {report.duplicates} duplicate "
        f"deliveries in {report.elapsed_s:.1f}s",
        highlight=False,
    )
    if report.error:
        err.print(f"[red]{report.error.type}: {report.error.message}[/]", highlight=False)
    if report.result is not None:
        out.print_json(data=report.result, default=str)


# ---------------------------------------------------------------------- runs


@runs_cli.command("list")
def runs_list(
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 50,
    hot: HotOpt = None,
    cold: ColdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first."""
    wanted = None
    if status is not None:
        try:
            wanted = RunStatus(status)
        except ValueError:
            fail(f"--status {status!r} is not one of: {', '.join(s.value for s in RunStatus)}")
    store = _store(hot, cold)
    records = store.hot.list_runs(limit=limit, status=wanted)
    rows: list[dict[str, Any]] = [
        {
            "run_id": r.run_id,
            "function": r.function,
            "status": r.status.value,
            "legs": r.counters.legs,
            "steps": r.counters.steps,
            "created_at": r.created_at.isoformat(),
            "updated_at": r.updated_at.isoformat(),
        }
        for r in records
    ]
    if as_json:
        _emit_json(rows)
        return
    table = Table("run", "function", "status", "legs", "steps", "updated")
    for row in rows:
        cells = ("run_id", "function", "status", "legs", "steps", "updated_at")
        table.add_row(*(str(row[c]) for c in cells))
    out.print(table)


@runs_cli.command("show")
def runs_show(
    run_id: str,
    hot: HotOpt = None,
    cold: ColdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a run: status, journal summary, legs, and the restart-tax report."""
    _check_run_id(run_id)
    store = _store(hot, cold)
    try:
        report = run_report(store, run_id)
    except RunNotFoundError as exc:
        fail(str(exc))
    if as_json:
        _emit_json(report.model_dump(mode="json"))
        return
    report.render(out)


@runs_cli.command("signal")
def runs_signal(
    run_id: str,
    name: str,
    payload: Annotated[str | None, typer.Option(help="Signal payload, as JSON.")] = None,
    hot: HotOpt = None,
    cold: ColdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a signal to a run (kept until the run waits for it)."""
    _check_run_id(run_id)
    value = _parse_json(payload, "--payload")
    store = _store(hot, cold)
    # Through App.signal, which refuses (unknown or ended run, bad name) before the payload
    # is written anywhere: a refused signal leaves no blob in the cold tier.
    try:
        signal = App("outlast-cli", store=store).signal(run_id, name, value)
    except (StateStoreError, ValueError, TypeError) as exc:
        fail(str(exc))
    if as_json:
        _emit_json({"run_id": run_id, "signal": name, "signal_id": signal.signal_id})
    else:
        err.print(f"sent signal {name!r} to {run_id}")


@runs_cli.command("cancel")
def runs_cancel(
    run_id: str, hot: HotOpt = None, cold: ColdOpt = None, as_json: JsonOpt = False
) -> None:
    """Cancel a run; a leg holding it stops before its next step."""
    _check_run_id(run_id)
    store = _store(hot, cold)
    try:
        record = store.hot.cancel(run_id)
    except StateStoreError as exc:
        fail(str(exc))
    if as_json:
        _emit_json({"run_id": run_id, "status": record.status.value})
    else:
        err.print(f"{run_id} is {record.status.value}")


@runs_cli.command("resume")
def runs_resume(
    run_id: str,
    target: Annotated[
        str | None, typer.Option(help="module:function (default: the one it started with).")
    ] = None,
    leg_timeout: Annotated[float, typer.Option(help="Hard deadline of each leg, seconds.")] = 10.0,
    hot: HotOpt = None,
    cold: ColdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drive an unfinished run on to its end through the emulator."""
    _check_run_id(run_id)
    _point_env(hot, cold)
    store = _store(hot, cold)
    try:
        record = store.hot.get_run(run_id)
    except StateStoreError as exc:
        fail(str(exc))
    target = target or record.tags.get("target")
    if not target:
        fail(f"run {run_id!r} has no recorded target; pass --target module:function")
    try:
        durable = load_target(target)
    except TargetError as exc:
        fail(str(exc))
    _drive(durable.app, target, run_id, leg_timeout, Faults(), as_json)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
