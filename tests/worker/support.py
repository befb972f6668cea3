"""Worker processes for the tests: start, signal, reap; read side effects; poll for conditions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from outlast import App
from statestore import JournalEntry
from tests.support.servers import free_port
from tests.worker import chaos_app

ROOT = Path(__file__).resolve().parents[2]
TARGET = f"{ROOT / 'tests' / 'worker' / 'chaos_app.py'}:app"


def make_app(hot: str, cold: str) -> App:
    """An App on the given store with the test function, for creating and inspecting runs."""
    app = App("worker-tests", hot_url=hot, cold_url=cold)
    app.durable("counter")(chaos_app.counter.fn)
    return app


@dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    log: Path
    health_port: int
    grace: float
    started: float = field(default_factory=time.monotonic)
    signalled_at: float | None = None
    signal: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, sig: int) -> None:
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
            self.signal = sig
        self.proc.send_signal(sig)

    def healthz(self) -> int | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
            ) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def wait_ready(self, timeout: float = 15.0) -> None:
        wait_for(lambda: self.healthz() == 200, timeout, f"worker {self.pid} ready")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def start_worker(
    tmp: Path,
    *,
    hot: str,
    cold: str,
    queue: str | None = None,
    concurrency: int = 1,
    grace: float = 5.0,
    lease_ttl: float = 2.0,
    heartbeat: float = 0.5,
    poll: float = 0.1,
    sweep: float = 1.0,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> WorkerProc:
    port = free_port()
    log = tmp / f"worker-{time.monotonic_ns()}.log"
    args = [
        sys.executable,
        "-m",
        "outlast.worker",
        TARGET,
        "--hot",
        hot,
        "--cold",
        cold,
        "--concurrency",
        str(concurrency),
        "--grace",
        str(grace),
        "--lease-ttl",
        str(lease_ttl),
        "--heartbeat",
        str(heartbeat),
        "--poll",
        str(poll),
        "--sweep",
        str(sweep),
        "--health-host",
        "127.0.0.1",
        "--health-port",
        str(port),
        *extra,
    ]
    if queue:
        args += ["--queue", queue]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLAST_")}
    child_env["PYTHONPATH"] = str(ROOT)
    child_env.update(env or {})
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=tmp, env=child_env)
    return WorkerProc(proc=proc, log=log, health_port=port, grace=grace)


def wait_for(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass(frozen=True)
class Effect:
    run_id: str
    seq: int
    leg: int
    pid: int


def read_effects(path: Path) -> list[Effect]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        run_id, seq, leg, pid = line.split()
        out.append(Effect(run_id, int(seq), int(leg), int(pid)))
    return out


def assert_dense(entries: list[JournalEntry], steps: int) -> None:
    """One committed step per seq, in order, each with the value its seq gives."""
    assert [e.seq for e in entries] == list(range(steps))
    assert [e.name for e in entries] == ["effect"] * steps


def kill_all(workers: list[WorkerProc]) -> None:
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGKILL)
    for worker in workers:
        worker.proc.wait(timeout=10)
