"""CLI commands of the Lambda platform: ``outlast lambda invoke``, ``outlast runs start``,
``outlast init lambda``. ``outlast.cli`` registers them with ``register``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

__all__ = ["register"]

EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def _json_arg(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        _fail(f"{what} is not JSON: {exc}")


# ---------------------------------------------------------------------- outlast lambda invoke


def lambda_invoke(
    function: Annotated[
        str | None,
        typer.Argument(help="Logical id of the function in the template (default: the agent)."),
    ] = None,
    event: Annotated[Path, typer.Option("--event", "-e", help="JSON file with the event.")] = Path(
        "events/start-direct.json"
    ),
    template: Annotated[Path, typer.Option("--template", "-t", help="SAM template.")] = Path(
        "template.yaml"
    ),
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds before an invocation is killed (default: the template's).",
            min=0.5,
            max=900,
        ),
    ] = None,
    env_vars: Annotated[
        Path | None,
        typer.Option("--env-vars", "-n", help="JSON file of variables, as for sam local invoke."),
    ] = None,
    parameter_overrides: Annotated[
        list[str] | None,
        typer.Option("--parameter-overrides", help="Template parameter, NAME=VALUE (repeatable)."),
    ] = None,
    duplicate_rate: Annotated[
        float, typer.Option(help="Chance an async invoke is delivered twice.", min=0, max=1)
    ] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Seed of the duplicate deliveries.")] = None,
    sweep_every: Annotated[
        float, typer.Option(help="Seconds between sweeper ticks (a minute on Lambda).", min=0.1)
    ] = 1.0,
    max_seconds: Annotated[float, typer.Option(help="Give up after this long.", min=1)] = 600.0,
    build_dir: Annotated[
        Path | None, typer.Option(help="sam build's output (default .aws-sam/build, if any).")
    ] = None,
    hot: Annotated[
        str | None, typer.Option("--hot", help="Hot-tier URL (default: the embedded SQLite).")
    ] = None,
    cold: Annotated[
        str | None, typer.Option("--cold", help="Cold-tier URL (default: .outlast/cold).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object last.")] = False,
) -> None:
    """Run a function of template.yaml locally, without Docker, under Lambda's rules.

    Each invocation is a subprocess killed at the timeout; the function's own async invokes
    (hand-offs) and the sweeper run as further invocations until the run ends.
    """
    from outlast.platforms.local_lambda import Invocation, LocalLambda, Template, TemplateError

    overrides = _overrides(parameter_overrides)
    try:
        payload = json.loads(event.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        _fail(f"--event {event}: {exc}")
    variables = _env_file(env_vars)

    def show(inv: Invocation) -> None:
        if not as_json:
            sys.stderr.write(inv.line() + "\n")
            sys.stderr.flush()

    try:
        tpl = Template(template, overrides=overrides)
        ids = tpl.function_ids()
        chosen = function or ("AgentFunction" if "AgentFunction" in ids else (ids or [""])[0])
        local = LocalLambda(
            tpl,
            hot=hot,
            cold=cold,
            timeout=timeout,
            env_vars=variables,
            duplicate_rate=duplicate_rate,
            seed=seed,
            sweep_every=sweep_every,
            max_seconds=max_seconds,
            build_dir=build_dir,
            on_invocation=show,
        )
        report = local.run(chosen, payload)
    except TemplateError as exc:
        _fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(report.as_json(), default=str) + "\n")
    else:
        sys.stderr.write(
            f"{len(report.invocations)} invocations, {report.kills} killed at the timeout, "
            f"{report.sweeps} sweeps, {report.dead_letters} dead letters "
            f"({local.dead_letter_file}); logs: {local.log_file}; {report.stopped}\n"
        )
        sys.stdout.write(
            json.dumps(
                {
                    "run_id": report.run_id,
                    "status": report.status,
                    "result": report.result,
                    "error": report.error,
                },
                default=str,
                indent=2,
            )
            + "\n"
        )
    if report.status == "succeeded":
        raise typer.Exit(0)
    raise typer.Exit(1 if report.status in ("failed", "cancelled") else 4)


def lambda_api(
    function: Annotated[
        str, typer.Argument(help="Logical id of the HTTP API function in the template.")
    ] = "ApiFunction",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free one).")] = 3000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    template: Annotated[Path, typer.Option("--template", "-t", help="SAM template.")] = Path(
        "template.yaml"
    ),
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds before an agent invocation is killed.", min=0.5, max=900),
    ] = None,
    env_vars: Annotated[
        Path | None,
        typer.Option("--env-vars", "-n", help="JSON file of variables, as for sam local."),
    ] = None,
    parameter_overrides: Annotated[
        list[str] | None,
        typer.Option("--parameter-overrides", help="Template parameter, NAME=VALUE (repeatable)."),
    ] = None,
    sweep_every: Annotated[
        float, typer.Option(help="Seconds between sweeper ticks.", min=0.1)
    ] = 5.0,
    build_dir: Annotated[
        Path | None, typer.Option(help="sam build's output (default .aws-sam/build, if any).")
    ] = None,
    hot: Annotated[str | None, typer.Option("--hot", help="Hot-tier URL.")] = None,
    cold: Annotated[str | None, typer.Option("--cold", help="Cold-tier URL.")] = None,
) -> None:
    """Serve the runs HTTP API function locally (API Gateway's payload 2.0), with the agent
    legs it dispatches and the sweeper run as local invocations: curl localhost:PORT/runs."""
    from outlast.platforms.local_lambda import Invocation, LocalLambda, Template, TemplateError

    overrides = _overrides(parameter_overrides)
    variables = _env_file(env_vars)

    def show(inv: Invocation) -> None:
        sys.stderr.write(inv.line() + "\n")
        sys.stderr.flush()

    def ready(url: str) -> None:
        sys.stderr.write(f"serving {function} on {url} (Ctrl-C to stop)\n")
        sys.stderr.flush()

    try:
        local = LocalLambda(
            Template(template, overrides=overrides),
            hot=hot,
            cold=cold,
            timeout=timeout,
            env_vars=variables,
            sweep_every=sweep_every,
            build_dir=build_dir,
            on_invocation=show,
        )
        local.serve_api(function, port=port, host=host, ready=ready)
    except TemplateError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc}")
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _overrides(items: list[str] | None) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            _fail(f"--parameter-overrides {item!r}: use NAME=VALUE")
        overrides[name] = value
    return overrides


def _env_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        variables = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        _fail(f"--env-vars {path}: {exc}")
    if not isinstance(variables, dict):
        _fail(f"--env-vars {path}: expected an object of objects")
    return variables


# ---------------------------------------------------------------------- outlast runs start


def runs_start(
    target: Annotated[
        str,
        typer.Argument(
            help="module:function or path/to/file.py:function (with --api, the function name)"
        ),
    ],
    input: Annotated[str | None, typer.Option("--input", help="The run's input, as JSON.")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Run id (idempotent).")] = None,
    queue: Annotated[
        str | None,
        typer.Option("--queue", help="Enqueue for workers: redis://...#STREAM, sqs://NAME, URL."),
    ] = None,
    api: Annotated[
        str | None, typer.Option("--api", help="Base URL of a deployed runs API (SigV4-signed).")
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="Region for --api signing (default: the AWS chain's).")
    ] = None,
    hot: Annotated[str | None, typer.Option("--hot", help="Hot-tier URL.")] = None,
    cold: Annotated[str | None, typer.Option("--cold", help="Cold-tier URL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Start a run: through a deployed API (--api), onto a worker queue (--queue), or just in
    the store for a sweeper or worker to pick up. Prints the run id."""
    from outlast.platforms.run_start import StartError, start_via_api, start_via_store

    if queue and api:
        _fail("give --queue or --api, not both")
    payload = _json_arg(input, "--input")
    try:
        if api:
            answer = start_via_api(api, target, payload, run_id=run_id, region=region)
            rid = str(answer["run_id"])
            extra: dict[str, Any] = {"api": answer}
        else:
            rid = start_via_store(target, payload, run_id=run_id, queue=queue, hot=hot, cold=cold)
            extra = {"queue": queue} if queue else {}
    except StartError as exc:
        _fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps({"run_id": rid, **extra}, default=str) + "\n")
    else:
        sys.stdout.write(rid + "\n")


