"""Lambda cold start and package size: the generic handler's cold import, and the layer's size.

Run from the repository root::

    .venv/bin/python bench/lambda_bench.py [--runs 7] [--build] [--json]

- cold import: a fresh interpreter per sample (``python -c``), as a Lambda cold start is. The
  clock runs around ``import outlast.platforms.lambda_entry`` with ``OUTLAST_APP`` set, which
  imports the app at that moment (what the function's init phase pays), then around building
  the agent handler (``agent_handler()``: Powertools Logger and Metrics; the Tracer, and with it
  the X-Ray SDK, is made on first use). Two apps: a minimal agent written to a temporary
  directory, and the example research agent (``examples/``, which also imports the agent loop
  and its offline model). It also says whether boto3 or aws_xray_sdk were imported by then.
  When a python3.13 and a ``sam build`` output are at hand, the example once more as on Lambda:
  ``python3.13 -I -S`` with only the built layer and the built function on ``sys.path``.
- layer size: the unzipped size of ``.aws-sam/build/OutlastLayer`` (what ``sam build`` made),
  or with ``--build`` (or when there is none) of a fresh ``make -f layers/Makefile`` build in a
  temporary directory (pip fetches or reuses wheels for python3.13 manylinux x86_64), with the
  largest packages in it.

Targets (issue 13): cold import under 250 ms, layer under 40 MB unzipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMPORT_TARGET_MS = 250.0
LAYER_TARGET_MB = 40.0

MINIMAL_AGENT = """
from outlast import App, Context

app = App("minimal")


@app.durable()
def hello(ctx: Context, name: str) -> str:
    return ctx.step(lambda: f"hello {name}", name="greet")
"""

PROBE = r"""
import json, os, sys, time
extra = os.environ.get("OUTLAST_BENCH_PATH")
if extra:
    sys.path[:0] = extra.split(os.pathsep)
