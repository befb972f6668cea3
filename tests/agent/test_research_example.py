"""The research agent example, run the way the README's demo runs it: through the emulator with
evictions and kills, then reported on with ``outlast runs show``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "research_agent.py"
MODEL_SETTINGS = ("OUTLAST_BEDROCK_MODEL_ID", "OPENAI_API_KEY", "OPENAI_BASE_URL")


def outlast(cwd: Path, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in MODEL_SETTINGS}
    env["OUTLAST_HOT_URL"] = f"sqlite:///{cwd}/hot.db"
    env["OUTLAST_COLD_URL"] = f"file://{cwd}/cold"
    done = subprocess.run(
        [sys.executable, "-m", "outlast.cli", *args, "--json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


@pytest.mark.slow
def test_the_demo_run_survives_faults_and_reports_its_restart_tax(tmp_path: Path) -> None:
    target = f"{EXAMPLE}:research"
    run = outlast(
        tmp_path,
        "run",
        target,
        "--input",
        '"durable agents"',
        "--run-id",
        "demo-test",
        "--leg-timeout",
        "3",
        "--evict-rate",
        "0.3",
        "--kill-rate",
        "0.2",
        "--seed",
        "7",
    )
    assert run["status"] == "succeeded"
    assert run["kills"] + run["evictions"] >= 1
    result = run["result"]
    assert result["stop"] == "completed"
    assert result["turns"] >= 20
    assert result["model"] == "offline"
    assert result["report"].startswith("[offline model]")
    corpus = {p.stem for p in (ROOT / "examples" / "corpus").glob("*.md")}
    assert len(corpus) >= 10
    assert len(result["sources"]) >= 5
    assert set(result["sources"]) <= corpus

    # One note file per note call, however many legs tried it: the step key names the file.
    notes = list((tmp_path / ".outlast" / "notes" / "demo-test").glob("*.md"))
    assert len(notes) == result["report"].count("\n- [")

    shown = outlast(tmp_path, "runs", "show", "demo-test")
    usage = result["usage"]
    assert shown["tokens"]["total"] == usage["input_tokens"] + usage["output_tokens"] > 0
    tax = shown["restart_tax"]
    assert tax["interruptions"] >= 1
    assert tax["tokens_spent"] == shown["tokens"]["total"]
    assert shown["counters"]["legs"] >= 2
    model_steps = next(s for s in shown["steps"] if s["name"] == "model")
    assert model_steps["count"] == result["turns"]
