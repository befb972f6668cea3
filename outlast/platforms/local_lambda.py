"""The SAM application on this machine, without Docker: ``outlast lambda invoke``.

It reads ``template.yaml`` (``CodeUri``, ``Handler``, ``Timeout``, ``MemorySize``, the
environment from ``Globals`` and the function, ``RecursiveLoop``, ``AutoPublishAlias``) and runs
the real handler, from ``.aws-sam/build/<Function>`` when ``sam build`` made one, else from the
source directory. Outlast and its dependencies come from this Python (the built layer holds
python3.13 Linux wheels, which need not match it).

Lambda's rules, locally:

- each invocation is a fresh process (``outlast.platforms.local_lambda_child``) with a context
  (request id, the invoked ARN with its version, ``get_remaining_time_in_millis()``); at the
  timeout it is killed with SIGKILL, no SIGTERM first;
- the function's own asynchronous invokes (``boto3.client("lambda").invoke(...,
  InvocationType="Event")``: hand-offs, re-drives) reach a local Invoke endpoint
  (``AWS_ENDPOINT_URL_LAMBDA``) and are run as further invocations: at least once (a
  ``duplicate_rate`` share twice), retried twice after an error or a timeout, then written to a
  local dead-letter file; a function without ``RecursiveLoop: Allow`` is stopped after 16
  self-invocations in a chain, as Lambda does;
- the sweeper (when the template has one) runs when nothing is queued, every ``sweep_every``
  seconds instead of every minute;
- it stops when the run ends (or after ``max_seconds``), and reports every invocation.

The store is the embedded one unless ``hot``/``cold`` name another (Redis, DynamoDB and S3
through moto_server...): the template's own ``OUTLAST_HOT_URL``/``OUTLAST_COLD_URL`` name cloud
resources that do not exist here.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

__all__ = [
    "FunctionSpec",
    "Invocation",
    "InvokeReport",
    "LocalLambda",
    "Template",
    "TemplateError",
]

ACCOUNT = "123456789012"
DEFAULT_HOT = "sqlite:///.outlast/hot.db"
DEFAULT_COLD = "file://.outlast/cold"
MAX_RETRIES = 2  # Lambda's default for asynchronous invocations
RECURSION_LIMIT = 16  # Lambda stops a recursive loop after about 16 hops


class TemplateError(ValueError):
    """The template (or the function named) cannot be run locally."""


# ---------------------------------------------------------------------- the template


def _cfn_loader() -> Any:
    import yaml  # type: ignore[import-untyped,unused-ignore]

    class Loader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
        pass

    def construct(loader: Any, tag_suffix: str, node: Any) -> Any:
        name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag_suffix == "GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    Loader.add_multi_constructor("!", construct)
    return Loader


class Template:
    """A SAM template with its parameters resolved far enough to run functions locally."""

    def __init__(
        self,
        path: Path,
        *,
        overrides: dict[str, str] | None = None,
        stack_name: str | None = None,
        region: str | None = None,
    ) -> None:
        import yaml  # type: ignore[import-untyped,unused-ignore]

        self.path = path
        self.root = path.parent
        try:
            self.doc: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), _cfn_loader())  # noqa: S506 - SafeLoader subclass
        except (OSError, yaml.YAMLError) as exc:
            raise TemplateError(f"cannot read {path}: {exc}") from None
        config = _samconfig(self.root)
        self.stack_name = stack_name or config.get("stack_name") or "outlast"
        self.region = (
            region
            or os.environ.get("AWS_REGION")
            or config.get("region")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        self.params: dict[str, str] = {}
        for name, decl in (self.doc.get("Parameters") or {}).items():
            if isinstance(decl, dict) and "Default" in decl:
                self.params[name] = str(decl["Default"])
        self.params.update(overrides or {})
        self.resources: dict[str, Any] = self.doc.get("Resources") or {}

    # -------------------------------------------------------------- names

    def function_ids(self) -> list[str]:
        return [
            rid
            for rid, res in self.resources.items()
            if isinstance(res, dict) and res.get("Type") == "AWS::Serverless::Function"
        ]

    def arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{name}"

    def function_name(self, rid: str) -> str:
        props = self.resources[rid].get("Properties") or {}
        name = props.get("FunctionName")
        return str(self.resolve(name)) if name is not None else f"{self.stack_name}-{rid}"

    # -------------------------------------------------------------- intrinsics

    def condition(self, name: str) -> bool:
        cond = (self.doc.get("Conditions") or {}).get(name)
        return bool(self.resolve(cond))

    def resolve(self, value: Any) -> Any:
        """The value with ``Ref``, ``Fn::Sub``, ``Fn::If``, ``Fn::GetAtt``... worked out."""
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: self.resolve(v) for k, v in value.items()}
        ((key, arg),) = value.items()
        if key == "Ref":
            return self._ref(str(arg))
        if key == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            values = {k: str(self.resolve(v)) for k, v in extra.items()}
            return re.sub(
                r"\$\{([^}]+)\}",
                lambda m: values.get(m.group(1)) or str(self._sub_name(m.group(1))),
                text,
            )
        if key == "Fn::If":
            name, yes, no = arg
            return self.resolve(yes if self.condition(name) else no)
        if key == "Fn::Equals":
            a, b = (self.resolve(v) for v in arg)
            return str(a) == str(b)
        if key == "Fn::Not":
            return not self.resolve(arg[0])
        if key == "Fn::Or":
            return any(self.resolve(v) for v in arg)
        if key == "Fn::And":
            return all(self.resolve(v) for v in arg)
        if key == "Condition":
            return self.condition(str(arg))
        if key == "Fn::GetAtt":
            rid, attr = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return self._attr(rid, attr)
        if key == "Fn::Join":
            sep, parts = arg
            return sep.join(str(self.resolve(p)) for p in parts)
        if key == "Fn::Select":
            index, items = arg
            return self.resolve(items)[int(index)]
        return {key: self.resolve(arg)}

    def _sub_name(self, name: str) -> Any:
        if "." in name:
            rid, attr = name.split(".", 1)
            return self._attr(rid, attr)
        return self._ref(name)

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT,
            "AWS::StackName": self.stack_name,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": _NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        if "." in name:  # SAM's AgentFunction.Version / AgentFunction.Alias
            rid, attr = name.split(".", 1)
            return self._attr(rid, attr)
        if name in self.resources and name in self.function_ids():
            return self.function_name(name)
        return f"local-{name}"

    def _attr(self, rid: str, attr: str) -> str:
        if rid in self.resources and rid in self.function_ids():
            arn = self.arn(self.function_name(rid))
            if attr == "Version":
                return f"{arn}:{self.version(rid)}"
            if attr == "Alias":
                return f"{arn}:{self.alias(rid) or '$LATEST'}"
            return arn
        return f"local-{rid}-{attr}"

    # -------------------------------------------------------------- functions

    def alias(self, rid: str) -> str | None:
        props = self.resources[rid].get("Properties") or {}
        alias = props.get("AutoPublishAlias")
        return str(self.resolve(alias)) if alias else None

    def version(self, rid: str) -> str:
        """Locally the code on disk is version 1 of a function that publishes versions."""
        return "1" if self.alias(rid) else "$LATEST"

    def function(self, rid: str, *, build_dir: Path | None = None) -> FunctionSpec:
        if rid not in self.function_ids():
            known = ", ".join(self.function_ids()) or "none"
            raise TemplateError(f"no function {rid!r} in {self.path} (functions: {known})")
        props = self.resources[rid].get("Properties") or {}
        glob = ((self.doc.get("Globals") or {}).get("Function")) or {}

        def prop(name: str, default: Any = None) -> Any:
            if name in props:
                return self.resolve(props[name])
            if name in glob:
                return self.resolve(glob[name])
            return default

        env: dict[str, str] = {}
        for source in (glob, props):
            variables = ((source.get("Environment") or {}).get("Variables")) or {}
            for key, raw in variables.items():
                value = self.resolve(raw)
                if value is _NO_VALUE:
                    env.pop(key, None)
                elif not isinstance(value, dict | list):
                    env[key] = str(value)
        handler = prop("Handler")
        if not handler:
            raise TemplateError(f"function {rid} has no Handler (image functions are not run)")
        build = build_dir or self.root / ".aws-sam" / "build"
        built = build / rid
        built_template = build / "template.yaml"
        # A build older than the template is stale (another CodeUri, Handler...): not used.
        fresh = built_template.exists() and (
            built_template.stat().st_mtime >= self.path.stat().st_mtime
        )
        if built.is_dir() and fresh:
            code_dir = built
        else:
            code_uri = prop("CodeUri") or "."
            if not isinstance(code_uri, str):
                raise TemplateError(f"function {rid}: CodeUri {code_uri!r} is not a local path")
            code_dir = (self.root / code_uri).resolve()
        if not code_dir.is_dir():
            raise TemplateError(f"function {rid}: no code directory {code_dir}")
        name = self.function_name(rid)
        return FunctionSpec(
            logical_id=rid,
            name=name,
            arn=self.arn(name),
            version=self.version(rid),
            alias=self.alias(rid),
            handler=str(handler),
            code_dir=code_dir,
            timeout=float(prop("Timeout", 3)),
            memory_mb=int(prop("MemorySize", 128)),
            env=env,
            recursive_loop_allowed=str(prop("RecursiveLoop", "Terminate")) == "Allow",
            max_retries=int(
                (props.get("EventInvokeConfig") or {}).get("MaximumRetryAttempts", MAX_RETRIES)
            ),
            schedule=any(
                isinstance(ev, dict) and ev.get("Type") in ("Schedule", "ScheduleV2")
                for ev in (props.get("Events") or {}).values()
            ),
        )


_NO_VALUE: Any = object()


def _samconfig(root: Path) -> dict[str, str]:
    path = root / "samconfig.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    params = (((data.get("default") or {}).get("global") or {}).get("parameters")) or {}
    return {k: str(v) for k, v in params.items() if isinstance(v, str | int)}


@dataclass
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    version: str
    alias: str | None
    handler: str
    code_dir: Path
    timeout: float
    memory_mb: int
    env: dict[str, str]
    recursive_loop_allowed: bool
    max_retries: int = MAX_RETRIES
    schedule: bool = False

    def matches(self, function: str) -> bool:
        """Does an Invoke's FunctionName (name, name:qualifier or ARN) name this function?"""
        if function.startswith("arn:"):
            return ":".join(function.split(":")[6:7]) == self.name
        return function.split(":", 1)[0] == self.name


