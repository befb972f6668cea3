"""`outlast run` and `outlast runs …` over a run's whole life: nothing loops forever, no leg
outlives its deadline, outcomes have distinct exit codes, and errors at the edges are one line."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outlast import App, Context
from statestore import RunStatus, open_hot
from tests.support.servers import RedisServer

MISC = Path(__file__).parent / "workloads" / "misc.py"

WORKLOAD = """
import os
import time

from outlast import App, Context

app = App("lifecycle")


def slow_step(path: str, seconds: float) -> int:
    # One line when the step starts and one when it ends: the side effects the tests count.
    with open(path, "a") as f:
        f.write(f"start {os.getpid()} {time.time()}\\n")
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"done {os.getpid()} {time.time()}\\n")
    return 1


@app.durable()
def slow(ctx: Context, args: dict) -> int:
    return ctx.step(slow_step, args["file"], args["s"], name="slow")


def tick(path: str, i: int) -> int:
    with open(path, "a") as f:
        f.write(f"tick {i}\\n")
    time.sleep(0.2)
    return i


@app.durable()
def ticks(ctx: Context, args: dict) -> int:
    return sum(ctx.step(tick, args["file"], i, name="tick") for i in range(args["n"]))
"""


@pytest.fixture
def workload(tmp_path: Path) -> Path:
    path = tmp_path / "lifecycle_wl.py"
    path.write_text(WORKLOAD)
    return path


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "outlast.cli", *args]


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def flat(text: str) -> str:
    return " ".join(text.split())


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The whole of stderr must be one line starting with 'error:', and no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def side_effects(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def gone(pid: int) -> bool:
    """Has the process ended? A zombie waiting for init to reap it has."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------------- flags and input


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e12", "0.1", "0", "-5", "901"])
def test_leg_timeout_outside_the_sane_range_is_refused(value: str, tmp_path: Path) -> None:
    for args in (
        ["run", f"{MISC}:approval", "--leg-timeout", value],
        ["runs", "resume", "r1", "--target", f"{MISC}:approval", "--leg-timeout", value],
    ):
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        line = one_error_line(proc)
        assert "--leg-timeout must be between 1 and 900 seconds" in line
    # Refused while parsing: nothing was started, not even the store.
    assert not (tmp_path / ".outlast").exists()


