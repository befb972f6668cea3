#!/usr/bin/env bash
# Offline checks of the SAM application: `sam validate --lint`, `sam build` (no Docker, any
# python3 >= 3.9 on the machine), an import smoke test of the built layer when a python3.13 is at
# hand, and checkov against checkov-baseline.yaml.
#
# The tools live in their own virtualenvs under .tools/ (checkov and the SAM CLI pin conflicting
# libraries, and neither belongs in the project's .venv). Only PyPI is contacted, and only the
# first time or when a pin below changes. Exit status is non-zero on any failure.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

SAM_SPEC="aws-sam-cli==1.170.0"
CHECKOV_SPEC="checkov==3.3.30"
TOOLS="$ROOT/.tools"
BASELINE="$ROOT/checkov-baseline.yaml"
BUILD_DIR="$ROOT/.aws-sam/build"

# sam needs a region even to validate; no credentials are needed or looked up.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_REGION="${AWS_REGION:-$AWS_DEFAULT_REGION}"
export SAM_CLI_TELEMETRY=0
# Keeps botocore from probing the EC2 metadata endpoint for credentials (a slow timeout offline).
export AWS_EC2_METADATA_DISABLED=true

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'infra_check: FAILED: %s\n' "$*" >&2; exit 1; }

# ensure_tool NAME SPEC: a virtualenv at .tools/NAME holding SPEC. A stamp file named after the
# spec makes the second run skip pip entirely; changing the pin reinstalls.
ensure_tool() {
    local name=$1 spec=$2
    local venv="$TOOLS/$name"
    local stamp="$venv/.installed-${spec//[^A-Za-z0-9._-]/_}"
    if [[ -f "$stamp" && -x "$venv/bin/python" ]]; then
        return 0
    fi
    step "installing $spec into .tools/$name"
    if [[ ! -x "$venv/bin/python" ]]; then
        python3 -m venv "$venv" || fail "python3 -m venv $venv (install the python3-venv package)"
    fi
    local log="$venv/pip-install.log"
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip "$spec" \
        >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        fail "pip install $spec (full log: $log)"
    fi
    rm -f "$venv"/.installed-*
    touch "$stamp"
}

ensure_tool sam "$SAM_SPEC"
ensure_tool checkov "$CHECKOV_SPEC"
SAM="$TOOLS/sam/bin/sam"
CHECKOV="$TOOLS/checkov/bin/checkov"

step "events/*.json parse"
"$TOOLS/sam/bin/python" - events/*.json <<'PY' || fail "events/ holds invalid JSON"
import json
import sys

for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        json.load(f)
print(f"{len(sys.argv) - 1} event files parse")
PY

step "sam validate --lint"
"$SAM" validate --lint --template-file template.yaml || fail "sam validate --lint"

step "sam build (makefile builds, in source)"
# layers/Makefile runs `$(PYTHON) -m pip`; the SAM virtualenv's python is known to have pip,
# which a bare system python3 may lack.
PYTHON="$TOOLS/sam/bin/python" "$SAM" build --build-in-source --template-file template.yaml \
    --build-dir "$BUILD_DIR" || fail "sam build"
# The agent and API functions are the app's code (AppCodeUri, default examples/); the handler
# is the layer's generic outlast.platforms.lambda_entry.
for artifact in OutlastLayer/python/statestore OutlastLayer/python/outlast \
    OutlastLayer/python/outlast/platforms/lambda_entry.py OutlastLayer/python/pydantic_core \
    AgentFunction/research_agent.py ApiFunction/research_agent.py SweeperFunction; do
    [[ -e "$BUILD_DIR/$artifact" ]] || fail "sam build produced no $artifact"
done
if ! compgen -G "$BUILD_DIR/OutlastLayer/python/pydantic_core/*cpython-313-x86_64-linux-gnu.so" >/dev/null; then
    fail "the layer's pydantic_core is not the CPython 3.13 x86_64 build"
fi
for absent in boto3 botocore typer rich; do
    [[ ! -e "$BUILD_DIR/OutlastLayer/python/$absent" ]] || fail "the layer holds $absent (runtime dependencies only)"
done
layer_kb=$(du -sk "$BUILD_DIR/OutlastLayer" | cut -f1)
echo "OutlastLayer unzipped: $((layer_kb / 1024)) MB"
(( layer_kb < 40 * 1024 )) || fail "the layer is $((layer_kb / 1024)) MB unzipped (limit 40 MB)"

step "layer import smoke test (python3.13)"
# Any CPython 3.13 will do: on PATH, or installed by pyenv but not selected.
PY313=""
for candidate in python3.13 "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.13*/bin/python3.13; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1; then
        PY313=$candidate
        break
    fi
