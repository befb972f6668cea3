"""The ``outlast`` command: run durable functions locally through the emulator, inspect runs.

Errors at the edges (bad flags, bad JSON, an unreachable or unwritable store, a corrupt record)
are one line naming the cause and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from datetime import UTC, datetime
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from outlast.app import App
from outlast.emulator import Emulator, EmulatorReport, Event, Faults
from outlast.errors import InvalidInputError, TargetError
from outlast.platforms.lambda_cli import register as register_lambda
from outlast.report import run_report
from outlast.targets import load_target, normalize_target, same_target
from outlast.ui.cli import ui_command
from outlast.worker.cli import register as register_worker
from statestore import (
    HotTier,
    InvalidRunIdError,
    InvalidStoreUrlError,
    RunRecord,
    RunStatus,
    StateStore,
    StateStoreError,
    open_store,
    validate_run_id,
)

# Exit codes of `outlast run` and `outlast runs resume`: how the run stood when the command ended.
EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # bad flags or input, unreachable/unwritable store, refused action
EXIT_SUSPENDED = 3  # waiting for a signal or a far-off timer: send it, then resume
EXIT_BLOCKED = 4  # blocked, or stuck: legs in a row made no progress (see the message)
EXIT_CANCELLED = 5
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT); 143 for SIGTERM, as shells report them

EXIT_CODES_HELP = (
    "Exit codes of run and runs resume: 0 succeeded, 1 failed, 2 usage or store error, "
    "3 suspended (waiting), 4 blocked or stuck, 5 cancelled, 130/143 interrupted "
    "(Ctrl-C/SIGTERM; resume it with outlast runs resume)."
)

# A leg's deadline: at least a second (less cannot even start Python and take a lease), at most
# 15 minutes, Lambda's own maximum, so what runs here also fits there.
LEG_TIMEOUT_MIN = 1.0
LEG_TIMEOUT_MAX = 900.0
# Deepest JSON value accepted on the command line; the store refuses much deeper ones anyway,
# and json.loads would raise RecursionError on some.
MAX_JSON_DEPTH = 256

cli = typer.Typer(
    name="outlast",
    help="Durable agent runs that survive timeouts, evictions and kills.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
runs_cli = typer.Typer(help="Inspect and steer runs in a store.", no_args_is_help=True)
cli.add_typer(runs_cli, name="runs")
register_worker(cli)
register_lambda(cli, runs_cli)
cli.command("ui")(ui_command)

# soft_wrap: a message is one line however narrow the terminal (or 80 columns when piped).
err = Console(stderr=True, soft_wrap=True)
out = Console()

HotOpt = Annotated[
    str | None, typer.Option("--hot", help="Hot-tier URL (default: $OUTLAST_HOT_URL or SQLite).")
]
ColdOpt = Annotated[
    str | None,
    typer.Option("--cold", help="Cold-tier URL (default: $OUTLAST_COLD_URL or .outlast/)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    # Escaped: messages quote user input and stored data, which must not be read as markup.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _leg_timeout(value: float) -> float:
    if not (math.isfinite(value) and LEG_TIMEOUT_MIN <= value <= LEG_TIMEOUT_MAX):
        fail(
            f"--leg-timeout must be between {LEG_TIMEOUT_MIN:g} and {LEG_TIMEOUT_MAX:g} seconds "
            f"(15 minutes, Lambda's maximum), got {value}"
        )
    return value


def _max_idle_legs(value: int) -> int:
    if not 1 <= value <= 10_000:
        fail(f"--max-idle-legs must be between 1 and 10000, got {value}")
    return value


def _grace(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and 0 <= value <= LEG_TIMEOUT_MAX):
        fail(f"--grace must be between 0 and {LEG_TIMEOUT_MAX:g} seconds, got {value}")
    return value


LegTimeoutOpt = Annotated[
    float,
    typer.Option(
        callback=_leg_timeout,
        help=f"Hard deadline of each leg, seconds ({LEG_TIMEOUT_MIN:g}-{LEG_TIMEOUT_MAX:g}).",
    ),
]
MaxIdleLegsOpt = Annotated[
    int,
    typer.Option(
        callback=_max_idle_legs,
        help="Stop (exit 4) after this many legs in a row commit nothing while the run is "
        "not waiting.",
    ),
]


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


def _depth(value: Any) -> int:
    """How deeply a parsed JSON value nests (counted without recursion: it may be deep)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    shown = text if len(text) <= 80 else text[:77] + "..."
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            f"{shown!r}"
        )
    except RecursionError:
        fail(f"{what} is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    if _depth(value) > MAX_JSON_DEPTH:
        fail(f"{what} is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    return value


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
        if not self.enabled or event.kind == "stuck":
            return  # stuck: said once, with the final report
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


@cli.command(epilog=EXIT_CODES_HELP)
def run(
    target: Annotated[str, typer.Argument(help="module:function or path/to/file.py:function")],
    input: Annotated[str | None, typer.Option("--input", help="The run's input, as JSON.")] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Run id (idempotent start).")
    ] = None,
    leg_timeout: LegTimeoutOpt = 10.0,
    max_idle_legs: MaxIdleLegsOpt = 10,
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
    grace: Annotated[
        float | None, typer.Option(callback=_grace, help="SIGTERM-to-SIGKILL grace, seconds.")
    ] = None,
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
    given = target
    # Recorded absolute, so `runs resume --target` from another directory compares equal.
    target = normalize_target(target)
    with _interruptible(None, target):
        try:
            durable = load_target(given)  # errors name the target as the operator wrote it
        except TargetError as exc:
            fail(str(exc))
        app = durable.app
        try:
            rid = app.start(durable.name, payload, run_id=run_id, tags={"target": target})
        except InvalidInputError as exc:
            fail(f"--input: {exc}")
        except (TypeError, ValueError, RecursionError) as exc:
            fail(f"--input cannot be stored: {exc}")
        except StateStoreError as exc:
            fail(str(exc))
    _drive(app, target, rid, leg_timeout, max_idle_legs, faults, as_json)


class _Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: stop the legs, say how to continue."""


class _interruptible:  # noqa: N801 - used as a statement, like contextlib's helpers
    """Ctrl-C or SIGTERM inside: one line saying how to continue the run, no traceback."""

    def __init__(self, run_id: str | None, target: str) -> None:
        self.run_id = run_id
        self.target = target

    def __enter__(self) -> _interruptible:
        def on_term(signum: int, frame: FrameType | None) -> None:
            raise _Interrupted

        self.previous = signal.signal(signal.SIGTERM, on_term)
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        signal.signal(signal.SIGTERM, self.previous)
        if not isinstance(exc, KeyboardInterrupt):
            return
        what = "SIGTERM" if isinstance(exc, _Interrupted) else "interrupted (Ctrl-C)"
        if self.run_id is None:
            err.print(f"{what}: no run was started", highlight=False)
        else:
            err.print(
                f"{what}: run {self.run_id} is unfinished; continue it with "
                f"`{_resume_command(self.run_id, self.target)}`",
                highlight=False,
                markup=False,
            )
        raise typer.Exit(
            EXIT_INTERRUPTED if not isinstance(exc, _Interrupted) else 128 + signal.SIGTERM
        )


def _resume_command(run_id: str, target: str) -> str:
    return f"outlast runs resume {run_id} --target {target}"


def _drive(
    app: Any,
    target: str,
    run_id: str,
    leg_timeout: float,
    max_idle_legs: int,
    faults: Faults,
    as_json: bool,
) -> None:
    with _interruptible(run_id, target):
        try:
            with _Progress(run_id, enabled=True) as progress:
                emulator = Emulator(
                    app,
                    target,
                    leg_timeout=leg_timeout,
                    max_idle_legs=max_idle_legs,
                    faults=faults,
                    on_event=progress,
                )
                report = emulator.run(run_id)
        except ValueError as exc:
            fail(str(exc))
        except StateStoreError as exc:
            fail(
                f"{str(exc).rstrip('.')}; once the store is back, continue with "
                f"`{_resume_command(run_id, target)}`"
            )
    _print_report(report, target, as_json)
    raise typer.Exit(_exit_code(report))


def _exit_code(report: EmulatorReport) -> int:
    if report.stuck:
        return EXIT_BLOCKED
    return {
        RunStatus.SUCCEEDED: EXIT_SUCCEEDED,
        RunStatus.FAILED: EXIT_FAILED,
        RunStatus.SUSPENDED: EXIT_SUSPENDED,
        RunStatus.CANCELLED: EXIT_CANCELLED,
    }.get(report.status, EXIT_BLOCKED)  # blocked; or pending/running with no leg to run


def _print_report(report: EmulatorReport, target: str, as_json: bool) -> None:
    resume = _resume_command(report.run_id, target)
    if report.waiting_for:
        err.print(
            f"waiting for signal {report.waiting_for!r}: send it with "
            f"`outlast runs signal {report.run_id} {report.waiting_for}`, then `{resume}`",
            highlight=False,
            markup=False,
        )
    if report.stuck:
        err.print(f"stuck: {report.stuck}", highlight=False, markup=False)
    if report.status is RunStatus.BLOCKED:
        err.print(
            f"run {report.run_id} is blocked: fix the cause, then `outlast runs retry "
            f"{report.run_id}` and `{resume}`",
            highlight=False,
            markup=False,
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
        err.print(f"{report.error.type}: {report.error.message}", highlight=False, markup=False)
    if report.result is not None:
        out.print_json(data=report.result, default=str)


# ---------------------------------------------------------------------- runs


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _list_runs(
    hot: HotTier, limit: int, status: RunStatus | None
) -> tuple[list[RunRecord], dict[str, str]]:
    """Runs newest first, and the ids of those whose record is corrupt, with why.

    One damaged record must not hide every other run: the hot tier's survey lists the others
    and reports it apart. A corrupt record's status is unknown: it is listed whatever --status
    asked for, as a placeholder whose function reads "?".
    """
    records, corrupt = hot.survey_runs(limit, status)
    holes = [
        RunRecord(run_id=c.run_id, function="?", created_at=_EPOCH, updated_at=_EPOCH)
        for c in corrupt
    ]
    return [*records, *holes], {c.run_id: c.error for c in corrupt}


@runs_cli.command("list")
def runs_list(
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs.", min=1)] = 50,
    hot: HotOpt = None,
    cold: ColdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first; a run whose record is corrupt is listed as corrupt."""
    wanted = None
    if status is not None:
        try:
            wanted = RunStatus(status)
        except ValueError:
            fail(f"--status {status!r} is not one of: {', '.join(s.value for s in RunStatus)}")
    store = _store(hot, cold)
    try:
        records, corrupt = _list_runs(store.hot, limit, wanted)
    except StateStoreError as exc:
        fail(str(exc))
    rows: list[dict[str, Any]] = []
    for r in records:
        if r.run_id in corrupt:
            rows.append({"run_id": r.run_id, "status": "corrupt", "error": corrupt[r.run_id]})
            continue
        rows.append(
            {
                "run_id": r.run_id,
                "function": r.function,
                "status": r.status.value,
                "legs": r.counters.legs,
                "steps": r.counters.steps,
                "created_at": r.created_at.isoformat(),
                "updated_at": r.updated_at.isoformat(),
                "error": f"{r.error.type}: {r.error.message}" if r.error else None,
            }
        )
    for run_id, why in corrupt.items():
        err.print(f"warning: run {run_id} is corrupt: {why}", highlight=False, markup=False)
    if as_json:
        _emit_json(rows)
        return
    table = Table("run", "function", "status", "legs", "steps", "updated")
    for row in rows:
        cells = ("run_id", "function", "status", "legs", "steps", "updated_at")
        table.add_row(*(escape(str(row.get(c, ""))) for c in cells))
    out.print(table)


@runs_cli.command("show")
def runs_show(
    run_id: str,
    hot: HotOpt = None,
    cold: ColdOpt = None,
    as_json: JsonOpt = False,
    html: Annotated[
        str | None,
        typer.Option("--html", help="Also write the run page as one self-contained HTML file."),
    ] = None,
) -> None:
    """Show a run: status (and error, when failed or blocked), journal, legs, restart tax."""
    _check_run_id(run_id)
    store = _store(hot, cold)
    try:
        report = run_report(store, run_id)
        if html is not None:
            # Lazy: the console's templates and jinja2 load only when a page is asked for.
            from outlast.ui.server import export_run_html

            with open(html, "w", encoding="utf-8") as page:
                page.write(export_run_html(store, run_id))
    except StateStoreError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {html}: {exc.strerror or exc}")
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
    """Send a signal to a run (kept until the run waits for that name)."""
    _check_run_id(run_id)
    value = _parse_json(payload, "--payload")
    store = _store(hot, cold)
    # Through App.signal, which refuses (unknown or ended run, bad name) before the payload
    # is written anywhere: a refused signal leaves no blob in the cold tier.
    try:
        sent = App("outlast-cli", store=store).signal(run_id, name, value)
        record = store.hot.get_run(run_id)
    except (StateStoreError, ValueError, TypeError) as exc:
        fail(str(exc))
    # A signal of another name is kept (the run may wait for it later), but the sender most
    # likely mistyped the name the run waits for now: say which one that is.
    other = (
        record.waiting_for
        if record.status is RunStatus.SUSPENDED
        and record.waiting_for is not None
        and record.waiting_for != name
        else None
    )
    if as_json:
        _emit_json(
            {
                "run_id": run_id,
                "signal": name,
                "signal_id": sent.signal_id,
                "waiting_for": record.waiting_for,
            }
        )
    else:
        err.print(f"sent signal {name!r} to {run_id}", highlight=False, markup=False)
    if other is not None:
        err.print(
            f"note: run {run_id} waits for signal {other!r}, not {name!r}; {name!r} is kept "
            f"until the run waits for it (send {other!r} with `outlast runs signal {run_id} "
            f"{other}`)",
            highlight=False,
            markup=False,
        )


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


@runs_cli.command("resume", epilog=EXIT_CODES_HELP)
def runs_resume(
    run_id: str,
    target: Annotated[
        str | None,
        typer.Option(
            help="module:function or path/to/file.py:function to run it with (required: the "
            "code comes from you, never from the store; it must match the run's recorded one)."
        ),
    ] = None,
    leg_timeout: LegTimeoutOpt = 10.0,
    max_idle_legs: MaxIdleLegsOpt = 10,
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
    # The run record's target is data anyone with write access to the hot tier can set; importing
    # it would hand them code execution as whoever resumes. It is only compared with the
    # operator's own --target, never imported.
    recorded = record.tags.get("target")
    if not target:
        hint = f" (it was started with {recorded!r})" if recorded else ""
        fail(
            f"pass --target module:function or path/to/file.py:function to resume run "
            f"{run_id!r}{hint}; the code to run comes from you, never from the store"
        )
    if recorded and not same_target(target, recorded):
        fail(
            f"run {run_id!r} was started with target {recorded!r}, not {target!r}; "
            "refusing to resume it with other code"
        )
    with _interruptible(run_id, target):
        try:
            durable = load_target(target)
        except TargetError as exc:
            fail(str(exc))
    target = normalize_target(target)
    if durable.name != record.function:
        fail(
            f"run {run_id!r} runs durable function {record.function!r}; "
            f"{target!r} is {durable.name!r}"
        )
    _drive(durable.app, target, run_id, leg_timeout, max_idle_legs, Faults(), as_json)


@runs_cli.command("retry")
def runs_retry(
    run_id: str,
    from_seq: Annotated[
        int | None,
        typer.Option(
            "--from-seq", min=0, help="Keep journal entries before this seq; redo the rest."
        ),
    ] = None,
    as_id: Annotated[
        str | None,
        typer.Option("--as", help="Fork: a new run with this id continues; the old one stays."),
    ] = None,
    hot: HotOpt = None,
    cold: ColdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-open a failed or blocked run (or fork it from a seq) to continue with current code."""
    _check_run_id(run_id)
    if as_id is not None:
        _check_run_id(as_id)
    store = _store(hot, cold)
    try:
        record = store.hot.get_run(run_id)
        continuing = App("outlast-cli", store=store).retry(run_id, from_seq=from_seq, as_id=as_id)
    except (StateStoreError, ValueError, LookupError) as exc:
        fail(str(exc))
    target = record.tags.get("target", "FILE:function")
    if as_json:
        _emit_json({"run_id": continuing, "retried": run_id})
        return
    err.print(
        f"run {continuing} is ready to continue: `{_resume_command(continuing, target)}`",
        highlight=False,
        markup=False,
    )


@runs_cli.command("delete")
def runs_delete(
    run_id: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
    hot: HotOpt = None,
    cold: ColdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a run: its record, journal, signals and blobs, in both tiers. Cannot be undone."""
    _check_run_id(run_id)
    store = _store(hot, cold)
    try:
        record = store.hot.get_run(run_id)
    except StateStoreError as exc:
        fail(str(exc))
    if not yes:
        if not sys.stdin.isatty():
            fail(
                f"refusing to delete run {run_id!r} without --yes: there is no terminal to ask "
                "for confirmation"
            )
        question = f"Delete run {run_id} ({record.function}, {record.status.value}) for good?"
        if not typer.confirm(question):
            fail(f"run {run_id!r} not deleted", EXIT_FAILED)
    try:
        App("outlast-cli", store=store).delete(run_id)
    except StateStoreError as exc:
        fail(str(exc))
    if as_json:
        _emit_json({"run_id": run_id, "deleted": True})
    else:
        err.print(f"deleted run {run_id}", highlight=False, markup=False)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
