"""The ``outlast ui`` command. Starlette and uvicorn are imported only when it runs, so the rest
of the CLI (and every leg) starts without them."""

from __future__ import annotations

import secrets
import sys
from typing import Annotated

import typer

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def ui_command(
    hot: Annotated[
        str | None,
        typer.Option("--hot", help="Hot-tier URL (default: $OUTLAST_HOT_URL or SQLite)."),
    ] = None,
    cold: Annotated[
        str | None,
        typer.Option("--cold", help="Cold-tier URL (default: $OUTLAST_COLD_URL or .outlast/)."),
    ] = None,
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8765,
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but localhost exposes your runs.")
    ] = "127.0.0.1",
    allow_actions: Annotated[
        bool,
        typer.Option("--allow-actions", help="Offer signal, cancel, retry and delete (token)."),
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(help="Token actions need (default: a random one, printed at start-up)."),
    ] = None,
) -> None:
    """Serve a web console of the runs in a store (localhost by default)."""
    from outlast.ui.serve import ConsoleServer
    from outlast.ui.server import UiConfig, create_app
    from statestore import InvalidStoreUrlError, StateStoreError, open_store

    try:
        open_store(hot, cold).close()
    except InvalidStoreUrlError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except StateStoreError as exc:
        # Served anyway: the pages show a banner until the store answers.
        typer.echo(f"warning: the store cannot be read yet: {exc}", err=True)
    if token is not None and len(token) < 12:
        typer.echo("error: --token must be at least 12 characters", err=True)
        raise typer.Exit(2)
    config = UiConfig(
        hot=hot,
        cold=cold,
        allow_actions=allow_actions,
        token=token or secrets.token_urlsafe(24),
        # Bound to loopback, only loopback names may reach it (a DNS-rebinding page cannot).
        allowed_hosts=list(LOOPBACK) if host in LOOPBACK else [],
    )
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"outlast ui: http://{shown}:{port}/", err=True)
    if allow_actions:
        typer.echo(f"actions are on; token: {config.token}", err=True)
    else:
        typer.echo("actions are off (--allow-actions to offer them)", err=True)
    sys.stderr.flush()
    ConsoleServer(create_app(config), host=host, port=port).run()