done
if [[ -n "$PY313" ]]; then
    # Lambda's layout: the layer's python/ and the function's folder on sys.path, and nothing
    # from this machine's site-packages (-I -S). boto3 is the runtime's, so it is not there
    # either: the handlers must not need it to import (they load it on first use).
    for fn in AgentFunction ApiFunction SweeperFunction; do
        app_module=""
        [[ $fn == SweeperFunction ]] || app_module="research_agent:app"
        OUTLAST_APP="$app_module" LAMBDA_TASK_ROOT="$BUILD_DIR/$fn" "$PY313" -I -S -c '
import importlib
import sys

sys.path[:0] = sys.argv[1].split(":")
for name in ("redis", "msgpack", "pydantic", "zstandard", "aws_lambda_powertools",
             "aws_xray_sdk", "statestore", "outlast"):
    importlib.import_module(name)
entry = importlib.import_module("outlast.platforms.lambda_entry")
for handler in ("agent", "api", "sweeper"):
    assert callable(getattr(entry, handler))
assert ("boto3" in sys.modules) is False, "a handler imported boto3 at cold start"
' "$BUILD_DIR/OutlastLayer/python:$BUILD_DIR/$fn" || fail "importing the built layer for $fn"
    done
    echo "layer and handlers import under $("$PY313" -V)"
else
    echo "skipped: no python3.13 on this machine (the build itself does not need one)"
fi

step "checkov (cloudformation framework, SAM-aware) against checkov-baseline.yaml"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
# --skip-download keeps checkov offline; --soft-fail because the baseline decides, below.
"$CHECKOV" --file template.yaml --framework cloudformation --skip-download --soft-fail \
    --output json >"$report" || fail "checkov did not run"
"$TOOLS/checkov/bin/python" - "$report" "$BASELINE" <<'PY' || fail "checkov findings (see above)"
import json
import sys

import yaml

report_path, baseline_path = sys.argv[1], sys.argv[2]
with open(report_path, encoding="utf-8") as f:
    report = json.load(f)
reports = report if isinstance(report, list) else [report]
with open(baseline_path, encoding="utf-8") as f:
    baseline = yaml.safe_load(f) or {}

problems = []
accepted = {}
for entry in baseline.get("accepted", []):
    check, reason = entry.get("check"), str(entry.get("reason") or "").strip()
    if not check or not entry.get("resources"):
        problems.append(f"baseline entry without check or resources: {entry!r}")
        continue
    if len(reason) < 20:
        problems.append(f"baseline entry {check} has no written reason")
    for resource in entry["resources"]:
        accepted[(check, resource)] = reason

failed, passed, resources = set(), 0, 0
for r in reports:
    if r.get("check_type") != "cloudformation":
        continue
    summary = r.get("summary", {})
    if summary.get("parsing_errors"):
        problems.append(f"checkov could not parse the template: {summary}")
    passed += summary.get("passed", 0)
    resources += summary.get("resource_count", 0)
    for c in r.get("results", {}).get("failed_checks", []):
        failed.add((c["check_id"], c["resource"]))
        if (c["check_id"], c["resource"]) not in accepted:
            problems.append(f"{c['check_id']} failed on {c['resource']}: {c['check_name']}")

if resources == 0:
    problems.append("checkov scanned no resources: is template.yaml empty or unparsable?")
for check, resource in sorted(set(accepted) - failed):
    problems.append(f"stale baseline entry: {check} on {resource} passes now; remove it")

if problems:
    print("checkov: findings not covered by checkov-baseline.yaml:")
else:
    print(f"checkov: {passed} passed, {len(failed)} failed and accepted in checkov-baseline.yaml")
for p in problems:
    print(f"  - {p}")
sys.exit(1 if problems else 0)
PY

step "all infrastructure checks passed"
