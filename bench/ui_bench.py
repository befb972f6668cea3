"""Web console page times: the runs page at 10,000 runs, the run page at 10,000 steps (SQLite).

Run from the repository root::

    .venv/bin/python bench/ui_bench.py [--runs 10000] [--steps 10000] [--repeat 7] [--json]

A SQLite store in a temporary directory gets ``--runs`` runs started through ``App.start``; the
newest 60 of them are driven to the end (three steps each), so the first page's rows read real
journals for their token counts. One more run of ``--steps`` steps is driven to the end. The
console (``outlast.ui.server.create_app``) is served by uvicorn on a free loopback port, and
each figure is the median wall time of ``--repeat`` HTTP GETs of the whole page (server work,
HTML rendering and transfer; no browser layout).

The same two pages are then opened ``--repeat`` times in Debian's chromium (headless, through
Playwright, never a downloaded browser): the browser's own Navigation Timing gives the time from
the navigation's start to the first contentful paint and to the end of the load event (server,
transfer, parsing, style, layout and paint), median of the runs. Without chromium they are
skipped. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from outlast import App, Context
from outlast.ui.serve import ConsoleServer
from outlast.ui.server import UiConfig, create_app, export_run_html
from statestore import open_store

# Targets: a page a person waits for should answer well within a second.
RUNS_PAGE_TARGET_MS = 500.0
RUN_PAGE_TARGET_MS = 2000.0
# In the browser, to the end of the load event (what a person waits for before the page is usable).
RUNS_PAGE_BROWSER_TARGET_MS = 1000.0
RUN_PAGE_BROWSER_TARGET_MS = 3000.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(where: Path, runs: int, steps: int) -> tuple[str, str]:
    hot, cold = f"sqlite:///{where}/hot.db", f"file://{where}/cold"
    store = open_store(hot, cold)
    app = App("ui-bench", store=store)

    @app.durable()
    def work(ctx: Context, n: int) -> int:
        return sum(ctx.step(lambda i=i: i, name=f"item[{i}]") for i in range(n))

    started = time.perf_counter()
    ids = [app.start("work", 3, run_id=f"run-{i:05d}") for i in range(runs)]
    for run_id in ids[-60:]:
        app.drive(run_id)
    log(f"{runs} runs in {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    app.drive(app.start("work", steps, run_id="long-run"))
    log(f"a run of {steps} steps in {time.perf_counter() - started:.1f}s")
    store.close()
    return hot, cold


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed_get(url: str, repeat: int) -> tuple[float, int]:
    samples = []
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=120) as resp:
            size = len(resp.read())
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), size


# Navigation Timing, read in the page once its load event has ended.
TIMING_JS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const paint = performance.getEntriesByName("first-contentful-paint")[0];
  return {load: nav.loadEventEnd - nav.startTime, fcp: paint ? paint.startTime : null,
          bytes: nav.transferSize};
}"""


def browser_times(base: str, paths: dict[str, str], repeat: int) -> dict[str, tuple[float, float]]:
    """Median (first contentful paint, load event end) in ms per page, measured by chromium."""
    executable = shutil.which("chromium")
    if executable is None:
        log("chromium is not installed: browser figures skipped")
        return {}
    from playwright.sync_api import sync_playwright

    out: dict[str, tuple[float, float]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            for key, path in paths.items():
                loads, paints = [], []
                for _ in range(repeat):
                    # A fresh context each time: no cache, as a person opening the link.
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    page = context.new_page()
                    page.goto(base + path, wait_until="load", timeout=120_000)
                    # loadEventEnd is set just after the load handlers return.
                    page.wait_for_function(
                        "performance.getEntriesByType('navigation')[0].loadEventEnd > 0"
                    )
                    timing = page.evaluate(TIMING_JS)
                    loads.append(float(timing["load"]))
                    if timing["fcp"] is not None:
                        paints.append(float(timing["fcp"]))
                    context.close()
                paint = statistics.median(paints) if paints else float("nan")
                out[key] = (paint, statistics.median(loads))
        finally:
            browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp:
        hot, cold = build(Path(tmp), args.runs, args.steps)
        port = free_port()
        server = ConsoleServer(create_app(UiConfig(hot=hot, cold=cold)), "127.0.0.1", port, "error")
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        pages = {
            "runs_page_ms": "/",
            "runs_page_100_ms": "/?page=100",
            "runs_filtered_ms": "/?status=succeeded",
            "runs_api_ms": "/api/runs",
            "run_page_ms": "/runs/long-run",
            "run_api_ms": "/api/runs/long-run",
            "entry_api_ms": f"/api/runs/long-run/entries/{args.steps // 2}",
            "status_poll_ms": "/api/runs/long-run/status",
        }
        figures: dict[str, float] = {}
        rows = []
        for key, path in pages.items():
            ms, size = timed_get(base + path, args.repeat)
            figures[key] = round(ms, 1)
            rows.append((key, path, ms, size))
        browser = browser_times(base, {"runs_page": "/", "run_page": "/runs/long-run"}, args.repeat)
        for key, (paint, load) in browser.items():
            figures[f"{key}_browser_fcp_ms"] = round(paint, 1)
            figures[f"{key}_browser_load_ms"] = round(load, 1)
        store = open_store(hot, cold)
        started = time.perf_counter()
        html = export_run_html(store, "long-run")
        figures["export_html_ms"] = round((time.perf_counter() - started) * 1000, 1)
        rows.append(("export_html_ms", "runs show --html", figures["export_html_ms"], len(html)))
        store.close()
        server.should_exit = True
        thread.join(10)

    print(f"web console on SQLite: {args.runs} runs, one run of {args.steps} steps")
    print(f"{'figure':<20} {'request':<40} {'median ms':>10} {'bytes':>10}")
    for key, path, ms, size in rows:
        print(f"{key:<20} {path:<40} {ms:>10.1f} {size:>10}")
    if browser:
        print()
        print("in chromium (headless), from navigation start; median of --repeat fresh loads:")
        print(f"{'page':<20} {'server ms':>10} {'first paint ms':>15} {'load event ms':>14}")
        for key in browser:
            paint, load = figures[f"{key}_browser_fcp_ms"], figures[f"{key}_browser_load_ms"]
            print(f"{key:<20} {figures[key + '_ms']:>10.1f} {paint:>15.1f} {load:>14.1f}")
    checks = [
        ("runs page at 10,000 runs", figures["runs_page_ms"], RUNS_PAGE_TARGET_MS),
        ("run page at 10,000 steps", figures["run_page_ms"], RUN_PAGE_TARGET_MS),
    ]
    if browser:
        checks += [
            (
                "runs page in chromium (load event)",
                figures["runs_page_browser_load_ms"],
                RUNS_PAGE_BROWSER_TARGET_MS,
            ),
            (
                "run page in chromium (load event)",
                figures["run_page_browser_load_ms"],
                RUN_PAGE_BROWSER_TARGET_MS,
            ),
        ]
    for label, value, target in checks:
        verdict = "PASS" if value <= target else "FAIL"
        print(f"{verdict} {label}: {value:.1f} ms (target <= {target:.0f} ms)")
    if args.json:
        print(json.dumps({"runs": args.runs, "steps": args.steps, **figures}))


if __name__ == "__main__":
    main()
