"""``examples/pydantic_ai_agent.py`` runs offline through ``outlast run`` with faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pydantic_ai_agent.py"


def outlast(cwd: Path, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_AI_MODEL"}
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
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


@pytest.mark.slow
def test_the_hello_world_example_survives_faults(tmp_path: Path) -> None:
    from examples.pydantic_ai_agent import OFFLINE_ANSWER

    run = outlast(
        tmp_path,
        "run",
        f"{EXAMPLE}:hello",
        "--input",
        json.dumps('Where does "hello world" come from?'),
        "--run-id",
        "hello-1",
        "--leg-timeout",
        "2",
        "--evict-rate",
        "0.3",
        "--kill-rate",
        "0.3",
        "--duplicate-rate",
        "0.2",
        "--seed",
        "1",
    )
    assert run["status"] == "succeeded", run
    assert run["result"] == OFFLINE_ANSWER
    shown = outlast(tmp_path, "runs", "show", "hello-1")
    assert [s["name"] for s in shown["steps"]] == ["hello__model.request"]
    assert shown["tokens"]["total"] > 0