# ---------------------------------------------------------------------- invocations


@dataclass
class Pending:
    function: FunctionSpec
    event: dict[str, Any]
    invoked_arn: str
    attempt: int = 0
    depth: int = 0
    duplicate: bool = False


@dataclass
class Invocation:
    """One run of a handler: what it got, how it ended."""

    n: int
    function: str
    request_id: str
    event_kind: str
    run_id: str | None
    leg: int | None
    outcome: str  # the handler's status, "error", "timeout" (killed), "crashed"
    duration: float
    attempt: int
    duplicate: bool = False
    error: str | None = None
    result: Any = None

    def line(self) -> str:
        leg = f" leg {self.leg}" if self.leg is not None else ""
        run = f" {self.run_id}" if self.run_id else ""
        extra = f" (retry {self.attempt})" if self.attempt else ""
        extra += " (duplicate delivery)" if self.duplicate else ""
        error = f": {self.error}" if self.error else ""
        return (
            f"#{self.n:<3} {self.function:<18} {self.event_kind:<9}{run}{leg} -> "
            f"{self.outcome} in {self.duration:.2f}s{extra}{error}"
        )


@dataclass
class InvokeReport:
    run_id: str | None = None
    status: str | None = None
    result: Any = None
    error: Any = None
    invocations: list[Invocation] = field(default_factory=list)
    dead_letters: int = 0
    dropped_recursion: int = 0
    sweeps: int = 0
    stopped: str = ""

    @property
    def kills(self) -> int:
        return sum(1 for i in self.invocations if i.outcome == "timeout")

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "invocations": [i.__dict__ for i in self.invocations],
            "kills": self.kills,
            "dead_letters": self.dead_letters,
            "dropped_recursion": self.dropped_recursion,
            "sweeps": self.sweeps,
            "stopped": self.stopped,
        }


