"""``outlast worker``: the long-lived worker process for containers and VMs."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Annotated

import typer

from outlast.errors import TargetError
from outlast.worker.queues import QUEUE_ENV, QueueError, open_queue
from outlast.worker.worker import (
    DEFAULT_GRACE,
    DEFAULT_HEARTBEAT,
    DEFAULT_LEASE_TTL,
    Worker,
    WorkerConfig,
    resolve_app,
)
from statestore import InvalidStoreUrlError, StateStoreError

log = logging.getLogger("outlast.worker")

# Spot interruption notices give two minutes; the grace is the smaller of this and --grace.
SPOT_GRACE = 120.0


def worker(
    targets: Annotated[
        list[str],
        typer.Argument(
            metavar="TARGET...",
            help="Durable functions or apps to serve: module:function, path/to/file.py:app.",
        ),
    ],
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue",
            envvar=QUEUE_ENV,
            help="redis://HOST:PORT/DB#STREAM, sqs://NAME or an SQS queue URL; "
            "empty: poll the hot tier for due runs.",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Legs driven at once.")
    ] = 1,
    grace: Annotated[
        float,
        typer.Option("--grace", min=0, help="Seconds from SIGTERM to exit (below the platform's)."),
    ] = DEFAULT_GRACE,
    lease_ttl: Annotated[
        float, typer.Option("--lease-ttl", help="Seconds a lease outlives its last renewal.")
    ] = DEFAULT_LEASE_TTL,
    heartbeat: Annotated[
        float, typer.Option("--heartbeat", help="Seconds between lease renewals while a step runs.")
    ] = DEFAULT_HEARTBEAT,
    health_port: Annotated[
        int,
        typer.Option(
            "--health-port", envvar="PORT", help="Port of GET /healthz (0: no health endpoint)."
        ),
    ] = 8080,
    health_host: Annotated[
        str, typer.Option("--health-host", help="Address the health endpoint binds.")
    ] = "0.0.0.0",  # noqa: S104 - the kubelet probes the pod IP
    spot: Annotated[
        bool,
        typer.Option(
            "--spot/--no-spot",
            help="Watch EC2 instance metadata for a spot interruption notice and drain on it.",
        ),
    ] = False,
    poll: Annotated[
        float, typer.Option("--poll", min=0.01, help="Seconds between due-run polls (queue-less).")
    ] = 0.5,
    sweep: Annotated[
        float,
        typer.Option("--sweep", min=0.1, help="Seconds between sweeps for runs no message names."),
    ] = 5.0,
    hot: Annotated[
        str | None, typer.Option("--hot", help="Hot-tier URL (default: $OUTLAST_HOT_URL).")
    ] = None,
    cold: Annotated[
        str | None, typer.Option("--cold", help="Cold-tier URL (default: $OUTLAST_COLD_URL).")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING.")] = "INFO",
) -> None:
    """Take runs from a queue and drive their legs; drain on SIGTERM and exit 0 within --grace."""
    # First of all: a SIGTERM that arrives while the targets import must still be a drain.
    early: list[str] = []
    _on_signals(early.append)
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    if hot:
        os.environ["OUTLAST_HOT_URL"] = hot
    if cold:
        os.environ["OUTLAST_COLD_URL"] = cold
    try:
        config = WorkerConfig(
            concurrency=concurrency,
            grace=grace,
            lease_ttl=lease_ttl,
            heartbeat=heartbeat,
            poll=poll,
            sweep=sweep,
            health_host=health_host,
            health_port=health_port or None,
        )
        app = resolve_app(targets)
        work_queue = open_queue(queue or None, hot=app.store.hot, visibility=lease_ttl, poll=poll)
    except (ValueError, TargetError, QueueError, InvalidStoreUrlError, StateStoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    runner = Worker(app, work_queue, config)
    _on_signals(runner.signal_drain)
    for name in early:
        runner.signal_drain(name)
    watcher = None
    if spot:
        from outlast.platforms.spot import SpotNotice, SpotWatcher

        def on_notice(notice: SpotNotice) -> None:
            runner.drain(
                f"spot {notice.action} at {notice.time.isoformat()}",
                grace=min(SPOT_GRACE, notice.seconds_left()),
            )

        watcher = SpotWatcher(on_notice)
        watcher.start()
    try:
        stragglers = runner.serve()
    except OSError as exc:  # the health port is taken
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if watcher is not None:
        watcher.stop(timeout=0.5)
    logging.shutdown()
    if stragglers:
        # Legs still inside a step cannot be interrupted; leave them to their lease's expiry.
        sys.stderr.flush()
        os._exit(0)
    work_queue.close()
    app.close()


def _on_signals(handler: Callable[[str], None]) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        handler(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def register(cli: typer.Typer) -> None:
    """Add the ``worker`` command to the ``outlast`` CLI."""
    cli.command("worker", no_args_is_help=True)(worker)
