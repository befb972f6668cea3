"""Fixtures of the console's tests: a SQLite store holding runs made through the app, uvicorn
servers on free localhost ports, and Debian's chromium driven by Playwright.

The browser is the system's (`make test` installs Debian's chromium); nothing downloads one.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from starlette.applications import Starlette

from outlast import App
from outlast.ui.serve import ConsoleServer
from outlast.ui.server import UiConfig, create_app
from statestore import StateStore, open_store
from tests.ui.workload import make_app

TOKEN = "test-token-0123456789"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Store:
    hot: str
    cold: str
    store: StateStore
    app: App


# Session-wide: the emulator's run takes seconds. A test that changes a run changes one that
# no other test reads (waiting-2, waiting-3), or starts its own.
@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A store with the research agent's run, a multi-leg succeeded run, a failed run with a
    retry, and suspended runs waiting for a signal."""
    where = tmp_path_factory.mktemp("ui-store")
    hot, cold = f"sqlite:///{where}/hot.db", f"file://{where}/cold"
    # The research agent through the emulator, with evictions and kills: legs in subprocesses,
    # the offline model's token counts in the journal, recoveries in the counters.
    subprocess.run(
        [
            sys.executable, "-m", "outlast.cli", "run", f"{EXAMPLES}/research_agent.py:research",
            "--input", '"durable agents"', "--run-id", "agent-1", "--leg-timeout", "3",
            "--evict-rate", "0.3", "--kill-rate", "0.2", "--seed", "7",
            "--hot", hot, "--cold", cold, "--json",
        ],
        check=True,
        capture_output=True,
        timeout=120,
        cwd=where,
    )  # fmt: skip
    store = open_store(hot, cold)
    app = make_app(store)
    app.drive(app.start("research", "durable agents", run_id="research-1"))
    app.drive(app.start("failing", "payments", run_id="failed-1"))
    for run_id in ("waiting-1", "waiting-2", "waiting-3", "waiting-4"):
        app.drive(app.start("approval", "deploy", run_id=run_id), max_wait=0.1)
    yield Store(hot, cold, store, app)
    store.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """The console as `outlast ui` serves it (ConsoleServer), on a free loopback port."""

    def __init__(self, config: UiConfig) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app: Starlette = create_app(config)
        self._server = ConsoleServer(self.app, "127.0.0.1", self.port, log_level="error")
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 10 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, wait: float = 10) -> bool:
        """Ask uvicorn to stop as Ctrl-C does; return whether it stopped within ``wait``."""
        self._server.should_exit = True
        self._thread.join(wait)
        return not self._thread.is_alive()


@pytest.fixture(scope="module")
def server(runs: Store) -> Iterator[Server]:
    """The console with actions on."""
    config = UiConfig(hot=runs.hot, cold=runs.cold, allow_actions=True, token=TOKEN)
    with Server(config) as running:
        yield running


@pytest.fixture(scope="module")
def readonly(runs: Store) -> Iterator[Server]:
    """The console as started without --allow-actions."""
    with Server(UiConfig(hot=runs.hot, cold=runs.cold, token=TOKEN)) as running:
        yield running


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Debian's chromium is not installed (`make test` installs it)")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    yield opened
    context.close()