class _InvokeEndpoint:
    """The Lambda Invoke API on localhost, for the functions' own boto3 clients.

    Each invocation gets its own base URL (``/inv/<request id>``), so an invoke is traced to the
    invocation that made it (RecursiveLoop). Only ``InvocationType: Event`` is served.
    """

    def __init__(self) -> None:
        self.received: list[tuple[str, str, dict[str, Any]]] = []  # (caller, function, event)
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                match = re.match(
                    r"^/inv/([^/]+)/2015-03-31/functions/([^/]+)/invocations", self.path
                )
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
                if match is None or kind != "Event":
                    self._answer(400, {"Message": f"only async invokes are served ({kind})"})
                    return
                try:
                    event = json.loads(body or b"{}")
                except ValueError:
                    self._answer(400, {"Message": "the payload is not JSON"})
                    return
                with outer._lock:
                    outer.received.append((match.group(1), unquote(match.group(2)), event))
                self._answer(202, None)

            def _answer(self, status: int, body: Any) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def take(self) -> list[tuple[str, str, dict[str, Any]]]:
        with self._lock:
            taken, self.received = self.received, []
        return taken

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _describe(event: Any) -> tuple[str, str | None, int | None]:
    """(kind, run id, leg) of an event, as far as it says."""
    if isinstance(event, dict) and isinstance(event.get("outlast"), dict):
        body = event["outlast"]
        leg = body.get("leg")
        return (
            str(body.get("action", "outlast")),
            body.get("run_id"),
            leg if isinstance(leg, int) else (1 if body.get("action") == "start" else None),
        )
    if isinstance(event, dict) and "Records" in event:
        return "sqs", None, None
    if isinstance(event, dict) and "detail-type" in event:
        return "schedule", None, None
    if isinstance(event, dict) and "requestContext" in event:
        return "http", None, None
    return "event", None, None


