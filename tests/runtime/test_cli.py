"""The `outlast` CLI: bad input gets a clear error and exit code 2; runs can be steered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

WORKLOADS = Path(__file__).parent / "workloads"
MISC = WORKLOADS / "misc.py"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outlast.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no_such_module:fn"], "cannot import module 'no_such_module'"),
        (["run", "missing.py:fn"], "no file 'missing.py'"),
        (["run", f"{MISC}:nothing"], "has no attribute 'nothing'"),
        (["run", f"{MISC}:not_durable"], "not a durable function"),
        (["run", "justaname"], "not of the form module:function"),
        (["run", f"{MISC}:approval", "--input", "{not json"], "--input is not valid JSON"),
        (["run", f"{MISC}:approval", "--run-id", "../x"], "illegal run id '../x'"),
        (["run", f"{MISC}:approval", "--kill-rate", "1.5"], "--kill-rate must be between 0 and 1"),
        (["runs", "show", "a/b"], "illegal run id 'a/b'"),
        (["runs", "show", "nope"], "run 'nope' does not exist"),
        (["runs", "signal", "nope", "go", "--payload", "[1,"], "--payload is not valid JSON"),
        (["runs", "list", "--status", "sleepy"], "--status 'sleepy' is not one of"),
        (["runs", "list", "--hot", "mysql://x"], "accepted: sqlite:///PATH"),
    ],
)
def test_bad_input_gets_a_clear_error(args: list[str], message: str, tmp_path: Path) -> None:
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in " ".join(proc.stderr.split()), proc.stderr


def test_unserializable_result_fails_the_run_clearly(tmp_path: Path) -> None:
    proc = cli("run", f"{MISC}:returns_a_set", "--run-id", "s1", "--json", cwd=tmp_path)
    assert proc.returncode == 1
    report = last_json(proc)
    assert isinstance(report, dict)
    assert report["status"] == "failed"
    assert report["error"]["type"] == "TypeError"
    assert "returned a result that cannot be stored" in report["error"]["message"]


def test_signal_show_list_resume_cancel(tmp_path: Path) -> None:
    proc = cli(
        "run", f"{MISC}:approval", "--input", '"bob"', "--run-id", "ap1", "--json", cwd=tmp_path
    )
    assert proc.returncode == 3, proc.stderr  # suspended
    report = last_json(proc)
    assert isinstance(report, dict)
    assert report["status"] == "suspended" and report["waiting_for"] == "approve"
    assert "outlast runs signal ap1 approve" in " ".join(proc.stderr.split())

    listed = last_json(cli("runs", "list", "--json", cwd=tmp_path))
    assert [(r["run_id"], r["status"]) for r in listed] == [("ap1", "suspended")]

    sent = cli(
        "runs", "signal", "ap1", "approve", "--payload", '{"ok": true}', "--json", cwd=tmp_path
    )
    assert sent.returncode == 0, sent.stderr
    resumed = cli("runs", "resume", "ap1", "--target", f"{MISC}:approval", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    final = last_json(resumed)
    assert isinstance(final, dict)
    assert final["status"] == "succeeded"
    assert final["result"] == {"who": "bob", "decision": {"ok": True}}

    shown = last_json(cli("runs", "show", "ap1", "--json", cwd=tmp_path))
    assert isinstance(shown, dict)
    assert shown["status"] == "succeeded"
    assert shown["entries_by_kind"] == {"step": 1, "clock": 1, "signal": 1}
    assert shown["counters"]["legs"] == 2
    human = cli("runs", "show", "ap1", cwd=tmp_path)
    assert "restart tax avoided" in human.stdout

    proc = cli("run", f"{MISC}:approval", "--input", '"eve"', "--run-id", "ap2", cwd=tmp_path)
    cancelled = last_json(cli("runs", "cancel", "ap2", "--json", cwd=tmp_path))
    assert cancelled == {"run_id": "ap2", "status": "cancelled"}
    refused = cli("runs", "signal", "ap2", "approve", cwd=tmp_path)
    assert refused.returncode == 2 and "has cancelled" in refused.stderr
