"""The web console: a Starlette app serving server-rendered pages and a small JSON API.

Endpoints are plain (sync) functions: Starlette runs them in its thread pool, and every store
backend is safe to call from several threads. Reads go through ``outlast.ui.views``; actions go
through ``outlast.App`` methods, the same ones the CLI uses, so a refusal there refuses here.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from outlast.app import App
from outlast.ui import views
from outlast.ui.live import LIST_COST_FACTOR, LIST_POLL_S, Feeds
from statestore import (
    DEFAULT_HOT_URL,
    HOT_ENV,
    CorruptStateError,
    InvalidRunIdError,
    InvalidStoreUrlError,
    RunNotFoundError,
    RunStatus,
    StateStore,
    StateStoreError,
    open_store,
    validate_run_id,
)

ACTIONS = ("signal", "cancel", "retry", "delete")
MAX_JSON_DEPTH = 256  # as the CLI: deeper payloads are refused before json.loads can recurse
MAX_FORM_BYTES = 1_000_000
# A "store cannot be read" page loads itself again this often, so it clears when the store is back.
STORE_DOWN_RETRY_S = 5


@dataclass
class UiConfig:
    hot: str | None = None
    cold: str | None = None
    allow_actions: bool = False
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    # Host names the Host header may carry (DNS-rebinding guard); empty allows any.
    allowed_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1", "localhost", "::1"])


def store_label(hot: str | None) -> str:
    """The hot tier's URL as the top bar shows it: no password, no query (which may hold keys)."""
    url = hot or os.environ.get(HOT_ENV) or DEFAULT_HOT_URL
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}{parts.path}"[:120]


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("outlast.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["statuses"] = [s.value for s in RunStatus]
    env.globals["when"] = views.when
    env.globals["jpage_size"] = views.JOURNAL_PAGE
    env.globals["store_label"] = ""
    return env


class _Stores:
    """Opens the store on first use and again after a failed open, so a store that was down at
    start-up is picked up when it comes back, and the page shows a banner meanwhile."""

    def __init__(self, hot: str | None, cold: str | None) -> None:
        self._hot, self._cold = hot, cold
        self._store: StateStore | None = None
        self._lock = threading.Lock()

    def get(self) -> StateStore:
        with self._lock:
            if self._store is None:
                self._store = open_store(self._hot, self._cold)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def _depth(value: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


class RefusedError(Exception):
    """An action refused before anything was written; the message says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_payload(text: str) -> Any:
    """A signal payload from a form: empty means none; anything else must be JSON."""
    if not text.strip():
        return None
    shown = text if len(text) <= 80 else text[:77] + "..."
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RefusedError(
            f"the payload is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            f"{shown!r}"
        ) from None
    except RecursionError:
        raise RefusedError(f"the payload nests deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise RefusedError(f"the payload nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def _form(body: bytes, content_type: str) -> dict[str, str]:
    """The fields of a url-encoded form (the pages post nothing else; no multipart parser)."""
    if body and not content_type.startswith("application/x-www-form-urlencoded"):
        raise RefusedError("send the action as a url-encoded form", 415)
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=16)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RefusedError(f"unreadable form: {exc}") from None
    return {k: v[0] for k, v in fields.items()}


def create_app(config: UiConfig) -> Starlette:
    env = environment()
    env.globals["store_label"] = store_label(config.hot)
    stores = _Stores(config.hot, config.cold)
    feeds = Feeds()

    def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("live", None)
        html = env.get_template(template).render(
            request_path=request.url.path,
            allow_actions=config.allow_actions,
            export=False,
            **context,
        )
        # A live page is fetched again by its own script: never from a cache.
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def problem(request: Request, status: int, title: str, message: str, **extra: Any) -> Response:
        if is_api(request):
            return JSONResponse({"error": message}, status_code=status)
        return page(request, "problem.html", status, title=title, message=message, **extra)

    def store_down(request: Request, exc: Exception) -> Response:
        # A clear banner, never a stack trace: the store may be restarting, or the URL wrong.
        return problem(
            request,
            503,
            "The store cannot be read",
            f"{type(exc).__name__}: {exc}. Check that the store is running and the --hot/--cold "
            "URLs are right"
            + (
                "." if is_api(request) else f"; this page tries again every {STORE_DOWN_RETRY_S} s."
            ),
            retry_s=STORE_DOWN_RETRY_S,
        )

    def not_found(request: Request, run_id: str) -> Response:
        message = f"there is no run {run_id[:80]!r} in this store"
        # A mistyped or partial id: offer the search that finds its neighbours.
        search = urlencode({"q": run_id}) if views.searchable(run_id) else ""
        return problem(request, 404, "No such run", message, search=search)

    def guarded(request: Request, read: Callable[[StateStore], Response]) -> Response:
        try:
            return read(stores.get())
        except (RunNotFoundError, InvalidRunIdError):
            return not_found(request, str(request.path_params.get("run_id", "")))
        except views.BadFilterError as exc:
            return problem(request, 400, "Bad filter", str(exc))
        except CorruptStateError as exc:
            # The store answers, but what it holds fails its checks: say so, naming where.
            return problem(request, 500, "Corrupt state", f"{exc}")
        except (StateStoreError, InvalidStoreUrlError, OSError) as exc:
            return store_down(request, exc)

    # ------------------------------------------------------------------ pages

    def runs_page(request: Request) -> Response:
        def read(store: StateStore) -> Response:
            flt = views.parse_filter(request.query_params)
            listing = views.list_runs(store, flt)
            query = urlencode(flt.query())
            return page(
                request,
                "runs.html",
                listing=listing,
                flt=flt,
                live={
                    "events": "/api/listing/events?" + query,
                    "poll": "/api/listing/state?" + query,
                    "key": listing.key,
                },
                done=request.query_params.get("done", "")[:200],
                next_query=urlencode(flt.query(page=flt.page + 1)),
                prev_query=urlencode(flt.query(page=flt.page - 1)),
            )

        return guarded(request, read)

    def run_detail(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        jpage_text = request.query_params.get("jpage", "1")
        if not jpage_text.isdigit():
            return problem(request, 400, "Bad page", f"jpage {jpage_text[:20]!r} is not a number")

        def read(store: StateStore) -> Response:
            data = views.run_page(store, run_id, int(jpage_text))
            base = f"/api/runs/{run_id}"
            return page(
                request,
                "run.html",
                run=data,
                live={
                    "events": base + "/events",
                    "poll": base + "/status",
                    "key": views.run_key(data.record),
                }
                if data.live
                else None,
                done=request.query_params.get("done", "")[:200],
                json_text=views.json_text,
                age=views.age,
            )

        return guarded(request, read)

    # ------------------------------------------------------------------ API

    def api_runs(request: Request) -> Response:
        def read(store: StateStore) -> Response:
            flt = views.parse_filter(request.query_params)
            listing = views.list_runs(store, flt)
            return JSONResponse(
                {
                    "page": flt.page,
                    "has_next": listing.has_next,
                    "runs": [r.as_json() for r in listing.rows],
                }
            )

        return guarded(request, read)

    def api_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return guarded(request, lambda store: JSONResponse(views.run_json(store, run_id)))

    def api_status(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return guarded(request, lambda store: JSONResponse(views.status_json(store, run_id)))

    def api_runs_state(request: Request) -> Response:
        """What the live runs page polls when its event stream fails."""

        def read(store: StateStore) -> Response:
            flt = views.parse_filter(request.query_params)
            return JSONResponse({"key": views.listing_key(store, flt), "live": True})

        return guarded(request, read)

    # ------------------------------------------------------------------ live

    def watch(read: Callable[[StateStore], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        """A feed's read: never raises, so a store that goes down shows as a banner on the page
        (and the stream carries on, to show the store coming back)."""

        def safe() -> dict[str, Any]:
            try:
                return read(stores.get())
            except (RunNotFoundError, InvalidRunIdError):
                return {"gone": True, "live": False}
            except (StateStoreError, InvalidStoreUrlError, OSError) as exc:
                return {"error": f"the store cannot be read: {type(exc).__name__}: {exc}"}

        return safe

    def event_stream(body: AsyncIterator[str]) -> Response:
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            # No proxy may buffer or cache a stream; a page reads it as it comes.
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def run_events(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        # An unknown run is a plain 404 before any stream opens: EventSource then gives up.
        answer = await run_in_threadpool(
            guarded, request, lambda store: JSONResponse(views.status_json(store, run_id))
        )
        if answer.status_code != 200:
            return answer
        body = feeds.stream(
            f"run:{run_id}",
            watch(lambda store: views.status_json(store, run_id)),
            request.is_disconnected,
            last=lambda state: bool(state.get("gone")) or state.get("live") is False,
        )
        return event_stream(body)

    async def runs_events(request: Request) -> Response:
        try:
            flt = views.parse_filter(request.query_params)
        except views.BadFilterError as exc:
            return problem(request, 400, "Bad filter", str(exc))
        body = feeds.stream(
            "runs?" + urlencode(flt.query()),
            watch(lambda store: {"key": views.listing_key(store, flt), "live": True}),
            request.is_disconnected,
            interval=LIST_POLL_S,
            cost_factor=LIST_COST_FACTOR,
        )
        return event_stream(body)

    def api_journal(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        after = request.query_params.get("after_seq", "-1")
        limit = request.query_params.get("limit", "500")
        if not after.lstrip("-").isdigit() or not limit.isdigit():
            return problem(request, 400, "Bad query", "after_seq and limit are whole numbers")

        def read(store: StateStore) -> Response:
            validate_run_id(run_id)
            store.hot.get_run(run_id)
            out: list[dict[str, Any]] = []
            for entry in store.hot.iter_journal(run_id, int(after)):
                if len(out) >= min(int(limit), 5000):
                    break
                out.append(views.entry_meta_json(entry))
            return JSONResponse({"run_id": run_id, "entries": out})

        return guarded(request, read)

    def api_entry(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        seq = request.path_params["seq"]

        def read(store: StateStore) -> Response:
            validate_run_id(run_id)
            store.hot.get_run(run_id)
            data = views.entry_json(store, run_id, seq)
            if data is None:
                return problem(request, 404, "No such entry", f"run {run_id!r} has no seq {seq}")
            return JSONResponse(data)

        return guarded(request, read)

    # ------------------------------------------------------------------ actions

    def origin_ok(request: Request) -> bool:
        """Cross-site requests are refused: a browser names the page a POST came from.

        A form on another site can make the browser post here, but it cannot make the Origin
        (or Referer) header name this console. No cookie is ever set, so there is nothing
        ambient for such a request to ride on either; the token is the credential.
        """
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        origin = request.headers.get("origin")
        if origin is not None:
            return origin == own
        referer = request.headers.get("referer")
        if referer is not None:
            parts = urlsplit(referer)
            return f"{parts.scheme}://{parts.netloc}" == own
        # Neither header: not a browser form (browsers send Origin on every POST). A script
        # must then carry the token in a header, which no cross-site form can set.
        return "authorization" in request.headers

    async def action(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        name = request.path_params["action"]
        try:
            # A refused action writes nothing: every check runs before the App method does.
            if name not in ACTIONS:
                known = ", ".join(ACTIONS)
                raise RefusedError(f"unknown action {name!r}; actions are {known}", 404)
            if not config.allow_actions:
                raise RefusedError(
                    "actions are off: start the console with `outlast ui --allow-actions`", 403
                )
            if not origin_ok(request):
                raise RefusedError(
                    "cross-site request refused (Origin/Referer is not this console)", 403
                )
            body = await request.body()
            if len(body) > MAX_FORM_BYTES:
                raise RefusedError(f"the form is larger than {MAX_FORM_BYTES} bytes", 413)
            form = _form(body, request.headers.get("content-type", ""))
            given = str(form.get("token") or "")
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = given or auth[7:].strip()
            if not given:
                raise RefusedError(
                    "this action needs the token printed when `outlast ui` started", 403
                )
            if not secrets.compare_digest(given.encode(), config.token.encode()):
                raise RefusedError(
                    "wrong token: use the one printed when `outlast ui` started", 403
                )
            try:
                validate_run_id(run_id)
            except InvalidRunIdError as exc:
                raise RefusedError(str(exc), 404) from None
            payload = None
            signal_name = ""
            if name == "signal":
                signal_name = str(form.get("name") or "").strip()
                if not 1 <= len(signal_name) <= 128:
                    raise RefusedError("a signal needs a name of 1-128 characters")
                payload = parse_payload(str(form.get("payload") or ""))
        except RefusedError as exc:
            return refusal(request, run_id, name, str(exc), exc.status)
        return await run_in_threadpool(do_action, request, run_id, name, signal_name, payload)

    def do_action(
        request: Request, run_id: str, name: str, signal_name: str, payload: Any
    ) -> Response:
        try:
            store = stores.get()
            app = App("outlast-ui", store=store)
            if name == "signal":
                app.signal(run_id, signal_name, payload)
                done = f"sent signal {signal_name!r}"
            elif name == "cancel":
                app.cancel(run_id)
                done = "cancelled"
            elif name == "retry":
                app.retry(run_id)
                done = "re-opened: a leg (worker, sweeper or `outlast runs resume`) continues it"
            else:
                app.delete(run_id)
                if is_json_client(request):
                    return JSONResponse({"run_id": run_id, "action": name, "done": "deleted"})
                return RedirectResponse(
                    "/?" + urlencode({"done": f"deleted run {run_id}"}), status_code=303
                )
        except RunNotFoundError:
            return refusal(request, run_id, name, f"there is no run {run_id!r}", 404)
        except (StateStoreError, ValueError, TypeError, LookupError) as exc:
            # RunEndedError, a retry of a run that is not failed, an unstorable payload...
            return refusal(request, run_id, name, str(exc), 409)
        if is_json_client(request):
            return JSONResponse({"run_id": run_id, "action": name, "done": done})
        return RedirectResponse(f"/runs/{run_id}?" + urlencode({"done": done}), status_code=303)

    def is_json_client(request: Request) -> bool:
        return "application/json" in request.headers.get("accept", "")

    def refusal(request: Request, run_id: str, name: str, why: str, status: int) -> Response:
        if is_json_client(request):
            return JSONResponse({"refused": why, "action": name}, status_code=status)
        return page(
            request,
            "problem.html",
            status,
            title=f"{name.capitalize()} refused",
            message=f"{why}. Nothing was written.",
            back=f"/runs/{run_id}" if run_id else "/",
        )

    routes = [
        Route("/", runs_page),
        Route("/runs/{run_id}", run_detail),
        Route("/runs/{run_id}/{action}", action, methods=["POST"]),
        Route("/api/runs", api_runs),
        # Not under /api/runs/: "events" and "state" are valid run ids.
        Route("/api/listing/events", runs_events),
        Route("/api/listing/state", api_runs_state),
        Route("/api/runs/{run_id}", api_run),
        Route("/api/runs/{run_id}/events", run_events),
        Route("/api/runs/{run_id}/status", api_status),
        Route("/api/runs/{run_id}/journal", api_journal),
        Route("/api/runs/{run_id}/entries/{seq:int}", api_entry),
    ]

    async def not_found_page(request: Request, exc: Exception) -> Response:
        return problem(request, 404, "Not found", f"nothing at {request.url.path[:200]!r}")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return problem(request, 405, "Method not allowed", "use the page's buttons for actions")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        feeds.stop()
        stores.close()

    middleware = []
    if config.allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=config.allowed_hosts))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: not_found_page, 405: method_not_allowed},
        lifespan=lifespan,
    )
    # ConsoleServer stops the event streams through this as shutdown starts.
    app.state.feeds = feeds
    return app


def export_run_html(store: StateStore, run_id: str) -> str:
    """The run page as one self-contained HTML file: styles inline, every value inside, no script
    that calls back to a server, no actions."""
    data = views.run_page(store, run_id, export=True)
    return (
        environment()
        .get_template("run.html")
        .render(
            request_path="",
            allow_actions=False,
            export=True,
            live=None,
            run=data,
            done="",
            json_text=views.json_text,
            age=views.age,
        )
    )
