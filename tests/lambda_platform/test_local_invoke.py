"""``outlast lambda invoke``: the SAM template's real handlers, in local processes killed at the
timeout, their own async invokes (hand-offs) and the sweeper served locally, until the run ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unique
from tests.support.servers import MotoServer

ROOT = Path(__file__).resolve().parents[2]
OUTLAST = [sys.executable, "-m", "outlast.cli"]

SLOW_AGENT = """
import os
import time
from pathlib import Path

from outlast import App, Context

# Margins sized for a loaded 2-core machine (with 0.5 s each the test flaked both ways):
# - the hand-off margin covers a slow step's commit, so only the hung leg is killed at the timeout;
# - the lease outlives the deadline by 3 s, longer than Lambda's immediate retry takes to start a
#   process, so the retry is always refused and the sweeper re-drives the run.
app = App("slow-agent", lease_margin=3.0, handoff_margin=1.5)
MARKS = Path(os.environ["SLOW_AGENT_MARKS"])


def slow(i: int) -> int:
    mark = MARKS / f"step-{i}"
    if i == 2 and not mark.exists():
        mark.write_text("hung once")
        time.sleep(120)  # hangs past the function's timeout: Lambda kills the process
    time.sleep(0.5)
    return i * i


@app.durable()
def crawl(ctx: Context, n: int) -> dict:
    squares = [ctx.step(slow, i, name="slow") for i in range(n)]
    return {"n": n, "total": sum(squares)}