def test_max_idle_legs_must_be_positive(tmp_path: Path) -> None:
    proc = cli("run", f"{MISC}:approval", "--max-idle-legs", "0", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--max-idle-legs must be between 1 and 10000" in one_error_line(proc)


@pytest.mark.parametrize("depth", [600, 50_000])
def test_deeply_nested_input_is_one_clear_error(depth: int, tmp_path: Path) -> None:
    deep = "[" * depth + "]" * depth
    proc = cli("run", f"{MISC}:approval", "--input", deep, "--run-id", "deep", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--input is nested too deeply (at most 256 levels)" in one_error_line(proc)
    listed = cli("runs", "list", "--json", cwd=tmp_path)
    assert last_json(listed) == []


# ---------------------------------------------------------------------- stores at the edges


@pytest.mark.parametrize(
    "args", [["runs", "list"], ["run", f"{MISC}:approval", "--input", '"bob"']]
)
def test_unreachable_redis_is_one_clear_error(args: list[str], tmp_path: Path) -> None:
    proc = cli(*args, "--hot", "redis://127.0.0.1:1/0", cwd=tmp_path)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "redis://127.0.0.1:1/0 is unreachable" in line


def test_sqlite_that_cannot_be_written_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = cli(
        "run",
        f"{MISC}:approval",
        "--input",
        '"bob"',
        "--hot",
        f"sqlite:///{blocker}/hot.db",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert str(blocker) in one_error_line(proc)
    # A device that is always full: every write fails with ENOSPC.
    proc = cli(
        "run", f"{MISC}:approval", "--input", '"bob"', "--hot", "sqlite:////dev/full", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "database or disk is full" in one_error_line(proc)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone: it is killed mid-run."""
    server = RedisServer(workdir=tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_killed_mid_run_ends_with_one_line_and_how_to_resume(
    own_redis: RedisServer, workload: Path, tmp_path: Path
) -> None:
    effects = tmp_path / "ticks.log"
    proc = subprocess.Popen(
        command(
            "run",
            f"{workload}:ticks",
            "--input",
            json.dumps({"file": str(effects), "n": 50}),
            "--run-id",
            "r1",
            "--hot",
            own_redis.url,
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(side_effects(effects)) >= 3, 30, "three steps")
        own_redis.stop()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert f"{own_redis.url} is unreachable" in errors[0]
    assert f"outlast runs resume r1 --target {workload}:ticks" in errors[0]


def test_runs_list_shows_a_corrupt_record_and_the_rest(tmp_path: Path) -> None:
    hot_url, cold_url = f"sqlite:///{tmp_path / 'hot.db'}", f"file://{tmp_path / 'cold'}"
    app = App("corrupt-list", hot_url=hot_url, cold_url=cold_url)

    @app.durable("approval")
    def approval(ctx: Context, who: str) -> str:
        return who

    for run_id in ("a", "b", "c"):
        app.start("approval", run_id, run_id=run_id)
    app.close()
    with sqlite3.connect(tmp_path / "hot.db") as conn:
        conn.execute("UPDATE runs SET doc = ? WHERE run_id = 'b'", (b"\x00garbage\xff",))

    proc = cli("runs", "list", "--json", "--hot", hot_url, "--cold", cold_url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = last_json(proc)
    assert sorted((r["run_id"], r["status"]) for r in rows) == [
        ("a", "pending"),
        ("b", "corrupt"),
        ("c", "pending"),
    ]
    assert "run b is corrupt" in flat(proc.stderr)
    assert "Traceback" not in proc.stderr

    human = cli("runs", "list", "--hot", hot_url, "--cold", cold_url, cwd=tmp_path)
    assert human.returncode == 0
    assert "corrupt" in human.stdout and "pending" in human.stdout

    shown = cli("runs", "show", "b", "--hot", hot_url, "--cold", cold_url, cwd=tmp_path)
    assert shown.returncode == 2
    assert "corrupt state (run=b, tier=sqlite, key=runs/b)" in one_error_line(shown)


# ---------------------------------------------------------------------- no endless loops


def test_a_run_that_makes_no_progress_stops_and_says_why(workload: Path, tmp_path: Path) -> None:
    effects = tmp_path / "slow.log"
    proc = cli(
        "run",
        f"{workload}:slow",
        "--input",
        json.dumps({"file": str(effects), "s": 3}),
        "--run-id",
        "stuck1",
        "--leg-timeout",
        "1",
        "--max-idle-legs",
        "2",
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 4, proc.stderr
    report = last_json(proc)
    stuck = report["stuck"]
    assert "run 'stuck1' made no progress in 2 legs in a row (legs 1-2)" in stuck
    assert "step 'slow' has been interrupted in 2 legs in a row" in stuck
    assert "a leg has 1.0 s; raise --leg-timeout" in stuck
    assert stuck in flat(proc.stderr)
    # It stopped at once: the step started in exactly two legs, and finished in none.
    kinds = [effect[0] for effect in side_effects(effects)]
    assert kinds == ["start", "start"]
    assert open_hot(f"sqlite:///{tmp_path / '.outlast' / 'hot.db'}").read_journal("stuck1") == []


def test_killing_outlast_run_leaves_no_leg_running_past_its_deadline(
    workload: Path, tmp_path: Path
) -> None:
    effects = tmp_path / "slow.log"
    proc = subprocess.Popen(
        command(
            "run",
            f"{workload}:slow",
            "--input",
            json.dumps({"file": str(effects), "s": 4}),
            "--run-id",
            "orphan",
            "--leg-timeout",
            "2",
        ),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(side_effects(effects)) >= 1, 30, "the step to start")
        [[_, pid, started]] = side_effects(effects)
        proc.kill()  # SIGKILL: nothing of `outlast run` can clean up
        proc.wait()
        leg_pid, step_started = int(pid), float(started)
        assert not gone(leg_pid), "the leg outlived its parent, for now"
        # The leg was spawned before its step started, so its deadline is at most 2 s after
        # that; it ends itself a quarter second past it. Allow for a slow machine.
        wait_for(lambda: gone(leg_pid), step_started + 3.0 - time.time(), "the leg to end")
        assert time.time() < step_started + 3.0
        # Had it lived, the step would have finished and committed by now.
        time.sleep(max(0.0, step_started + 4.5 - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [effect[0] for effect in side_effects(effects)] == ["start"]
    hot = open_hot(f"sqlite:///{tmp_path / '.outlast' / 'hot.db'}")
    assert hot.read_journal("orphan") == []
    assert hot.get_run("orphan").next_seq == 0


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(signal.SIGINT, 130, "interrupted (Ctrl-C)"), (signal.SIGTERM, 143, "SIGTERM")],
)
def test_interrupting_outlast_run_says_how_to_resume(
    sig: int, code: int, said: str, workload: Path, tmp_path: Path
) -> None:
    effects = tmp_path / "slow.log"
    proc = subprocess.Popen(
        command(
            "run",
            f"{workload}:slow",
            "--input",
            json.dumps({"file": str(effects), "s": 1.5}),
            "--run-id",
            "ctrlc",
            "--leg-timeout",
            "10",
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(side_effects(effects)) >= 1, 30, "the step to start")
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    resume = f"outlast runs resume ctrlc --target {workload}:slow"
    lines = [line for line in stderr.splitlines() if resume in line]
    assert lines == [f"{said}: run ctrlc is unfinished; continue it with `{resume}`"], stderr
    # The leg went with it, and gave the run back: resuming continues at once.
    [[_, pid, _]] = side_effects(effects)
    assert gone(int(pid))
    resumed = cli(*resume.split()[1:], "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert last_json(resumed)["status"] == "succeeded"
    kinds = [effect[0] for effect in side_effects(effects)]
    assert kinds == ["start", "start", "done"]


# ---------------------------------------------------------------------- exit codes, signals


def test_exit_codes_tell_outcomes_apart(tmp_path: Path) -> None:
    suspended = cli("run", f"{MISC}:approval", "--input", '"bob"', "--run-id", "w1", cwd=tmp_path)
    assert suspended.returncode == 3, suspended.stderr
    failed = cli("run", f"{MISC}:returns_a_set", "--run-id", "f1", cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    assert cli("runs", "cancel", "w1", cwd=tmp_path).returncode == 0
    cancelled = cli("run", f"{MISC}:approval", "--input", '"bob"', "--run-id", "w1", cwd=tmp_path)
    assert cancelled.returncode == 5, cancelled.stderr
    helped = cli("run", "--help", cwd=tmp_path)
    assert "3 suspended (waiting), 4 blocked or stuck, 5 cancelled" in flat(helped.stdout)


def test_a_signal_of_another_name_is_kept_and_the_awaited_name_said(tmp_path: Path) -> None:
    started = cli("run", f"{MISC}:approval", "--input", '"bob"', "--run-id", "s1", cwd=tmp_path)
    assert started.returncode == 3, started.stderr
    sent = cli("runs", "signal", "s1", "aprove", "--json", cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert last_json(sent)["waiting_for"] == "approve"
    assert "run s1 waits for signal 'approve', not 'aprove'; 'aprove' is kept" in flat(sent.stderr)
    hot = open_hot(f"sqlite:///{tmp_path / '.outlast' / 'hot.db'}")
    assert [s.name for s in hot.pending_signals("s1")] == ["aprove"]
    assert hot.get_run("s1").status is RunStatus.SUSPENDED

    right = cli("runs", "signal", "s1", "approve", cwd=tmp_path)
    assert right.returncode == 0 and "waits for" not in right.stderr


# ---------------------------------------------------------------------- resume, retry, delete


EVIL = """
from pathlib import Path
Path(__file__).with_name("pwned").write_text("imported")
from outlast import App, Context
app = App("evil")

@app.durable()
def approval(ctx: Context, who: str) -> str:
    return who
"""


def test_resume_runs_only_the_operators_code(tmp_path: Path) -> None:
    evil = tmp_path / "evil.py"
    evil.write_text(EVIL)
    hot_url = f"sqlite:///{tmp_path / 'hot.db'}"
    store = ["--hot", hot_url, "--cold", f"file://{tmp_path / 'cold'}"]
    # Whoever can write the hot tier can point a run's recorded target anywhere.
    app = App("writer", hot_url=hot_url, cold_url=f"file://{tmp_path / 'cold'}")

    @app.durable("approval")
    def approval(ctx: Context, who: str) -> str:
        return who

    app.start("approval", "bob", run_id="t1", tags={"target": f"{evil}:approval"})
    app.close()

    bare = cli("runs", "resume", "t1", *store, cwd=tmp_path)
    assert bare.returncode == 2
    assert "pass --target" in one_error_line(bare)
    mismatch = cli("runs", "resume", "t1", "--target", f"{MISC}:approval", *store, cwd=tmp_path)
    assert mismatch.returncode == 2
    line = one_error_line(mismatch)
    assert f"was started with target '{evil}:approval', not '{MISC}:approval'" in line
    assert not (tmp_path / "pwned").exists(), "the stored target was imported"


def test_resume_accepts_the_same_target_named_another_way(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "misc.py").write_text(MISC.read_text())
    started = cli("run", "misc.py:approval", "--input", '"bob"', "--run-id", "t2", cwd=work)
    assert started.returncode == 3, started.stderr
    # The same file, named from another directory.
    sent = cli(
        "runs",
        "signal",
        "t2",
        "approve",
        "--hot",
        f"sqlite:///{work}/.outlast/hot.db",
        "--cold",
        f"file://{work}/.outlast/cold",
        cwd=tmp_path,
    )
    assert sent.returncode == 0, sent.stderr
    resumed = cli(
        "runs",
        "resume",
        "t2",
        "--target",
        f"{work / 'misc.py'}:approval",
        "--json",
        "--hot",
        f"sqlite:///{work}/.outlast/hot.db",
        "--cold",
        f"file://{work}/.outlast/cold",
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert last_json(resumed)["result"] == {"who": "bob", "decision": None}


def test_blocked_run_is_shown_retried_and_resumed(tmp_path: Path) -> None:
    hot_url, cold_url = f"sqlite:///{tmp_path / 'hot.db'}", f"file://{tmp_path / 'cold'}"
    store = ["--hot", hot_url, "--cold", cold_url]
    good = App("good", hot_url=hot_url, cold_url=cold_url)

    @good.durable("approval")
    def approval(ctx: Context, who: str) -> str:
        return who

    good.start("approval", "bob", run_id="b1")
    good.close()
    # A deployment that lacks the function: broken state, blocked after one such leg.
    lacking = App("lacking", hot_url=hot_url, cold_url=cold_url, max_broken_legs=1)
    with pytest.raises(LookupError):
        lacking.run_leg("b1")
    lacking.close()

    listed = last_json(cli("runs", "list", "--status", "blocked", "--json", *store, cwd=tmp_path))
    assert [(r["run_id"], r["status"]) for r in listed] == [("b1", "blocked")]
    assert "has no durable function 'approval'" in listed[0]["error"]
    shown = cli("runs", "show", "b1", *store, cwd=tmp_path)
    assert shown.returncode == 0
    assert "blocked" in shown.stdout and "has no durable function 'approval'" in flat(shown.stdout)

    resumed = cli("runs", "resume", "b1", "--target", f"{MISC}:approval", *store, cwd=tmp_path)
    assert resumed.returncode == 4, resumed.stderr
    assert "outlast runs retry b1" in flat(resumed.stderr)

    retried = cli("runs", "retry", "b1", "--json", *store, cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    assert last_json(retried) == {"run_id": "b1", "retried": "b1"}
    again = cli("runs", "resume", "b1", "--target", f"{MISC}:approval", *store, cwd=tmp_path)
    assert again.returncode == 3, again.stderr  # misc's approval waits for its signal


def test_retry_refuses_a_run_that_did_not_fail_and_forks(tmp_path: Path) -> None:
    ok = cli("run", f"{MISC}:approval", "--input", '"bob"', "--run-id", "r1", cwd=tmp_path)
    assert ok.returncode == 3
    refused = cli("runs", "retry", "r1", cwd=tmp_path)
    assert refused.returncode == 2
    assert "only failed or blocked runs" in one_error_line(refused)
    forked = cli("runs", "retry", "r1", "--from-seq", "1", "--as", "r1-fork", cwd=tmp_path)
    assert forked.returncode == 0, forked.stderr
    assert "outlast runs resume r1-fork --target" in flat(forked.stderr)
    listed = {r["run_id"] for r in last_json(cli("runs", "list", "--json", cwd=tmp_path))}
    assert listed == {"r1", "r1-fork"}
    bad = cli("runs", "retry", "r1", "--as", "../x", cwd=tmp_path)
    assert bad.returncode == 2 and "illegal run id '../x'" in one_error_line(bad)


def test_delete_asks_for_yes(tmp_path: Path) -> None:
    cli("run", f"{MISC}:approval", "--input", '"bob"', "--run-id", "d1", cwd=tmp_path)
    refused = cli("runs", "delete", "d1", cwd=tmp_path)
    assert refused.returncode == 2
    assert "refusing to delete run 'd1' without --yes" in one_error_line(refused)
    assert cli("runs", "show", "d1", cwd=tmp_path).returncode == 0
    deleted = cli("runs", "delete", "d1", "--yes", "--json", cwd=tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    assert last_json(deleted) == {"run_id": "d1", "deleted": True}
    gone_run = cli("runs", "show", "d1", cwd=tmp_path)
    assert gone_run.returncode == 2
    assert "run 'd1' does not exist" in one_error_line(gone_run)
    missing = cli("runs", "delete", "nope", "--yes", cwd=tmp_path)
    assert missing.returncode == 2