t0 = time.perf_counter()
import outlast.platforms.lambda_entry
t1 = time.perf_counter()
from outlast.platforms.aws_lambda import agent_handler
agent_handler()
t2 = time.perf_counter()
print(json.dumps({
    "import_ms": (t1 - t0) * 1000,
    "handler_ms": (t2 - t1) * 1000,
    "boto3": "boto3" in sys.modules,
    "aws_xray_sdk": "aws_xray_sdk" in sys.modules,
}))
"""


def cold_import(
    app: str,
    code_dir: Path,
    runs: int,
    *,
    python: str = sys.executable,
    isolated_path: list[Path] | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Median cold import of ``app``; with ``isolated_path``, under ``python -I -S`` with only
    those directories (the built layer and the function's code, Lambda's layout)."""
    env = dict(os.environ)
    env.update(
        {
            "OUTLAST_APP": app,
            "LAMBDA_TASK_ROOT": str(code_dir),
            "AWS_LAMBDA_FUNCTION_NAME": "outlast-agent",
            "AWS_REGION": env.get("AWS_REGION", "us-east-1"),
        }
    )
    env.pop("PYTHONPATH", None)
    command = [python, "-c", PROBE]
    if isolated_path is not None:
        command = [python, "-I", "-S", "-c", PROBE]
        env["OUTLAST_BENCH_PATH"] = os.pathsep.join(str(p) for p in isolated_path)
    samples: list[dict[str, Any]] = []
    for _ in range(runs + 1):  # the first fills the OS page cache; not counted
        out = subprocess.run(
            command,
            cwd=code_dir,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    counted = samples[1:]
    imports = [s["import_ms"] for s in counted]
    handlers = [s["handler_ms"] for s in counted]
    return {
        "app": app + label,
        "import_ms_median": round(statistics.median(imports), 1),
        "import_ms_min": round(min(imports), 1),
        "handler_ms_median": round(statistics.median(handlers), 1),
        "boto3_loaded": any(s["boto3"] for s in counted),
        "xray_loaded": any(s["aws_xray_sdk"] for s in counted),
    }


def _python313() -> str | None:
    """A CPython 3.13 that runs: on PATH, or installed by pyenv but not selected."""
    candidates = [shutil.which("python3.13") or ""]
    root = Path.home() / ".pyenv" / "versions"
    candidates += [str(p) for p in sorted(root.glob("3.13*/bin/python3.13"))]
    for candidate in candidates:
        if not candidate:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 13)"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return candidate
    return None


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def layer_size(build: bool) -> dict[str, Any]:
    built = ROOT / ".aws-sam" / "build" / "OutlastLayer"
    scratch: Path | None = None
    if build or not built.is_dir():
        scratch = Path(tempfile.mkdtemp(prefix="outlast-layer-"))
        sys.stderr.write(f"building the layer in {scratch} (make -f layers/Makefile)...\n")
        subprocess.run(
            ["make", "-s", "-f", "layers/Makefile", "build-OutlastLayer"],
            cwd=ROOT,
            env={**os.environ, "ARTIFACTS_DIR": str(scratch), "PYTHON": sys.executable},
            check=True,
        )
        built = scratch
    try:
        python = built / "python"
        parts = sorted(
            ((p.name, tree_size(p) if p.is_dir() else p.stat().st_size) for p in python.iterdir()),
            key=lambda item: -item[1],
        )
        total = tree_size(built)
        return {
            "layer_dir": str(built) if scratch is None else "(fresh build)",
            "layer_mb": round(total / 2**20, 1),
            "largest": [{"name": n, "mb": round(s / 2**20, 2)} for n, s in parts[:8]],
        }
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--build", action="store_true", help="build the layer afresh")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    results: dict[str, Any] = {"cold_import": []}
    with tempfile.TemporaryDirectory(prefix="outlast-bench-") as tmp:
        minimal = Path(tmp)
        (minimal / "minimal_agent.py").write_text(textwrap.dedent(MINIMAL_AGENT))
        for app, code_dir in (
            ("minimal_agent:app", minimal),
            ("research_agent:app", ROOT / "examples"),
        ):
            sys.stderr.write(f"cold import of {app} ({args.runs} fresh interpreters)...\n")
            results["cold_import"].append(cold_import(app, code_dir, args.runs))
    # Lambda's own layout, when a python3.13 and a built layer are at hand: only the layer and
    # the built function on sys.path (boto3 is not there, so a handler that needed it would fail).
    layer = ROOT / ".aws-sam" / "build" / "OutlastLayer" / "python"
    function = ROOT / ".aws-sam" / "build" / "AgentFunction"
    py313 = _python313()
    if py313 and layer.is_dir() and (function / "research_agent.py").is_file():
        sys.stderr.write(f"cold import under {py313} -I -S with the built layer...\n")
        results["cold_import"].append(
            cold_import(
                "research_agent:app",
                function,
                args.runs,
                python=py313,
                isolated_path=[function, layer],
                label=" (3.13+layer)",
            )
        )
    results["layer"] = layer_size(args.build)

    print(f"{'app':<34} {'import p50':>11} {'min':>8} {'handler':>9}  boto3  x-ray")
    for row in results["cold_import"]:
        print(
            f"{row['app']:<34} {row['import_ms_median']:>9.1f}ms {row['import_ms_min']:>6.1f}ms "
            f"{row['handler_ms_median']:>7.1f}ms  {'yes' if row['boto3_loaded'] else 'no':<5}  "
            f"{'yes' if row['xray_loaded'] else 'no'}"
        )
    layer = results["layer"]
    print(f"layer unzipped: {layer['layer_mb']} MB ({layer['layer_dir']})")
    for part in layer["largest"]:
        print(f"  {part['name']:<28} {part['mb']:>6.2f} MB")
    worst = max(
        row["import_ms_median"] + row["handler_ms_median"] for row in results["cold_import"]
    )
    ok_import = worst < IMPORT_TARGET_MS
    ok_layer = layer["layer_mb"] < LAYER_TARGET_MB
    print(
        f"{'PASS' if ok_import else 'FAIL'} cold import + handler < {IMPORT_TARGET_MS:g} ms "
        f"(worst median {worst:.1f} ms)"
    )
    print(
        f"{'PASS' if ok_layer else 'FAIL'} layer < {LAYER_TARGET_MB:g} MB ({layer['layer_mb']} MB)"
    )
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
