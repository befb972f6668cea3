"""``outlast init lambda DIR``: the project passes ``sam validate --lint`` and ``sam build``
offline, and its agent runs under ``outlast lambda invoke``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "sam" / "bin"


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("OUTLAST_HOT_URL", None)
    env.pop("OUTLAST_COLD_URL", None)
    env.update(
        {
            "AWS_DEFAULT_REGION": "us-east-1",
            "SAM_CLI_TELEMETRY": "0",
            "AWS_EC2_METADATA_DISABLED": "true",
            # The layer rule's pip: the SAM virtualenv's python has pip (as in infra_check.sh).
            "PYTHON": str(TOOLS / "python"),
        }
    )
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_init_lambda_writes_a_project_that_refuses_to_clobber(tmp_path: Path) -> None:
    project = tmp_path / "shop-agent"
    done = run([sys.executable, "-m", "outlast.cli", "init", "lambda", str(project),
                "--module", "shop_agent"], tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in ("template.yaml", "samconfig.toml", "Makefile", "layer/requirements.txt",
                 "src/shop_agent.py", "events/start.json", "README.md"):  # fmt: skip
        assert (project / name).is_file(), name
    assert "AppModule" in (project / "template.yaml").read_text()
    assert "shop_agent:app" in (project / "samconfig.toml").read_text()
    again = run([sys.executable, "-m", "outlast.cli", "init", "lambda", str(project)], tmp_path)
    assert again.returncode == 2 and "not empty" in again.stderr
    bad = run([sys.executable, "-m", "outlast.cli", "init", "lambda", str(tmp_path / "x"),
               "--module", "Not-A-Module"], tmp_path)  # fmt: skip
    assert bad.returncode == 2


# The offline commands of docs/deploy.md's walk-through, in its order, run as written.
DOC_COMMANDS = [
    "outlast init lambda support-bot --module support_bot",
    "outlast lambda invoke --event events/start.json --timeout 5",
    "sam validate --lint",
    "sam build",
]


def test_the_deploy_guide_shows_these_commands() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for command in DOC_COMMANDS:
        assert command in guide, command


def invoke_report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.skipif(not (TOOLS / "sam").exists(), reason="the SAM CLI is installed by infra_check")
def test_the_scaffold_validates_builds_and_runs_locally(tmp_path: Path) -> None:
    init, invoke, validate, build = (c.split() for c in DOC_COMMANDS)
    done = run([sys.executable, "-m", "outlast.cli", *init[1:]], tmp_path)
    assert done.returncode == 0, done.stderr
    project = tmp_path / "support-bot"

    # Before any build: the handler runs from the source directory (src/).
    before = invoke_report(
        run([sys.executable, "-m", "outlast.cli", *invoke[1:], "--json"], project)
    )
    assert before["status"] == "succeeded"
    assert before["result"]["answer"].startswith("[offline model]")
    assert before["invocations"][0]["function"] == "AgentFunction"

    checked = run([str(TOOLS / "sam"), *validate[1:]], project)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    built_ok = run([str(TOOLS / "sam"), *build[1:]], project)
    assert built_ok.returncode == 0, built_ok.stdout[-3000:] + built_ok.stderr[-3000:]
    built = project / ".aws-sam" / "build"
    assert (built / "AgentFunction" / "support_bot.py").is_file()
    layer = built / "OutlastLayer" / "python"
    assert (layer / "outlast" / "platforms" / "lambda_entry.py").is_file()
    assert not (layer / "botocore").exists()

    # After the build: the built function, a new run id (the first one has ended).
    event = json.loads((project / "events" / "start.json").read_text())
    event["outlast"]["run_id"] = "hello-2"
    (project / "events" / "again.json").write_text(json.dumps(event))
    after = invoke_report(
        run(
            [
                sys.executable,
                "-m",
                "outlast.cli",
                "lambda",
                "invoke",
                "--event",
                "events/again.json",
                "--timeout",
                "5",
                "--json",
            ],
            project,
        )
    )
    assert after["status"] == "succeeded" and after["run_id"] == "hello-2"
    shown = run([sys.executable, "-m", "outlast.cli", "runs", "show", "hello-2"], project)
    assert shown.returncode == 0 and "succeeded" in shown.stdout + shown.stderr
