"""The console in a real headless Chromium (Debian's), against uvicorn on a free local port."""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from outlast.report import run_report
from outlast.ui import views
from statestore import RunStatus, StoreUnavailableError
from tests.ui.conftest import TOKEN, Server, Store

pytestmark = pytest.mark.browser

# The screenshots in docs/ are refreshed only on request (OUTLAST_UPDATE_DOCS=1), so a test run
# leaves the working tree as it found it.
DOCS = Path(__file__).resolve().parents[2] / "docs"
UPDATE_DOCS = os.environ.get("OUTLAST_UPDATE_DOCS") == "1"


def _shot(page: Page, tmp_path: Path, name: str, top: int = 900) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    # The copy for docs/ stops after the timeline and the restart tax: a readable picture.
    page.screenshot(
        path=str(tmp_path / f"top-{name}"),
        full_page=True,
        clip={"x": 0, "y": 0, "width": 1280, "height": top},
    )
    return path


def test_runs_page_lists_and_filters(page: Page, server: Server, tmp_path: Path) -> None:
    page.goto(server.url + "/")
    rows = page.locator("#runs tbody tr[data-run]")
    expect(rows).to_have_count(7)
    # Newest first: the last run started is the first row.
    expect(rows.first).to_have_attribute("data-run", "waiting-4")
    agent = page.locator('tr[data-run="agent-1"]')
    expect(agent.locator(".status")).to_have_text("succeeded")
    tokens = int(agent.locator("td").nth(6).inner_text())
    assert tokens > 0
    failed = page.locator('tr[data-run="failed-1"]')
    expect(failed.locator(".status")).to_have_text("failed")
    expect(failed).to_contain_text("ValueError")
    _shot(page, tmp_path, "runs.png", top=520)

    page.select_option("select[name=status]", "failed")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run", "failed-1")

    page.goto(server.url + "/?q=research&since=1d")
    expect(rows).to_have_count(1)
    page.goto(server.url + "/?function=approv")
    expect(rows).to_have_count(4)
    page.goto(server.url + "/?q=nothing-like-this")
    expect(page.locator("#no-runs")).to_be_visible()

    # Malformed filters: a 400 page that says what is accepted, not a stack trace.
    for query, says in (
        ("status=done", "is not one of"),
        ("since=yesterday", "is not a duration"),
        ("page=-3", "whole number"),
        ("q=%3Cscript%3E", "letters, digits"),
    ):
        response = page.goto(f"{server.url}/?{query}")
        assert response is not None and response.status == 400
        expect(page.locator("#problem")).to_contain_text(says)
    if UPDATE_DOCS:
        shutil.copy(tmp_path / "top-runs.png", DOCS / "ui-runs.png")


def test_run_page_timeline_journal_and_value(
    page: Page, server: Server, runs: Store, tmp_path: Path
) -> None:
    record = runs.store.hot.get_run("research-1")
    journal = runs.store.hot.read_journal("research-1")
    page.goto(server.url + "/runs/research-1")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    # One lane per leg that committed entries; the header shows the record's leg counter.
    lanes = page.locator("#timeline .lane")
    expect(lanes).to_have_count(len({e.leg for e in journal}))
    assert record.counters.legs >= len({e.leg for e in journal}) > 1
    expect(page.locator("#legs-count")).to_have_text(str(record.counters.legs))
    expect(page.locator("#timeline .bar")).to_have_count(len(journal))
    expect(page.locator("#journal tbody tr")).to_have_count(record.next_seq)
    expect(page.locator("#restart-tax")).to_contain_text("interruptions survived")
    expect(page.locator("#result")).to_contain_text("summary of durable agents")

    # The big step's value lives in the cold tier and is fetched only when opened.
    cold = next(e for e in journal if e.name == "big")
    row = page.locator(f'#journal tr[data-seq="{cold.seq}"]')
    expect(row).to_contain_text("cold")
    row.locator("summary").click()
    expect(row.locator(".value-body")).to_contain_text(re.compile(r'"[0-9a-f]{64}'))
    _shot(page, tmp_path, "run.png")

    # The agent's run crossed legs killed and evicted by the emulator: its lanes are the legs
    # that committed entries, its header the record's counters, its tax the report's figures.
    agent = runs.store.hot.get_run("agent-1")
    agent_journal = runs.store.hot.read_journal("agent-1")
    page.goto(server.url + "/runs/agent-1")
    expect(lanes).to_have_count(len({e.leg for e in agent_journal}))
    expect(page.locator("#legs-count")).to_have_text(str(agent.counters.legs))
    assert agent.counters.recoveries > 0
    expect(page.locator("#counters")).to_contain_text(f"recoveries {agent.counters.recoveries}")
    report = run_report(runs.store, "agent-1")
    expect(page.locator("#restart-tax")).to_contain_text(
        f"{report.restart_tax.interruptions} interruptions survived"
    )
    expect(page.locator("#restart-tax")).to_contain_text(
        f"re-spent {report.restart_tax.tokens_saved} tokens"
    )
    # The agent loop's steps: each model call with its stop reason and the tool calls it asked
    # for (with arguments), each tool call with its result.
    model_call = page.locator('#journal tr[data-seq="0"] .agent')
    expect(model_call).to_contain_text("stop: tool_use")
    expect(model_call).to_contain_text("calls search(")
    tool_call = page.locator('#journal tr[data-seq="1"] .agent')
    expect(tool_call).to_contain_text("→")
    _shot(page, tmp_path, "agent-run.png", top=1550)

    # A failed run: its error with the traceback, and its retried attempt marked.
    page.goto(server.url + "/runs/failed-1")
    expect(page.locator("#error")).to_contain_text("ValueError: the service refused payments")
    expect(page.locator("#traceback")).to_contain_text("Traceback")
    expect(page.locator("#journal tr.retry")).to_have_count(1)
    expect(page.locator("#timeline .bar.retry")).to_have_count(1)

    # A suspended run names the signal it waits for.
    page.goto(server.url + "/runs/waiting-1")
    expect(page.locator("#waiting-for")).to_contain_text("approve")

    response = page.goto(server.url + "/runs/no-such-run")
    assert response is not None and response.status == 404
    expect(page.locator("#problem")).to_contain_text("there is no run 'no-such-run'")
    if UPDATE_DOCS:
        shutil.copy(tmp_path / "top-agent-run.png", DOCS / "ui-run.png")