class LocalLambda:
    """Runs a template's functions as local processes under Lambda's rules (module doc)."""

    def __init__(
        self,
        template: Template,
        *,
        hot: str | None = None,
        cold: str | None = None,
        timeout: float | None = None,
        env_vars: dict[str, Any] | None = None,
        duplicate_rate: float = 0.0,
        seed: int | None = None,
        sweep_every: float = 1.0,
        max_seconds: float = 600.0,
        work_dir: Path | None = None,
        build_dir: Path | None = None,
        on_invocation: Callable[[Invocation], None] | None = None,
        python: str | None = None,
    ) -> None:
        self.template = template
        self.hot = hot or DEFAULT_HOT
        self.cold = cold or DEFAULT_COLD
        self.timeout = timeout
        self.env_vars = env_vars or {}
        self.duplicate_rate = duplicate_rate
        self.rng = random.Random(seed)
        self.sweep_every = sweep_every
        self.max_seconds = max_seconds
        self.work_dir = work_dir or Path(".outlast") / "lambda"
        self.build_dir = build_dir
        self.on_invocation = on_invocation
        self.python = python or sys.executable
        self.functions = {
            rid: template.function(rid, build_dir=build_dir) for rid in template.function_ids()
        }
        self.dead_letter_file = self.work_dir / "dead-letters.jsonl"
        self.log_file = self.work_dir / "invocations.log"
        self._n = 0
        self._depth: dict[str, int] = {}  # request id -> depth of its self-invocation chain
        self._lock = threading.Lock()

    # -------------------------------------------------------------- one invocation

    def _env(self, fn: FunctionSpec, request_id: str, endpoint: str) -> dict[str, str]:
        # A function's environment is what the template gives it: this shell's Outlast, Lambda
        # and Powertools settings stay out (credentials, PATH and the like come through).
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OUTLAST_", "POWERTOOLS_", "AWS_LAMBDA_", "LAMBDA_", "_HANDLER"))
        }
        env.update(fn.env)
        for key, value in (self.env_vars.get("Parameters") or {}).items():
            env[key] = str(value)
        for key, value in (self.env_vars.get(fn.logical_id) or {}).items():
            env[key] = str(value)
        env["OUTLAST_HOT_URL"] = self.hot
        env["OUTLAST_COLD_URL"] = self.cold
        timeout = self.timeout or fn.timeout
        margin = env.get("OUTLAST_HANDOFF_MARGIN")
        if margin is not None:
            # A template margin made for 15-minute legs would leave a short leg no time at all;
            # a second still covers the first hand-off's boto3 import and client.
            with contextlib.suppress(ValueError):
                env["OUTLAST_HANDOFF_MARGIN"] = str(min(float(margin), max(1.0, timeout / 5)))
        env.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": fn.name,
                "AWS_LAMBDA_FUNCTION_VERSION": fn.version,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
                "AWS_REGION": self.template.region,
                "AWS_DEFAULT_REGION": self.template.region,
                "LAMBDA_TASK_ROOT": str(fn.code_dir),
                "_HANDLER": fn.handler,
                "AWS_ENDPOINT_URL_LAMBDA": f"{endpoint}/inv/{request_id}",
                # No X-Ray daemon here; powertools would otherwise trace (LAMBDA_TASK_ROOT is set).
                "POWERTOOLS_TRACE_DISABLED": "true",
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        env.setdefault("AWS_ACCESS_KEY_ID", "outlast-local")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "outlast-local")
        # The child finds outlast where this process does, and the code directory first.
        paths = [str(fn.code_dir), *[p for p in sys.path if p]]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        return env

    def invoke(self, item: Pending, endpoint: str) -> Invocation:
        fn = item.function
        request_id = str(uuid.uuid4())
        with self._lock:
            self._n += 1
            n = self._n
            self._depth[request_id] = item.depth
        timeout = self.timeout or fn.timeout
        self.work_dir.mkdir(parents=True, exist_ok=True)
        spec_path = self.work_dir / f"{request_id}.json"
        result_path = self.work_dir / f"{request_id}.result"
        started = time.time()
        spec = {
            "handler": fn.handler,
            "code_dir": str(fn.code_dir),
            "event": item.event,
            "function_name": fn.name,
            "function_version": fn.version,
            "invoked_function_arn": item.invoked_arn,
            "memory_mb": fn.memory_mb,
            "request_id": request_id,
            "deadline": started + timeout,
            "result": str(result_path.resolve()),
        }
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        kind, run_id, leg = _describe(item.event)
        with self.log_file.open("ab") as log:
            log.write(f"\n===== #{n} {fn.logical_id} {request_id} {kind}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [self.python, "-m", "outlast.platforms.local_lambda_child", str(spec_path)],
                env=self._env(fn, request_id, endpoint),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            try:
                code = proc.wait(timeout=max(0.0, started + timeout - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()  # SIGKILL, as Lambda: no SIGTERM, no grace
                proc.wait()
                code = None
        duration = time.time() - started
        answer: dict[str, Any] | None = None
        if result_path.exists():
            try:
                answer = json.loads(result_path.read_text(encoding="utf-8"))
            except ValueError:
                answer = None
        for path in (spec_path, result_path):
            path.unlink(missing_ok=True)
        error: str | None = None
        result: Any = None
        if code is None:
            outcome, error = "timeout", f"killed at the {timeout:g}s timeout"
        elif answer is None:
            outcome, error = "crashed", f"the process exited with code {code}"
        elif not answer.get("ok"):
            outcome = "error"
            error = f"{answer.get('errorType')}: {answer.get('errorMessage')}"
        else:
            result = answer.get("result")
            outcome = "ok"
            if isinstance(result, dict):
                outcome = str(result.get("status") or "ok")
                run_id = result.get("run_id") or run_id
                leg = result.get("leg") if isinstance(result.get("leg"), int) else leg
        return Invocation(
            n=n,
            function=fn.logical_id,
            request_id=request_id,
            event_kind=kind,
            run_id=run_id,
            leg=leg,
            outcome=outcome,
            duration=duration,
            attempt=item.attempt,
            duplicate=item.duplicate,
            error=error,
            result=result,
        )

    # -------------------------------------------------------------- the loop

    def _function_for(self, name: str) -> FunctionSpec | None:
        for fn in self.functions.values():
            if fn.matches(name):
                return fn
        return None

    def _enqueue_invokes(
        self,
        queue: deque[Pending],
        received: list[tuple[str, str, dict[str, Any]]],
        callers: dict[str, FunctionSpec],
        report: InvokeReport,
    ) -> None:
        for caller_id, function, event in received:
            fn = self._function_for(function)
            if fn is None:
                self._dead_letter(function, event, "no such function in the template", report)
                continue
            caller = callers.get(caller_id)
            same = caller is not None and caller.logical_id == fn.logical_id
            depth = self._depth.get(caller_id, 0) + 1 if same else 0
            if depth > RECURSION_LIMIT and not fn.recursive_loop_allowed:
                # Lambda's recursive loop detection: the chain is stopped, the event dropped.
                report.dropped_recursion += 1
                continue
            invoked = (
                function
                if function.startswith("arn:")
                else fn.arn + (f":{function.split(':', 1)[1]}" if ":" in function else "")
            )
            queue.append(Pending(fn, event, invoked, depth=depth))
            if self.duplicate_rate and self.rng.random() < self.duplicate_rate:
                copy = Pending(fn, event, invoked, depth=depth, duplicate=True)
                queue.insert(self.rng.randrange(len(queue) + 1), copy)

    def _dead_letter(
        self, function: str, event: dict[str, Any], error: str | None, report: InvokeReport
    ) -> None:
        report.dead_letters += 1
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with self.dead_letter_file.open("a", encoding="utf-8") as f:
            line = {"function": function, "event": event, "error": error, "at": time.time()}
            f.write(json.dumps(line) + "\n")

    def _run_status(self, store: Any, run_id: str | None) -> Any:
        if run_id is None:
            return None
        return store.hot.find_run(run_id)

    def run(self, function: str, event: dict[str, Any]) -> InvokeReport:
        """Invoke ``function`` (a logical id) with ``event``; serve what follows until the run
        the event starts or continues ends."""
        from statestore import open_store

        if function not in self.functions:
            known = ", ".join(self.functions) or "none"
            raise TemplateError(f"no function {function!r} in the template (functions: {known})")
        first = self.functions[function]
        report = InvokeReport()
        _, report.run_id, _ = _describe(event)
        endpoint = _InvokeEndpoint()
        store = open_store(self.hot, self.cold)
        sweeper = next((fn for fn in self.functions.values() if fn.schedule), None)
        callers: dict[str, FunctionSpec] = {}
        queue: deque[Pending] = deque([Pending(first, event, first.arn)])
        until = time.monotonic() + self.max_seconds
        last_sweep = time.monotonic()
        try:
            while True:
                if time.monotonic() > until:
                    report.stopped = f"gave up after {self.max_seconds:g}s"
                    break
                if queue:
                    item = queue.popleft()
                    inv = self.invoke(item, endpoint.url)
                    callers[inv.request_id] = item.function
                    report.invocations.append(inv)
                    if report.run_id is None and inv.run_id:
                        report.run_id = inv.run_id
                    if self.on_invocation is not None:
                        self.on_invocation(inv)
                    if inv.outcome in ("error", "timeout", "crashed"):
                        # Lambda's async retries (after a delay), then the on-failure target.
                        if item.attempt < item.function.max_retries:
                            retry = Pending(
                                item.function,
                                item.event,
                                item.invoked_arn,
                                attempt=item.attempt + 1,
                                depth=item.depth,
                            )
                            queue.append(retry)
                        elif not item.function.schedule:  # a failed sweep just waits a tick
                            self._dead_letter(item.function.name, item.event, inv.error, report)
                    self._enqueue_invokes(queue, endpoint.take(), callers, report)
                    continue
                record = self._run_status(store, report.run_id)
                if report.run_id is None or (record is not None and record.status.terminal):
                    report.stopped = "the run ended" if record is not None else "nothing queued"
                    break
                if record is None:
                    report.stopped = f"run {report.run_id!r} does not exist"
                    break
                if sweeper is not None and time.monotonic() - last_sweep >= self.sweep_every:
                    last_sweep = time.monotonic()
                    report.sweeps += 1
                    sweep = Pending(
                        sweeper,
                        {"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}},
                        sweeper.arn,
                    )
                    queue.append(sweep)
                    continue
                time.sleep(0.05)
                self._enqueue_invokes(queue, endpoint.take(), callers, report)
            record = self._run_status(store, report.run_id)
            if record is not None:
                from outlast.values import to_json_view

                report.status = record.status.value
                if record.result is not None:
                    report.result = to_json_view(store.run_result(record))
                if record.error is not None:
                    report.error = record.error.model_dump(mode="json", exclude={"traceback"})
        finally:
            endpoint.close()
            store.close()
        return report

    # -------------------------------------------------------------- the HTTP API, served

    def serve_api(
        self,
        function: str,
        *,
        port: int = 3000,
        host: str = "127.0.0.1",
        ready: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Serve ``function`` (an HTTP API function) on ``host:port`` as API Gateway (payload
        2.0) would; the legs it dispatches, and the sweeper, run as in ``run``. Until ``stop``
        is set (or Ctrl-C)."""
        import base64
        from urllib.parse import parse_qsl, urlsplit

        if function not in self.functions:
            known = ", ".join(self.functions) or "none"
            raise TemplateError(f"no function {function!r} in the template (functions: {known})")
        api_fn = self.functions[function]
        endpoint = _InvokeEndpoint()
        stop = stop or threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                text: str | None
                try:
                    text = body.decode("utf-8") if body else None
                    encoded = False
                except UnicodeDecodeError:
                    text, encoded = base64.b64encode(body).decode(), True
                method = self.command
                event = {
                    "version": "2.0",
                    "routeKey": "$default",
                    "rawPath": parts.path,
                    "rawQueryString": parts.query,
                    "queryStringParameters": dict(parse_qsl(parts.query)) or None,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "requestContext": {
                        "accountId": ACCOUNT,
                        "apiId": "local",
                        "domainName": f"{host}:{port}",
                        "http": {
                            "method": method,
                            "path": parts.path,
                            "protocol": "HTTP/1.1",
                            "sourceIp": self.client_address[0],
                            "userAgent": self.headers.get("User-Agent", ""),
                        },
                        "requestId": str(uuid.uuid4()),
                        "routeKey": "$default",
                        "stage": "$default",
                        "timeEpoch": int(time.time() * 1000),
                    },
                    "isBase64Encoded": encoded,
                }
                if text is not None:
                    event["body"] = text
                inv = outer.invoke(Pending(api_fn, event, api_fn.arn), endpoint.url)
                if outer.on_invocation is not None:
                    outer.on_invocation(inv)
                answer = inv.result if isinstance(inv.result, dict) else None
                if answer is None or "statusCode" not in answer:
                    status, headers = 502, {"content-type": "application/json"}
                    data = json.dumps({"message": inv.error or "Internal Server Error"}).encode()
                else:
                    status = int(answer["statusCode"])
                    headers = {str(k): str(v) for k, v in (answer.get("headers") or {}).items()}
                    raw = str(answer.get("body") or "")
                    data = base64.b64decode(raw) if answer.get("isBase64Encoded") else raw.encode()
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer((host, port), Handler)
        url = f"http://{host}:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        if ready is not None:
            ready(url)
        report = InvokeReport()
        sweeper = next((fn for fn in self.functions.values() if fn.schedule), None)
        callers: dict[str, FunctionSpec] = {}
        queue: deque[Pending] = deque()
        last_sweep = time.monotonic()
        try:
            while not stop.is_set():
                self._enqueue_invokes(queue, endpoint.take(), callers, report)
                if not queue:
                    if sweeper is not None and time.monotonic() - last_sweep >= self.sweep_every:
                        last_sweep = time.monotonic()
                        queue.append(
                            Pending(
                                sweeper,
                                {"detail-type": "Scheduled Event", "source": "aws.events"},
                                sweeper.arn,
                            )
                        )
                    else:
                        stop.wait(0.05)
                    continue
                item = queue.popleft()
                inv = self.invoke(item, endpoint.url)
                callers[inv.request_id] = item.function
                if self.on_invocation is not None:
                    self.on_invocation(inv)
                if inv.outcome in ("error", "timeout", "crashed"):
                    if item.attempt < item.function.max_retries:
                        queue.append(
                            Pending(
                                item.function,
                                item.event,
                                item.invoked_arn,
                                attempt=item.attempt + 1,
                                depth=item.depth,
                            )
                        )
                    elif not item.function.schedule:
                        self._dead_letter(item.function.name, item.event, inv.error, report)
        finally:
            server.shutdown()
            server.server_close()
            endpoint.close()