"""


def invoke(cwd: Path, *args: str, timeout: float = 240) -> tuple[int, dict[str, Any], str]:
    env = dict(os.environ)
    env.pop("OUTLAST_HOT_URL", None)
    env.pop("OUTLAST_COLD_URL", None)
    proc = subprocess.run(
        [
            *OUTLAST,
            "lambda",
            "invoke",
            "--template",
            str(ROOT / "template.yaml"),
            "--build-dir",
            str(cwd / "no-build"),
            "--json",
            *args,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    return proc.returncode, json.loads(lines[-1]), proc.stderr


def agent_legs(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in report["invocations"] if i["function"] == "AgentFunction"]


def test_the_example_runs_across_invocations_on_the_embedded_store(tmp_path: Path) -> None:
    code, report, stderr = invoke(
        tmp_path, "--event", str(ROOT / "events" / "start-direct.json"), "--timeout", "2"
    )
    assert code == 0, (report, stderr[-3000:])
    assert report["status"] == "succeeded" and report["run_id"] == "demo-1"
    assert report["result"]["topic"] == "durable agents" and report["result"]["sources"]
    legs = agent_legs(report)
    assert len(legs) >= 3, legs
    assert legs[-1]["outcome"] == "completed", legs
    # Legs hand off before the timeout; one killed there anyway (a slow hand-off on a loaded
    # machine) is retried, and the retry finds its leg taken: each leg ran once, in order.
    ran = [leg["leg"] for leg in legs if leg["outcome"] not in ("skipped", "timeout")]
    assert ran == sorted(set(ran)), legs
    assert all(leg["outcome"] in ("handed_off", "skipped", "timeout") for leg in legs[:-1]), legs
    assert (tmp_path / ".outlast" / "hot.db").exists()  # the embedded store, by default


def test_the_example_runs_on_dynamodb_and_s3(tmp_path: Path, moto_server: MotoServer) -> None:
    table, bucket = unique("invoke-hot"), unique("invoke-cold")
    endpoint = moto_server.endpoint
    hot = f"dynamodb://{table}?region=us-east-1&endpoint_url={endpoint}&create=1"
    cold = f"s3://{bucket}/outlast?region=us-east-1&endpoint_url={endpoint}&create=1"
    code, report, stderr = invoke(
        tmp_path,
        "--event",
        str(ROOT / "events" / "start-direct.json"),
        "--timeout",
        "2",
        "--hot",
        hot,
        "--cold",
        cold,
        "--duplicate-rate",
        "0.3",
        "--seed",
        "3",
    )
    assert code == 0, (report, stderr[-3000:])
    assert report["status"] == "succeeded"
    legs = agent_legs(report)
    assert len(legs) >= 3
    # A continuation delivered twice runs its leg once: whichever copy comes second finds the
    # lease taken or the run moved on, and does nothing.
    assert any(leg["duplicate"] for leg in legs)
    ran = [leg["leg"] for leg in legs if leg["outcome"] != "skipped"]
    assert len(ran) == len(set(ran)), legs
    assert not (tmp_path / ".outlast" / "hot.db").exists()


def test_a_leg_killed_at_the_timeout_is_retried_and_recovered(tmp_path: Path) -> None:
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / "slow_agent.py").write_text(textwrap.dedent(SLOW_AGENT), encoding="utf-8")
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "env.json").write_text(
        json.dumps({"AgentFunction": {"SLOW_AGENT_MARKS": str(marks)}}), encoding="utf-8"
    )
    event = {"outlast": {"action": "start", "function": "crawl", "run_id": "slow-1", "input": 12}}
    (tmp_path / "event.json").write_text(json.dumps(event), encoding="utf-8")
    code, report, stderr = invoke(
        tmp_path,
        "--event",
        str(tmp_path / "event.json"),
        "--timeout",
        "5",
        "--env-vars",
        str(tmp_path / "env.json"),
        "--parameter-overrides",
        f"AppCodeUri={code_dir}",
        "--parameter-overrides",
        "AppModule=slow_agent:app",
        "--sweep-every",
        "0.5",
    )
    assert code == 0, (report, stderr[-3000:])
    assert report["result"] == {"n": 12, "total": sum(i * i for i in range(12))}
    legs = agent_legs(report)
    assert len(legs) >= 3, legs
    killed = [leg for leg in legs if leg["outcome"] == "timeout"]
    assert len(killed) == 1, legs
    assert killed[0]["duration"] == pytest.approx(5.0, abs=0.5), legs
    # Lambda's retry of the killed event comes while the dead leg's lease still holds: it is
    # skipped, and the sweeper re-drives the run once the lease has expired.
    assert report["sweeps"] >= 1 and report["dead_letters"] == 0
    assert any(leg["event_kind"] == "continue" and leg["leg"] is None for leg in legs) or any(
        leg["attempt"] for leg in legs
    )


def test_lambda_api_serves_the_http_api_and_runs_what_it_dispatches(tmp_path: Path) -> None:
    import signal
    import time
    import urllib.request

    env = dict(os.environ)
    env.pop("OUTLAST_HOT_URL", None)
    env.pop("OUTLAST_COLD_URL", None)
    proc = subprocess.Popen(
        [*OUTLAST, "lambda", "api", "--template", str(ROOT / "template.yaml"),
         "--build-dir", str(tmp_path / "no-build"), "--port", "0", "--timeout", "3"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving ApiFunction on http://" in line, line
        url = line.split(" on ", 1)[1].split()[0]
        request = urllib.request.Request(
            f"{url}/runs",
            data=json.dumps({"function": "research", "run_id": "api-1", "input": "x"}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 202
            assert json.loads(answer.read())["run_id"] == "api-1"
        status = None
        until = time.monotonic() + 120
        while time.monotonic() < until and status != "succeeded":
            with urllib.request.urlopen(f"{url}/runs/api-1", timeout=30) as answer:
                status = json.loads(answer.read())["status"]
            time.sleep(0.5)
        assert status == "succeeded"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/runs/nope", timeout=30)
        assert missing.value.code == 404
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_example_crosses_three_invocations_at_a_five_second_timeout(tmp_path: Path) -> None:
    # The command as written; a slower offline model (the example's pace knob, through
    # --env-vars as `sam local invoke` takes them) makes the run span more than two legs.
    env_vars = tmp_path / "env.json"
    env_vars.write_text(json.dumps({"Parameters": {"OUTLAST_EXAMPLE_PACE": "3"}}))
    code, report, stderr = invoke(
        tmp_path,
        "--event",
        str(ROOT / "events" / "start-direct.json"),
        "--timeout",
        "5",
        "--env-vars",
        str(env_vars),
        timeout=240,
    )
    assert code == 0, (report, stderr[-3000:])
    assert report["status"] == "succeeded"
    legs = agent_legs(report)
    assert len(legs) >= 3, legs
    assert legs[-1]["outcome"] == "completed", legs