# ---------------------------------------------------------------------- outlast init lambda


def init_lambda(
    directory: Annotated[Path, typer.Argument(help="New project directory.")],
    module: Annotated[
        str, typer.Option(help="Python module of your agent (a package name).")
    ] = "my_agent",
    force: Annotated[bool, typer.Option(help="Write into a non-empty directory.")] = False,
) -> None:
    """Scaffold a SAM project around a minimal agent: template, samconfig, events, README."""
    from outlast.scaffold import ScaffoldError, scaffold_lambda

    try:
        written = scaffold_lambda(directory, module=module, force=force)
    except ScaffoldError as exc:
        _fail(str(exc))
    for path in written:
        sys.stdout.write(f"{path}\n")
    sys.stderr.write(
        f"next: cd {directory} && sam build && sam deploy --guided   (or, offline: "
        "outlast lambda invoke --event events/start.json)\n"
    )


def register(cli: typer.Typer, runs_cli: typer.Typer) -> None:
    """Add ``lambda invoke``, ``runs start`` and ``init lambda`` to the ``outlast`` command."""
    lambda_cli = typer.Typer(
        help="Run the SAM application's functions locally, without Docker.",
        no_args_is_help=True,
    )
    lambda_cli.command("invoke")(lambda_invoke)
    lambda_cli.command("api")(lambda_api)
    cli.add_typer(lambda_cli, name="lambda")
    runs_cli.command("start")(runs_start)
    init_cli = typer.Typer(help="Scaffold new projects.", no_args_is_help=True)
    init_cli.command("lambda")(init_lambda)
    cli.add_typer(init_cli, name="init")
