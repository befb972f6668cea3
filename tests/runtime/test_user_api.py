"""What users write: the README's example as written, typed inputs, code versioning with
``ctx.patched``, at-most-once steps, and a user module type-checked against ``outlast`` alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from pydantic import BaseModel

from outlast import (
    App,
    Context,
    InvalidInputError,
    RetryPolicy,
    RunStatus,
    StepFailedError,
    StepInterruptedError,
)
from outlast.journal_cache import JournalCache
from outlast.testing.store_faults import SimulatedKill
from statestore import EntryKind

ROOT = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## A durable function\n\n```python\n(.*?)```", text, re.S)
    assert block is not None, "the README lost its example"
    return block.group(1)


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    module = tmp_path / "readme_example.py"
    module.write_text(readme_example())
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(tmp_path)!r})
        from outlast import RunStatus
        import readme_example as ex

        run_id = ex.app.start("research", "durable agents")
        view = ex.app.drive(run_id, max_wait=0.5)
        assert view.status is RunStatus.SUSPENDED, view
        ex.app.signal(run_id, "approve", True)
        view = ex.app.drive(run_id)
        assert view.status is RunStatus.SUCCEEDED, view
        report = ex.app.result(run_id)
        assert isinstance(report, ex.Report), type(report)
        assert report.approved and len(report.notes) == 3, report
        print("ok", report.topic)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok durable agents"


def test_a_user_module_type_checks_against_outlast_alone(tmp_path: Path) -> None:
    module = tmp_path / "user_app.py"
    module.write_text(readme_example())
    # An editable install is an import hook mypy does not follow; point it at the sources, which
    # is what it reads from an installed wheel too (both packages ship py.typed).
    # As for any installed package, errors inside outlast's own modules are not the user's.
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\nstrict = True\n\n[mypy-outlast.*,statestore.*]\nfollow_imports = silent\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--no-incremental",
            str(module),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # And the annotations are really seen: a misuse is caught.
    module.write_text(readme_example() + "\nwrong: int = research.start('x')\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--no-incremental",
            str(module),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1 and "Incompatible types in assignment" in proc.stdout


class Ticket(BaseModel):
    id: int
    title: str


def test_a_bad_input_is_refused_before_anything_is_written(app: App) -> None:
    seen: list[object] = []

    @app.durable()
    def triage(ctx: Context, ticket: Ticket) -> str:
        seen.append(ticket)
        return ticket.title

    with pytest.raises(InvalidInputError, match=r"title: Field required"):
        app.start("triage", {"id": 3}, run_id="t1")
    assert app.store.hot.find_run("t1") is None
    run_id = app.start("triage", {"id": 3, "title": "disk full"})
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert seen == [Ticket(id=3, title="disk full")]  # the declared type, not a dict


def test_patched_keeps_old_runs_on_the_old_path_and_new_ones_on_the_new(app: App) -> None:
    calls = Counter[str]()

    def v1(ctx: Context) -> str:
        ctx.step(lambda: calls.update(["a"]), name="a")
        ctx.wait_for_signal("go")
        return str(ctx.step(lambda: "old", name="old"))

    def v2(ctx: Context) -> str:
        if ctx.patched("new-first-step"):
            ctx.step(lambda: calls.update(["a2"]), name="a2")
        else:
            ctx.step(lambda: calls.update(["a"]), name="a")
        ctx.wait_for_signal("go")
        if ctx.patched("new-ending"):
            return str(ctx.step(lambda: "new", name="new"))
        return str(ctx.step(lambda: "old", name="old"))

    app.durable("flow")(v1)
    old_run = app.start("flow")
    assert app.run_leg(old_run).status == "suspended"  # old code got past the first change
    app._functions.pop("flow")
    app.durable("flow")(v2)
    new_run = app.start("flow")
    assert app.run_leg(new_run).status == "suspended"
    for run_id in (old_run, new_run):
        app.signal(run_id, "go")
        assert app.drive(run_id).status is RunStatus.SUCCEEDED
    # The old run keeps "a", but reaches the second change with the new code: "new".
    assert app.result(old_run) == "new"
    assert app.result(new_run) == "new"
    kinds = [(e.kind, e.name) for e in app.journal(new_run)]
    assert kinds[0] == (EntryKind.PATCH, "new-first-step")
    assert calls == Counter({"a": 1, "a2": 1})


def test_an_at_most_once_step_is_not_run_again_after_its_leg_died(app: App) -> None:
    charged = Counter[str]()

    def charge() -> str:
        charged["card"] += 1
        raise SimulatedKill("the leg died right after the payment went out")

    @app.durable()
    def pay(ctx: Context) -> str:
        try:
            return str(ctx.step(charge, name="charge", at_most_once=True))
        except StepInterruptedError as exc:
            return f"needs a person: {exc.error.message[:40]}"

    run_id = app.start("pay")
    with pytest.raises(SimulatedKill):
        app.run_leg(run_id, cache=JournalCache())
    record = app.store.hot.get_run(run_id)
    assert record.lease is not None
    app.store.hot.break_lease(run_id, record.lease.token)
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert str(app.result(run_id)).startswith("needs a person: step 'charge' is at_most_once")
    assert charged["card"] == 1
    assert issubclass(StepInterruptedError, StepFailedError)


def test_a_step_that_is_not_at_most_once_runs_again(app: App) -> None:
    tries = Counter[str]()

    def send() -> str:
        tries["send"] += 1
        if tries["send"] == 1:
            raise SimulatedKill("died mid-step")
        return "sent"

    @app.durable()
    def mail(ctx: Context) -> str:
        return str(ctx.step(send, name="send", retry=RetryPolicy(max_attempts=1)))

    run_id = app.start("mail")
    with pytest.raises(SimulatedKill):
        app.run_leg(run_id, cache=JournalCache())
    record = app.store.hot.get_run(run_id)
    assert record.lease is not None
    app.store.hot.break_lease(run_id, record.lease.token)
    assert app.drive(run_id).status is RunStatus.SUCCEEDED
    assert app.result(run_id) == "sent" and tries["send"] == 2


def test_the_cli_refuses_a_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    module = tmp_path / "tickets.py"
    module.write_text(
        textwrap.dedent(
            """
            from pydantic import BaseModel
            from outlast import App, Context

            app = App("tickets")

            class Ticket(BaseModel):
                id: int
                title: str

            @app.durable()
            def triage(ctx: Context, ticket: Ticket) -> str:
                return ticket.title
            """
        )
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "outlast.cli",
            "run",
            f"{module}:triage",
            "--input",
            '{"id": 3}',
            "--run-id",
            "bad1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "title: Field required" in proc.stderr and "Traceback" not in proc.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "outlast.cli", "runs", "list", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "bad1" not in listed.stdout
    cold = tmp_path / ".outlast" / "cold"
    assert not cold.exists() or not any(p.is_file() for p in cold.rglob("*"))


def test_current_context_reaches_code_the_durable_function_calls(app: App) -> None:
    from outlast import current_context
    from outlast.async_context import AsyncContext

    def helper() -> str:
        return current_context().run_id

    @app.durable()
    def sync_flow(ctx: Context) -> list[str]:
        in_branch = ctx.parallel(lambda c: helper(), lambda c: helper())
        in_items = ctx.map(lambda i: current_context().run_id, range(2))
        return [helper(), *in_branch, *in_items]

    @app.durable()
    async def async_flow(ctx: AsyncContext) -> list[str]:
        async def branch(c: AsyncContext) -> str:
            assert current_context() is c
            return helper()

        return [helper(), *(await ctx.parallel(branch, branch))]

    for name in ("sync_flow", "async_flow"):
        run_id = app.start(name)
        assert app.drive(run_id).status is RunStatus.SUCCEEDED
        assert set(app.result(run_id)) == {run_id}
    with pytest.raises(RuntimeError, match="not inside a durable function"):
        current_context()
