"""The console over plain HTTP: the JSON API, cross-site refusals, a store that is down, paging
and aggregation at size, and `outlast runs show --html`."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from outlast.cli import cli
from outlast.ui import views
from outlast.ui.live import Feeds
from outlast.ui.server import UiConfig, export_run_html
from outlast.ui.views import AGGREGATE_OVER, PAGE_SIZE
from statestore import RunStatus, open_store
from tests.ui.conftest import TOKEN, Server, Store
from tests.ui.workload import make_app


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _post(url: str, fields: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
    body = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _json(url: str) -> tuple[int, Any]:
    status, text = _get(url)
    return status, json.loads(text)


def test_api_serves_the_pages_data(server: Server, runs: Store) -> None:
    status, listing = _json(server.url + "/api/runs?status=failed")
    assert status == 200
    assert [r["run_id"] for r in listing["runs"]] == ["failed-1"]
    status, run = _json(server.url + "/api/runs/failed-1")
    assert run["status"] == "failed" and "Traceback" in run["error"]["traceback"]
    assert run["report"]["counters"]["legs"] == runs.store.hot.get_run("failed-1").counters.legs
    status, journal = _json(server.url + "/api/runs/research-1/journal")
    big = next(e for e in journal["entries"] if e["name"] == "big")
    assert big["tier"] == "cold"
    status, entry = _json(server.url + f"/api/runs/research-1/entries/{big['seq']}")
    assert status == 200 and len(entry["value"]) == 300_000
    assert _json(server.url + "/api/runs/research-1/entries/999")[0] == 404
    status, body = _json(server.url + "/api/runs/nope")
    assert status == 404 and "no run 'nope'" in body["error"]
    status, body = _json(server.url + "/api/runs?since=soon")
    assert status == 400 and "duration" in body["error"]


def test_cross_site_and_tokenless_actions_are_refused(server: Server, runs: Store) -> None:
    before = runs.store.hot.get_run("waiting-1")
    url = server.url + "/runs/waiting-1/cancel"
    status, text = _post(url, {"token": TOKEN}, {"Origin": "https://evil.example"})
    assert status == 403 and "cross-site" in text
    status, text = _post(url, {"token": TOKEN}, {"Referer": "https://evil.example/page"})
    assert status == 403 and "cross-site" in text
    # A sandboxed frame's form says "Origin: null": not this console either.
    status, text = _post(url, {"token": TOKEN}, {"Origin": "null"})
    assert status == 403 and "cross-site" in text
    # No Origin, no Referer and no Authorization header: not a browser form, not a script.
    status, text = _post(url, {"token": TOKEN}, {})
    assert status == 403
    status, text = _post(url, {}, {"Authorization": "Bearer wrong-token-000"})
    assert status == 403 and "wrong token" in text
    assert runs.store.hot.get_run("waiting-1").version == before.version
    # A Host header that is not this console's (DNS rebinding) is refused before any route.
    status, _ = _post(url, {"token": TOKEN}, {"Origin": server.url, "Host": "evil.example"})
    assert status == 400
    assert runs.store.hot.get_run("waiting-1").version == before.version


def test_a_script_acts_with_the_token_in_a_header(server: Server, runs: Store) -> None:
    app = runs.app
    run_id = app.start("approval", "script", run_id="scripted-1")
    app.drive(run_id, max_wait=0.1)
    status, text = _post(
        server.url + f"/runs/{run_id}/signal",
        {"name": "approve", "payload": "not json"},
        {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
    )
    assert status == 400 and "not valid JSON" in json.loads(text)["refused"]
    assert runs.store.hot.pending_signals(run_id) == []
    status, text = _post(
        server.url + f"/runs/{run_id}/cancel",
        {},
        {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
    )
    assert status == 200 and json.loads(text)["done"] == "cancelled"
    assert runs.store.hot.get_run(run_id).status is RunStatus.CANCELLED
    # Retrying a cancelled run is refused by App.retry, and the refusal says why.
    status, text = _post(
        server.url + f"/runs/{run_id}/retry",
        {},
        {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
    )
    assert status == 409 and json.loads(text)["refused"]
    status, text = _post(
        server.url + f"/runs/{run_id}/delete",
        {},
        {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
    )
    assert status == 200 and json.loads(text)["done"] == "deleted"
    assert runs.store.hot.find_run(run_id) is None


def test_a_store_that_is_down_shows_a_banner(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's directory should be")
    config = UiConfig(hot=f"sqlite:///{blocker}/hot.db", cold=f"file://{tmp_path}/cold")
    with Server(config) as down:
        for path in ("/", "/runs/any-run"):
            status, text = _get(down.url + path)
            assert status == 503
            assert "The store cannot be read" in text and "Traceback" not in text
            # It tries again by itself: the page clears when the store is back.
            assert '<meta http-equiv="refresh" content="5">' in text
        status, body = _json(down.url + "/api/runs")
        assert status == 503 and "StoreUnavailableError" in body["error"]


@pytest.fixture
def big_store(tmp_path: Path) -> Iterator[Store]:
    hot, cold = f"sqlite:///{tmp_path}/hot.db", f"file://{tmp_path}/cold"
    store = open_store(hot, cold)
    yield Store(hot, cold, store, make_app(store))
    store.close()


def test_paging_and_an_aggregated_timeline(big_store: Store) -> None:
    app = big_store.app
    for i in range(PAGE_SIZE + 5):
        app.start("many", 0, run_id=f"run-{i:03d}")
    app.drive(app.start("many", AGGREGATE_OVER + 200, run_id="long-run"))
    config = UiConfig(hot=big_store.hot, cold=big_store.cold)
    with Server(config) as server:
        status, first = _json(server.url + "/api/runs")
        assert len(first["runs"]) == PAGE_SIZE and first["has_next"]
        assert first["runs"][0]["run_id"] == "long-run"
        status, second = _json(server.url + "/api/runs?page=2")
        assert len(second["runs"]) == 6 and not second["has_next"]
        assert {r["run_id"] for r in first["runs"]}.isdisjoint(r["run_id"] for r in second["runs"])
        status, html = _get(server.url + "/runs/long-run")
        assert status == 200 and 'data-aggregated="yes"' in html
        assert html.count('class="bar ') <= 200
        status, html = _get(server.url + "/runs/long-run?jpage=3")
        assert status == 200 and "page 3 of 3" in html


def test_runs_show_html_writes_one_self_contained_page(runs: Store, tmp_path: Path) -> None:
    out = tmp_path / "failed-1.html"
    show = ["runs", "show", "failed-1", "--hot", runs.hot, "--cold", runs.cold]
    result = CliRunner().invoke(cli, [*show, "--html", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "ValueError: the service refused payments" in html or "the service refused" in html
    assert "Traceback" in html
    # Self-contained: styles inline, no script, no link to a server, every value inside.
    assert "<script" not in html and "<link" not in html and 'src="' not in html
    assert "payments note 0" in html
    # The cold value was fetched into the file, whole.
    big = next(e for e in runs.store.hot.read_journal("research-1") if e.name == "big")
    value = runs.store.decode("research-1", big.value)
    assert value in export_run_html(runs.store, "research-1")
    bad = CliRunner().invoke(cli, [*show, "--html", str(tmp_path / "no-dir" / "x.html")])
    assert bad.exit_code == 2 and "cannot write" in bad.output


def test_a_parent_names_its_children_and_a_child_its_parent(big_store: Store) -> None:
    from outlast import Context

    if not hasattr(Context, "run_child"):
        pytest.skip("child runs are not in this tree")
    app = big_store.app

    @app.durable()
    def parent(ctx: Context, n: int) -> int:
        return int(ctx.run_child("many", n)) + 1

    run_id = app.start("parent", 3, run_id="parent-1")
    app.drive(run_id)
    child = next(r for r in big_store.store.hot.list_runs() if r.tags.get("parent") == run_id)
    config = UiConfig(hot=big_store.hot, cold=big_store.cold)
    with Server(config) as server:
        status, html = _get(server.url + f"/runs/{run_id}")
        assert status == 200 and f'href="/runs/{child.run_id}"' in html
        status, html = _get(server.url + f"/runs/{child.run_id}")
        assert status == 200 and f'href="/runs/{run_id}"' in html


def test_corrupt_state_is_named_not_a_stack_trace(big_store: Store, tmp_path: Path) -> None:
    import sqlite3

    app = big_store.app
    app.drive(app.start("many", 2, run_id="fine-1"))
    app.drive(app.start("many", 2, run_id="broken-1"))
    with sqlite3.connect(tmp_path / "hot.db") as db:
        db.execute("UPDATE journal SET doc = ? WHERE run_id = 'broken-1' AND seq = 1", (b"\x00",))
    with Server(UiConfig(hot=big_store.hot, cold=big_store.cold)) as server:
        status, html = _get(server.url + "/runs/broken-1")
        assert status == 500 and "Corrupt state" in html and "broken-1" in html
        assert "Traceback" not in html
        assert _get(server.url + "/runs/fine-1")[0] == 200
        status, listing = _json(server.url + "/api/runs")
        tokens = {r["run_id"]: r["tokens"] for r in listing["runs"]}
        assert status == 200 and tokens == {"broken-1": None, "fine-1": 0}


def test_a_corrupt_run_record_is_listed_apart_and_hides_no_other_run(
    big_store: Store, tmp_path: Path
) -> None:
    import sqlite3

    app = big_store.app
    app.drive(app.start("many", 2, run_id="fine-2"))
    app.drive(app.start("many", 2, run_id="rotten-2"))
    with sqlite3.connect(tmp_path / "hot.db") as db:
        db.execute("UPDATE runs SET doc = ? WHERE run_id = 'rotten-2'", (b"\x00\x01",))
    with Server(UiConfig(hot=big_store.hot, cold=big_store.cold)) as server:
        status, html = _get(server.url + "/")
        assert status == 200 and "Traceback" not in html
        assert 'id="corrupt-runs"' in html and "rotten-2" in html
        assert 'href="/runs/fine-2"' in html


def test_a_model_call_shows_the_messages_it_was_sent(server: Server, runs: Store) -> None:
    journal = runs.app.journal("agent-1")
    models = [e.seq for e in journal if e.name == "model" and e.status.value == "ok"]
    assert len(models) >= 2
    status, first = _json(server.url + f"/api/runs/agent-1/entries/{models[0]}")
    assert status == 200 and first["sent"] == [{"role": "user", "content": "durable agents"}]
    status, second = _json(server.url + f"/api/runs/agent-1/entries/{models[1]}")
    sent = second["sent"]
    assert sent[0] == {"role": "user", "content": "durable agents"}
    assert sent[1] == first["value"]["message"]  # the first reply, then its tools' results
    tools_between = [e for e in journal if models[0] < e.seq < models[1]]
    assert len(sent) == 2 + (1 if tools_between else 0)
    if tools_between:
        assert sent[2]["role"] == "tool" and len(sent[2]["tool_results"]) == len(tools_between)


class _Stream:
    """A raw event-stream reader: what a browser's EventSource reads, one event at a time."""

    def __init__(self, server: Server, path: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream"})
        self.response = self.conn.getresponse()

    def event(self) -> dict[str, Any] | None:
        """The next state event's data; None when the server ended the stream."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                return None
            text = line.decode().rstrip("\n")
            if text == "":
                if fields.get("event") == "state":
                    return dict(json.loads(fields["data"]))
                fields = {}
                continue
            name, _, value = text.partition(": ")
            fields[name] = value

    def close(self) -> None:
        self.conn.close()


def _feeds(server: Server) -> Feeds:
    feeds = server.app.state.feeds
    assert isinstance(feeds, Feeds)
    return feeds


def test_event_streams_send_each_change_and_stop_with_the_server(big_store: Store) -> None:
    app = big_store.app
    run_id = app.start("approval", "stream", run_id="streamed-1")
    app.drive(run_id, max_wait=0.1)
    server = Server(UiConfig(hot=big_store.hot, cold=big_store.cold)).__enter__()
    try:
        run = _Stream(server, f"/api/runs/{run_id}/events")
        assert run.response.status == 200
        assert run.response.getheader("Content-Type", "").startswith("text/event-stream")
        first = run.event()
        assert first is not None and first["status"] == "suspended" and first["live"]
        listing = _Stream(server, "/api/listing/events?function=approval")
        listed = listing.event()
        assert listed is not None and listed["live"]
        # A commit (here: the signal wakes the run, a leg ends it) reaches the stream.
        app.signal(run_id, "approve", "yes")
        app.drive(run_id)
        states = []
        while (state := run.event()) is not None:
            states.append(state)
        # The last state is the ended run, after which the server ends the stream itself.
        assert states and states[-1]["status"] == "succeeded" and states[-1]["live"] is False
        assert states[-1]["key"] != first["key"]
        changed = listing.event()
        assert changed is not None and changed["key"] != listed["key"]
        # A page left open holds its stream: stopping the server ends it, promptly.
        started = time.monotonic()
        assert server.stop(wait=5), "uvicorn did not stop with an event stream open"
        assert time.monotonic() - started < 3
        assert listing.event() is None
        assert _feeds(server).watched() == 0
        run.close()
        listing.close()
    finally:
        server.stop()


def test_a_closed_page_stops_its_poller_and_bad_streams_are_refused(big_store: Store) -> None:
    app = big_store.app
    app.drive(app.start("approval", "x", run_id="watched-1"), max_wait=0.1)
    with Server(UiConfig(hot=big_store.hot, cold=big_store.cold)) as server:
        pages = [_Stream(server, "/api/runs/watched-1/events") for _ in range(3)]
        assert all(p.event() is not None for p in pages)
        # Three pages watch one run: one poller reads it for all of them.
        assert _feeds(server).watched() == 1
        for p in pages:
            p.close()
        deadline = time.monotonic() + 5
        while _feeds(server).watched() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _feeds(server).watched() == 0
        status, body = _json(server.url + "/api/runs/no-such-run/events")
        assert status == 404 and "no run" in body["error"]
        status, body = _json(server.url + "/api/listing/events?status=done")
        assert status == 400 and "is not one of" in body["error"]
        status, body = _json(server.url + "/api/listing/state?status=failed")
        assert status == 200 and body["key"]


def test_a_search_reads_every_run_however_old(
    big_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing reads the store through a cursor a batch at a time: a search matching only
    the oldest runs finds them, with batches far smaller than the store."""
    app = big_store.app
    for i in range(30):
        app.start("many", 0, run_id=f"run-{i:03d}")
    store = big_store.store
    batches: list[int] = []
    iter_runs = store.hot.iter_runs

    def counted(*args: Any, **kwargs: Any) -> Any:
        batches.append(kwargs.get("page", 0))
        return iter_runs(*args, **kwargs)

    monkeypatch.setattr(store.hot, "iter_runs", counted)
    oldest = views.list_runs(store, views.parse_filter({"q": "run-00"}))
    assert sorted(r.run_id for r in oldest.rows) == [f"run-{i:03d}" for i in range(10)]
    assert batches and all(0 < b <= 1000 for b in batches)
    other = views.list_runs(store, views.parse_filter({"q": "run-000", "status": "failed"}))
    assert other.rows == []


def test_pages_point_a_new_user_somewhere(big_store: Store) -> None:
    with Server(UiConfig(hot=big_store.hot, cold=big_store.cold)) as server:
        status, html = _get(server.url + "/")
        # An empty store says how to make a run and which store this console reads.
        assert status == 200 and "No runs in this store yet" in html
        assert big_store.hot.removeprefix("sqlite:///") in html
        status, html = _get(server.url + "/runs/run-0")
        assert status == 404 and 'href="/?q=run-0"' in html
