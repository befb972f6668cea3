"""Peak memory of a 100,000-step run, and of the leg that resumes it, on SQLite (and Redis).

Run from the repository root::

    .venv/bin/python bench/memory_bench.py [--steps 100000] [--backends sqlite,redis]
                                           [--tracemalloc] [--json]

Each backend gets one run of a durable function that makes ``--steps`` tiny ``ctx.step`` calls
(each returns its small int argument) and then waits for a signal. Two legs, each in a fresh
interpreter that imports this module and opens the store, then:

- run: ``app.run_leg`` with no time limit: every step runs live and is committed, in one leg,
  until the wait for the signal suspends the run;
- resume: ``app.signal``, then ``app.drive``: a leg that replays all ``--steps`` entries of the
  journal, receives the signal and completes the run.

Each leg prints the process's peak resident set size (``ru_maxrss``), and its resident size just
before the leg began (interpreter, imports, open store): the difference is what the leg added.
``--tracemalloc`` also reports the peak of Python allocations seen by ``tracemalloc`` during the
leg; it slows the leg several times over, so it is off by default and its leg times mean nothing.

The script starts its own redis-server (AOF on) on a free loopback port, keeps every file in a
temporary directory, and stops what it started. ``--leg`` re-enters this file; it is internal.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from outlast import App, Context  # noqa: E402
from statestore import RunStatus, open_store  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402

THIS = Path(__file__).resolve()
BACKENDS = ("sqlite", "redis")
TARGET_PEAK_MB = 100.0
TARGET_STEPS = 100_000
LEGS = ("run", "resume")


def tiny(i: int) -> int:
    return i


def many_steps(ctx: Context, steps: int) -> int:
    total = 0
    for i in range(steps):
        total += ctx.step(tiny, i)
    ctx.wait_for_signal("go")
    return total


# ---------------------------------------------------------------------- one leg (child)


def _rss_mb() -> float:
    """The resident set size now (Linux /proc), in MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def leg_main(leg: str, hot: str, cold: str, run_id: str, steps: int, traced: bool) -> int:
    app = App("bench-memory", store=open_store(hot, cold))
    durable = app.durable()(many_steps)
    if leg == "run":
        app.start(durable, steps, run_id=run_id)
    app.store.hot.get_run(run_id)  # the connection is open and warm before the baseline
    before = _rss_mb()
    if traced:
        import tracemalloc

        tracemalloc.start()
    started = time.perf_counter()
    if leg == "run":
        outcome = app.run_leg(run_id)
        if outcome.status != "suspended":
            raise RuntimeError(f"the run leg ended {outcome.status}, not suspended")
        executed: int | None = outcome.steps_executed
    else:
        app.signal(run_id, "go")
        view = app.drive(run_id)
        if view.status is not RunStatus.SUCCEEDED:
            raise RuntimeError(f"the resumed run ended {view.status.value}: {view.error}")
        executed = None  # drive() reports the run, not its legs
    seconds = time.perf_counter() - started
    traced_peak = None
    if traced:
        import tracemalloc

        traced_peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    entries = app.store.hot.get_run(run_id).next_seq
    app.close()
    print(
        json.dumps(
            {
                "peak_rss_mb": round(_peak_rss_mb(), 1),
                "rss_before_mb": round(before, 1),
                "tracemalloc_peak_mb": None if traced_peak is None else round(traced_peak, 1),
                "seconds": round(seconds, 2),
                "entries": entries,
                "executed": executed,
            }
        )
    )
    return 0


# ---------------------------------------------------------------------- parent


def run_leg_process(
    leg: str, hot: str, cold: str, run_id: str, steps: int, traced: bool
) -> dict[str, Any]:
    args = [sys.executable, str(THIS), "--leg", leg, "--hot", hot, "--cold", cold]
    args += ["--run-id", run_id, "--steps", str(steps)]
    if traced:
        args.append("--tracemalloc")
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{leg} leg failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=TARGET_STEPS)
    parser.add_argument("--backends", default="sqlite", help="sqlite,redis (default sqlite)")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also report tracemalloc's peak (slow)"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    parser.add_argument("--leg", choices=LEGS, help=argparse.SUPPRESS)
    parser.add_argument("--hot", help=argparse.SUPPRESS)
    parser.add_argument("--cold", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.leg:
        return leg_main(args.leg, args.hot, args.cold, args.run_id, args.steps, args.tracemalloc)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if set(names) - set(BACKENDS) or args.steps < 1:
        parser.error(f"backends are {', '.join(BACKENDS)}; --steps >= 1")

    results: dict[str, dict[str, dict[str, Any]]] = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="outlast-bench-")))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        for name in names:
            cold = f"file://{tmp}/cold-{name}"
            if name == "sqlite":
                hot = f"sqlite:///{tmp}/hot.db"
            else:
                workdir = tmp / "redis"
                workdir.mkdir()
                server = RedisServer(workdir=workdir, persistent=True)
                server.start()
                stack.callback(server.stop)
                hot = f"{server.url}?prefix=bench"
            run_id = f"memory-{args.steps}"
            results[name] = {}
            for leg in LEGS:
                progress(f"{name}: {leg} leg of {args.steps} steps")
                results[name][leg] = run_leg_process(
                    leg, hot, cold, run_id, args.steps, args.tracemalloc
                )

    print(
        f"{'backend':<8} {'leg':<7} {'steps':>7} {'peak RSS MB':>12} {'RSS before MB':>14} "
        f"{'added MB':>9} {'tracemalloc MB':>15} {'seconds':>8}"
    )
    for name, legs in results.items():
        for leg, r in legs.items():
            traced = r["tracemalloc_peak_mb"]
            print(
                f"{name:<8} {leg:<7} {args.steps:>7} {r['peak_rss_mb']:>12.1f} "
                f"{r['rss_before_mb']:>14.1f} {r['peak_rss_mb'] - r['rss_before_mb']:>9.1f} "
                f"{'-' if traced is None else f'{traced:.1f}':>15} {r['seconds']:>8.1f}"
            )
    print(
        "  (peak RSS: ru_maxrss of the leg's fresh interpreter; RSS before: after imports and "
        "opening the store, just before the leg; run: every step live in one leg; resume: a "
        "leg replaying the whole journal, then completing the run)"
    )
    print()
    for name, legs in results.items():
        for leg, r in legs.items():
            peak = r["peak_rss_mb"]
            note = "" if args.steps == TARGET_STEPS else f" (at {args.steps} steps, not 100,000)"
            verdict = "PASS" if peak <= TARGET_PEAK_MB else "FAIL"
            print(
                f"{name} {leg} peak RSS {peak:.1f} MB <= {TARGET_PEAK_MB:.0f} MB: {verdict}{note}"
            )
    if args.json:
        print(json.dumps({"steps": args.steps, "peak_rss_mb": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
