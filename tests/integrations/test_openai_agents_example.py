"""examples/openai_agents_agent.py runs offline through ``outlast run``, with faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("agents")

from outlast import App
from outlast.report import run_report
from statestore import EntryStatus

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "openai_agents_agent.py"
PROMPT = "Write a haiku about recursion in programming."
HAIKU = "Code within the code,\nfunctions calling themselves,\ninfinite loop's dance."


@pytest.mark.parametrize("seed", [1, 4])
def test_the_example_runs_offline_through_outlast_run_with_faults(
    tmp_path: Path, seed: int
) -> None:
    hot, cold = f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "outlast.cli",
            "run",
            f"{EXAMPLE}:hello",
            "--input",
            json.dumps(PROMPT),
            "--run-id",
            "hello",
            "--hot",
            hot,
            "--cold",
            cold,
            "--json",
            "--evict-rate",
            "0.3",
            "--kill-rate",
            "0.3",
            "--duplicate-rate",
            "0.2",
            "--seed",
            str(seed),
            # A leg spends 1.5-2 s importing the SDK on a loaded 2-core machine: 2 s legs then
            # died before their one step could commit, until the step's interruption cap.
            "--leg-timeout",
            "4",
            "--max-idle-legs",
            "40",
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["status"] == "succeeded", report
    assert report["result"] == HAIKU

    app = App("check", hot_url=hot, cold_url=cold)
    try:
        journal = app.journal("hello")
        assert [(e.name, e.status) for e in journal] == [("model", EntryStatus.OK)]
        assert journal[0].meta["input_tokens"] == 28
        assert journal[0].meta["output_tokens"] == 19
        assert run_report(app.store, "hello").tokens["total"] == 47
    finally:
        app.close()