def _eventsource_requests(page: Page) -> list[str]:
    seen: list[str] = []
    page.on(
        "request",
        lambda request: (
            seen.append(request.url) if request.resource_type == "eventsource" else None
        ),
    )
    return seen


def test_live_run_updates_by_itself_over_server_sent_events(
    page: Page, server: Server, runs: Store
) -> None:
    run_id = runs.app.start("slow", 3, run_id="live-1")
    streams = _eventsource_requests(page)
    page.goto(server.url + f"/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text("pending")
    expect(page.locator("#live")).to_be_visible()
    # Anything the page's own load did not put there survives only if the page never reloads.
    page.evaluate("window.__sameDocument = true")
    loads = []
    page.on("load", lambda _: loads.append(1))
    driver = threading.Thread(target=runs.app.drive, args=(run_id,), daemon=True)
    driver.start()
    # No reload by the test, and none by the page: the rows arrive through the event stream.
    expect(page.locator("#journal tbody tr[data-seq]")).not_to_have_count(0, timeout=5_000)
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=15_000)
    driver.join(10)
    expect(page.locator("#result")).to_contain_text("3")
    assert page.evaluate("window.__sameDocument") is True and loads == []
    live = page.evaluate("window.outlastLive")
    assert live["transport"] == "sse" and live["polls"] == 0
    assert live["events"] >= 2 and live["updates"] >= 2
    assert any(url.endswith(f"/api/runs/{run_id}/events") for url in streams)
    # The run ended: the page stops following it, and says so.
    expect(page.locator("#live-mode")).to_have_text("ended")
    expect(page.locator("#live")).to_have_count(0)


def test_live_falls_back_to_polling_when_the_event_stream_fails(
    page: Page, server: Server, runs: Store
) -> None:
    run_id = runs.app.start("approval", "fallback", run_id="polled-1")
    runs.app.drive(run_id, max_wait=0.1)
    # A proxy that refuses event streams: EventSource fails, the page polls instead.
    page.route("**/events", lambda route: route.abort())
    page.goto(server.url + f"/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text("suspended")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#live-mode")).to_have_text("live (polling)")
    runs.app.signal(run_id, "approve", "ok")
    driver = threading.Thread(target=runs.app.drive, args=(run_id,), daemon=True)
    driver.start()
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=15_000)
    driver.join(10)
    assert page.evaluate("window.__sameDocument") is True
    live = page.evaluate("window.outlastLive")
    assert live["transport"] == "poll" and live["polls"] >= 1 and live["events"] == 0


def test_runs_page_follows_new_runs(page: Page, server: Server, runs: Store) -> None:
    streams = _eventsource_requests(page)
    page.goto(server.url + "/?q=listed-live")
    expect(page.locator("#no-runs")).to_be_visible()
    page.evaluate("window.__sameDocument = true")
    runs.app.start("many", 2, run_id="listed-live-1")
    row = page.locator('tr[data-run="listed-live-1"]')
    expect(row.locator(".status")).to_have_text("pending", timeout=5_000)
    runs.app.drive("listed-live-1")
    expect(row.locator(".status")).to_have_text("succeeded", timeout=5_000)
    assert page.evaluate("window.__sameDocument") is True
    assert any("/api/listing/events?q=listed-live" in url for url in streams)
    runs.app.delete("listed-live-1")
    expect(page.locator("#no-runs")).to_be_visible(timeout=5_000)


def test_a_store_that_goes_down_under_an_open_page_shows_a_banner(
    page: Page, server: Server, runs: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    page.goto(server.url + "/runs/waiting-1")
    expect(page.locator("#run-status")).to_have_text("suspended")
    problem = page.locator("#live-problem")
    expect(problem).to_be_hidden()

    def down(store: object, run_id: str) -> dict[str, object]:
        raise StoreUnavailableError("connection refused (test)")

    # The server runs in this process: its next read of the run fails as a dead store's would.
    monkeypatch.setattr(views, "status_json", down)
    expect(problem).to_contain_text("the store cannot be read", timeout=5_000)
    expect(problem).to_contain_text("connection refused (test)")
    expect(page.locator("#run-status")).to_have_text("suspended")
    monkeypatch.undo()
    expect(problem).to_be_hidden(timeout=5_000)


def test_signal_from_the_page_resumes_a_suspended_run(
    page: Page, server: Server, runs: Store
) -> None:
    page.goto(server.url + "/runs/waiting-2")
    expect(page.locator("#run-status")).to_have_text("suspended")
    page.fill("#token-input", TOKEN)
    form = page.locator("#signal-form")
    expect(form.locator("input[name=name]")).to_have_value("approve")

    # A payload that is not JSON is refused, and nothing is written.
    form.locator("input[name=payload]").fill("{ok: yes}")
    form.locator("button").click()
    expect(page.locator("#problem")).to_contain_text("the payload is not valid JSON")
    assert runs.store.hot.pending_signals("waiting-2") == []

    page.goto(server.url + "/runs/waiting-2")
    page.locator("#signal-form input[name=payload]").fill('{"ok": true}')
    page.locator("#signal-form button").click()
    expect(page.locator("#done")).to_contain_text("sent signal 'approve'")
    # The signal woke the run; a leg (here, in this process) carries it on to its end, and the
    # open page follows.
    driver = threading.Thread(target=runs.app.drive, args=("waiting-2",), daemon=True)
    driver.start()
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=15_000)
    driver.join(10)
    expect(page.locator("#result")).to_contain_text("deploy: {'ok': True}")


def test_actions_need_the_token(page: Page, server: Server, runs: Store) -> None:
    before = runs.store.hot.get_run("waiting-3")
    page.goto(server.url + "/runs/waiting-3")
    page.locator("#cancel-form button").click()
    expect(page.locator("#problem")).to_contain_text("needs the token")
    page.goto(server.url + "/runs/waiting-3")
    page.fill("#token-input", "not-the-token-at-all")
    page.locator("#cancel-form button").click()
    expect(page.locator("#problem")).to_contain_text("wrong token")
    after = runs.store.hot.get_run("waiting-3")
    assert after.status is RunStatus.SUSPENDED and after.version == before.version


def test_no_actions_without_allow_actions(page: Page, readonly: Server, runs: Store) -> None:
    page.goto(readonly.url + "/runs/waiting-4")
    expect(page.locator("#run-status")).to_have_text("suspended")
    expect(page.locator("#actions")).to_have_count(0)
    expect(page.locator("form[method=post]")).to_have_count(0)
    # Even a hand-made request with the right token is refused, and writes nothing.
    response = page.request.post(
        readonly.url + "/runs/waiting-4/cancel",
        form={"token": TOKEN},
        headers={"Origin": readonly.url},
    )
    assert response.status == 403
    assert "actions are off" in response.text()
    assert runs.store.hot.get_run("waiting-4").status is RunStatus.SUSPENDED


def test_a_long_run_id_is_shown_whole_and_fits_the_page(
    page: Page, server: Server, runs: Store
) -> None:
    run_id = "a-long-run-id-" + "x0" * 25  # 64 characters, the most a run id may have
    assert len(run_id) == 64
    runs.app.start("many", 0, run_id=run_id)
    try:
        page.goto(server.url + f"/?q={run_id}")
        link = page.locator(f'tr[data-run="{run_id}"] td.id a')
        expect(link).to_have_text(run_id)
        box = link.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1280
        page.goto(server.url + f"/runs/{run_id}")
        expect(page.locator("#run-id")).to_have_text(run_id)
        heading = page.locator("#run-id").bounding_box()
        assert heading is not None and heading["x"] + heading["width"] <= 1280
        # Nothing on the page is wider than the window: no sideways scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    finally:
        runs.app.delete(run_id)
