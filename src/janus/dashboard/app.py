"""The dashboard's ASGI app (Starlette): server-rendered pages over the Janus API, a JSON
twin of each live page (polled by ``static/dashboard.js``), and the actions.

Pages: ``/`` (every dependency), ``/d/<dep>`` (its scopes, chart and events),
``/d/<dep>/scope?name=`` (one scope), ``/d/<dep>/dead`` (dead letters, filtered and paged),
``/d/<dep>/dead/<entry>`` (one, with its payload and history), ``/job`` (a job by id).
Actions (POST only): ``/d/<dep>/pause``, ``/d/<dep>/resume`` (``scope_hex``, or ``scope``
plain, for one scope), ``/d/<dep>/dead/replay``, ``/d/<dep>/dead/purge``. Each action asks
first (a confirm page; only a POST with ``confirm=yes`` acts), needs the CSRF token, is
refused whole in read-only mode, and is logged (``janus.dashboard``); pauses and resumes
are also events in Redis, written by the functions.

No Redis logic lives here: every read and action is a :class:`janus.client.Janus` method,
run in a worker thread (the client is synchronous and thread-safe). Views (what each page
shows) are built by :mod:`janus.dashboard.views`; safety checks are in
:mod:`janus.dashboard.security`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from janus.client import Janus
from janus.dashboard import security, views
from janus.decisions import DeadLetter
from janus.errors import InvalidInput, JanusError, UnknownDependency
from janus.keys import check_dependency, check_user_name
from janus.urls import redact, redact_text

log = logging.getLogger("janus.dashboard")

HERE = Path(__file__).resolve().parent
#: Scopes the dependency page lists (by waiting work), and the choices it offers.
DEFAULT_TOP = 25
TOP_CHOICES = (10, 25, 50, 100)
#: Events the dependency page shows.
EVENTS_SHOWN = 20
#: Dependency histories kept for rates (each a few hundred samples).
MAX_HISTORIES = 10_000
#: Dead letters one "every match" replay or purge reads at most (the confirm page says so
#: when there are more: narrow the filter, or repeat).
ACTION_SCAN = 10_000
#: Entries one replay or purge of selected dead letters may name.
MAX_ENTRIES = 1000
#: The largest form body an action accepts (read before it is parsed), and its fields.
MAX_BODY = 1 << 20
MAX_FIELDS = 2 * MAX_ENTRIES

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class DashboardConfig:
    """How a dashboard runs."""

    redis_url: str
    """Shown only through :func:`janus.urls.redact` (never with its password)."""
    prefix: str = "janus"
    read_only: bool = False
    auth_token: str | None = None
    allowed_hosts: tuple[str, ...] | None = None
    """Host names the app answers to (None: any). The CLI sets the loopback names when it
    listens on loopback (against DNS rebinding)."""
    refresh_ms: int = 2000
    per_page: int = 50


class Problem(Exception):
    """A page that cannot be shown as asked: its HTTP status and one sentence why."""

    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(text)
        self.status, self.title, self.text = status, title, text


class Dashboard:
    """The app's state: the client, the config, the rate histories, the templates."""

    def __init__(self, jn: Janus, config: DashboardConfig) -> None:
        self.jn = jn
        self.config = config
        self.signer = security.Signer()
        self.sessions = security.Sessions(time.monotonic)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,  # every value is text: nothing a user wrote becomes markup
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["q"] = lambda value: quote(str(value), safe="")
        self.templates.filters["n"] = views.count
        # (a user string a form must carry back exactly: see _text)
        self.templates.filters["hex"] = lambda value: str(value).encode().hex()
        self._histories: dict[str, views.CounterHistory] = {}
        self._lock = threading.Lock()

    # -- the app ------------------------------------------------------------------------

    def app(self) -> Starlette:
        page, api = self._page, self._api
        routes: list[BaseRoute] = [
            Route("/", page(self.overview)),
            Route("/api/overview", api(self.overview_json)),
            Route("/d/{dep}", page(self.dependency)),
            Route("/api/d/{dep}", api(self.dependency_json)),
            Route("/d/{dep}/scope", page(self.scope)),
            Route("/d/{dep}/dead", page(self.dead_letters)),
            Route("/d/{dep}/dead/{entry}", page(self.dead_letter)),
            Route("/job", page(self.job)),
            Route("/d/{dep}/pause", page(self.pause), methods=["POST"]),
            Route("/d/{dep}/resume", page(self.resume), methods=["POST"]),
            Route("/d/{dep}/dead/replay", page(self.replay), methods=["POST"]),
            Route("/d/{dep}/dead/purge", page(self.purge), methods=["POST"]),
            Route("/login", page(self.login), methods=["GET", "POST"]),
            Route("/logout", page(self.logout), methods=["POST"]),
            Route("/healthz", self.healthz),
            Route("/favicon.ico", _no_icon),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        middleware = [Middleware(_Guard, dashboard=self)]
        return Starlette(routes=routes, middleware=middleware)

    def _page(self, fn: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)
            except Problem as p:
                return self.message(request, p.status, p.title, p.text)
            except UnknownDependency as exc:
                return self.message(request, 404, "Unknown dependency", redact_text(str(exc)))
            except InvalidInput as exc:
                return self.message(request, 400, "Bad request", redact_text(str(exc)))
            except JanusError as exc:
                log.warning("dashboard: %r: %s", request.url.path, redact_text(str(exc)))
                return self.message(request, 503, "Redis unavailable", redact_text(str(exc)))
            except HTTPException as exc:  # (an unreadable form)
                return self.message(request, exc.status_code, "Bad request", str(exc.detail))
            except Exception as exc:  # the last resort: the detail goes to the log only
                _failed(request, exc)
                text = "The dashboard could not answer this request; its log says why."
                return self.message(request, 500, "Internal error", text)

        async def checked(request: Request) -> Response:
            response = await endpoint(request)
            if request.method == "POST" and response.status_code >= 400:
                # (a refused action is worth a line too: the values as repr, one line)
                log.warning(
                    "dashboard: %s %r refused (%d) (from %s)",
                    request.method,
                    request.url.path,
                    response.status_code,
                    self._client(request),
                )
            return response

        return checked

    def _api(self, fn: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)
            except Problem as p:
                return _json({"error": p.text}, p.status)
            except InvalidInput as exc:
                return _json({"error": redact_text(str(exc))}, 400)
            except JanusError as exc:
                return _json({"error": redact_text(str(exc))}, 503)
            except Exception as exc:  # the last resort: the detail goes to the log only
                _failed(request, exc)
                return _json({"error": "internal error (see the dashboard's log)"}, 500)

        return endpoint

    # -- rendering ------------------------------------------------------------------------

    def render(
        self, request: Request, template: str, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        session = self.session(request)
        fresh = False
        if session is not None:  # signed in: the token is bound to the session
            csrf = self.signer.session_csrf(session)
        else:  # the sign-in form, or no --auth-token: a signed double-submit cookie
            given = _cookie(request, security.CSRF_COOKIE)
            fresh = given is None or not self.signer.csrf_valid(given)
            csrf = self.signer.new_csrf() if fresh or given is None else given
        flash_cookie = _cookie(request, security.FLASH_COOKIE)
        flash = self.signer.unseal(flash_cookie)
        # Which Redis and prefix: only for those who may see the pages (not on the sign-in
        # page of a dashboard behind a token).
        known = self.authorized(request)
        shared = {
            "redis": redact(self.config.redis_url) if known else "",
            "prefix": self.config.prefix if known else "",
            "read_only": self.config.read_only,
            "signed_in": self.config.auth_token is not None,
            "csrf": csrf,
            "flash": views.short(unquote(flash), 400) if flash else None,
            "refresh_ms": self.config.refresh_ms,
            "live": None,
        }
        html = self.templates.get_template(template).render({**shared, **context})
        response = HTMLResponse(html, status_code=status)
        if fresh:
            self._cookie(response, request, security.CSRF_COOKIE, csrf)
        if flash_cookie:
            _drop_cookie(response, request, security.FLASH_COOKIE)
        return response

    def message(self, request: Request, status: int, title: str, text: str) -> HTMLResponse:
        return self.render(request, "message.html", status=status, title=title, text=text)

    @staticmethod
    def _cookie(
        response: Response, request: Request, name: str, value: str, max_age: int | None = None
    ) -> None:
        https = request.url.scheme == "https"
        response.set_cookie(
            security.cookie_name(name, https),  # __Host- over https (Secure, no Domain)
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="strict",
            secure=https,
        )

    def session(self, request: Request) -> str | None:
        """The request's session id, when it holds a valid one (with --auth-token)."""
        if self.config.auth_token is None:
            return None
        sid = _cookie(request, security.AUTH_COOKIE)
        return sid if self.sessions.valid(sid) else None

    def authorized(self, request: Request) -> bool:
        """May the request in: no token, the token as a bearer header, or a session."""
        return security.authorized(
            self.config.auth_token,
            request.headers.get("authorization"),
            self.session(request) is not None,
        )

    def done(self, request: Request, text: str, back: str) -> Response:
        """After an action: back to the page it came from, with one line saying what was
        done (a short-lived cookie, so a reload shows the page, not the action again)."""
        response = RedirectResponse(back, status_code=303)
        flash = self.signer.seal(quote(views.short(text, 400)))  # (signed: only we set it)
        self._cookie(response, request, security.FLASH_COOKIE, flash, 60)
        return response

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a (blocking) client call in a worker thread."""
        return await run_in_threadpool(fn, *args, **kwargs)

    # -- reads ------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return self.jn.store.time_us() // 1000

    def _rates(self, dep: str, now_ms: int) -> dict[str, float | None]:
        """Read the counters (one more sample of the dependency's history): the rates."""
        counts = self.jn.counters(dep)
        with self._lock:
            history = self._histories.get(dep)
            if history is None:
                if len(self._histories) >= MAX_HISTORIES:
                    self._histories.pop(next(iter(self._histories)))
                history = self._histories[dep] = views.CounterHistory()
            history.add(now_ms, counts)
            return history.rates()

    def _series(self, dep: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        with self._lock:
            history = self._histories.get(dep)
            if history is None:
                return [], []
            return history.series("started_cost"), history.series("failed")

    def _known(self, dep: str) -> str:
        try:
            check_dependency(dep)
        except InvalidInput:
            text = f"{views.short(dep)!r} is not a dependency name"
            raise Problem(404, "Unknown dependency", text) from None
        return dep

    def overview_data(self, page: int) -> dict[str, Any]:
        now_ms = self._now_ms()
        deps = self.jn.store.dependencies()
        pg = views.page_of(len(deps), page, self.config.per_page)
        rows = []
        for dep in deps[pg.first : pg.last]:
            st = self.jn.status(dep, top=1)
            fields = self.jn.store.policy_fields(dep)
            rates = self._rates(dep, now_ms)
            rows.append(views.overview_row(st, fields, rates, now_ms))
        return {"now_ms": now_ms, "rows": rows, "page": pg}

    def dependency_data(self, dep: str, top: int) -> dict[str, Any]:
        now_ms = self._now_ms()
        st = self.jn.status(dep, top=top)
        if st.policy_version is None:
            raise Problem(
                404,
                "Unknown dependency",
                f"{dep!r} has no applied policy under prefix {self.config.prefix!r}",
            )
        fields = self.jn.store.policy_fields(dep)
        rates = self._rates(dep, now_ms)
        statuses = {t.scope: self.jn.scope_status(dep, t.scope) for t in st.top_scopes}
        events = self.jn.events(dep, last=EVENTS_SHOWN)
        started, failed = self._series(dep)
        rate = views.rate_per_s(int(fields.get("interval_us", "0") or 0))
        return {
            "now_ms": now_ms,
            "st": st,
            "facts": views.dependency_facts(st, fields, rates, now_ms),
            "level": views.level(st),
            "scopes": views.scope_rows(st.top_scopes, statuses, now_ms),
            "events": views.event_rows(events, now_ms),
            "chart": views.chart(started, failed, rate, now_ms),
        }

    # -- pages ------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        page = _int(request.query_params.get("page"), 1)
        data = await self.call(self.overview_data, page)
        keys = [r.dependency for r in data["rows"]]
        return self.render(
            request,
            "overview.html",
            title="Overview",
            live=f"/api/overview?page={data['page'].number}",
            keys=json.dumps(keys, separators=(",", ":")),
            now=views.clock(data["now_ms"]),
            **data,
        )

    async def overview_json(self, request: Request) -> Response:
        data = await self.call(self.overview_data, _int(request.query_params.get("page"), 1))
        values: dict[str, str] = {}
        levels = {}
        for row in data["rows"]:
            for name, value in dataclasses.asdict(row).items():
                if name not in ("dependency", "level"):
                    values[f"{row.dependency}.{name}"] = value
            levels[row.dependency] = row.level
        return _json(
            {
                "now": views.clock(data["now_ms"]),
                "keys": [r.dependency for r in data["rows"]],
                "values": values,
                "levels": levels,
            }
        )

    def _top(self, request: Request) -> int:
        top = _int(request.query_params.get("top"), DEFAULT_TOP)
        return top if top in TOP_CHOICES else DEFAULT_TOP

    async def dependency(self, request: Request) -> Response:
        dep = self._known(request.path_params["dep"])
        top = self._top(request)
        data = await self.call(self.dependency_data, dep, top)
        return self.render(
            request,
            "dependency.html",
            title=dep,
            dep=dep,
            top=top,
            top_choices=TOP_CHOICES,
            pause_choices=views.PAUSE_CHOICES,
            live=f"/api/d/{dep}?top={top}",
            now=views.clock(data["now_ms"]),
            **data,
        )

    async def dependency_json(self, request: Request) -> Response:
        dep = self._known(request.path_params["dep"])
        data = await self.call(self.dependency_data, dep, self._top(request))
        chart: views.Chart = data["chart"]
        values = {f.key: f.value for f in data["facts"]}
        values.update(chart_top=chart.top, chart_latest=chart.latest, chart_rate=chart.rate)
        scopes: list[list[object]] = []
        for s in data["scopes"]:
            link = {"text": s.name, "href": f"/d/{dep}/scope?name={quote(s.scope, safe='')}"}
            cells = (s.waiting_jobs, s.waiting_cost, s.place, s.weight, s.share, s.quota)
            scopes.append([link, *cells, s.quota_resets, s.paused])
        events = [[e.at, e.kind, e.fields] for e in data["events"]]
        return _json(
            {
                "now": views.clock(data["now_ms"]),
                "values": values,
                "levels": {dep: data["level"]},
                "lists": {"scopes": scopes, "events": events},
                "chart": dataclasses.asdict(chart),
            }
        )

    async def scope(self, request: Request) -> Response:
        dep = self._known(request.path_params["dep"])
        name = request.query_params.get("name", "")
        if not name:
            raise Problem(400, "Bad request", "give a scope name (?name=...)")
        check_user_name("scope", name)

        def read() -> dict[str, Any]:
            now_ms = self._now_ms()
            st = self.jn.scope_status(dep, name)
            held = self.jn.scope_held_until(dep, name)
            return {"now_ms": now_ms, "facts": views.scope_facts(st, held, now_ms)}

        data = await self.call(read)
        return self.render(
            request,
            "scope.html",
            title=f"{dep}: {views.short(name)}",
            dep=dep,
            scope=name,
            pause_choices=views.PAUSE_CHOICES,
            now=views.clock(data["now_ms"]),
            **data,
        )

    async def dead_letters(self, request: Request) -> Response:
        dep = self._known(request.path_params["dep"])
        flt = views.dead_letter_filter(dict(request.query_params))
        cursor = request.query_params.get("cursor") or None
        if cursor is not None and not _entry_id(cursor):
            raise Problem(400, "Bad request", f"{views.short(cursor)!r} is not a page cursor")

        def read() -> dict[str, Any]:
            now_ms = self._now_ms()
            st = self.jn.status(dep)
            if st.policy_version is None and not st.dead_letters:
                raise Problem(404, "Unknown dependency", f"{dep!r} has no applied policy")
            since, until = flt.bounds(now_ms)
            letters, next_cursor, read_n = self.jn.dead_letter_page(
                dep,
                cursor=cursor,
                newest_first=not flt.oldest_first,
                scope=flt.scope,
                reason=flt.reason,
                since_ms=since,
                until_ms=until,
                limit=self.config.per_page,
            )
            return {
                "now_ms": now_ms,
                "total": st.dead_letters,
                "rows": views.dead_letter_rows(letters, now_ms),
                "next_cursor": next_cursor,
                "scanned": read_n,
                "short_page": next_cursor is not None and len(letters) < self.config.per_page,
                "reasons": views.reasons(self.jn.counters(dep)),
            }

        data = await self.call(read)
        query = flt.query()
        return self.render(
            request,
            "dead_letters.html",
            title=f"{dep}: dead letters",
            dep=dep,
            flt=flt,
            query=query,
            form_fields=flt.form_fields(),
            action_scan=ACTION_SCAN,
            first_page=bool(cursor),
            next_query=urlencode({**query, "cursor": data["next_cursor"] or ""}),
            filter_query=urlencode(query),
            now=views.clock(data["now_ms"]),
            **data,
        )

    async def dead_letter(self, request: Request) -> Response:
        dep = self._known(request.path_params["dep"])
        entry = request.path_params["entry"]

        def read() -> dict[str, Any]:
            now_ms = self._now_ms()
            found = self.jn.dead_letters_by_id(dep, [entry])
            if not found:
                raise Problem(404, "No such dead letter", f"{dep!r} has no dead letter {entry!r}")
            d = found[0]
            return {
                "now_ms": now_ms,
                "letter": d,
                "facts": views.dead_letter_facts(d, now_ms),
                "preview": views.payload_preview(d.payload),
                "history": views.history_rows(d.history, now_ms),
            }

        data = await self.call(read)
        return self.render(
            request,
            "dead_letter.html",
            title=f"{dep}: dead letter {entry}",
            dep=dep,
            now=views.clock(data["now_ms"]),
            **data,
        )

    async def job(self, request: Request) -> Response:
        dep = request.query_params.get("dep", "")
        job_id = request.query_params.get("id", "")

        def read() -> dict[str, Any]:
            now_ms = self._now_ms()
            out: dict[str, Any] = {"now_ms": now_ms, "deps": self.jn.store.dependencies()}
            out.update(info=None, facts=[], preview=None, history=[], looked_up=False)
            if dep and job_id:
                self._known(dep)
                info = self.jn.job(dep, job_id)
                out["looked_up"] = True
                if info is not None:
                    out.update(
                        info=info,
                        facts=views.job_facts(info, now_ms),
                        preview=views.payload_preview(info.payload),
                        history=views.history_rows(info.history, now_ms),
                    )
            return out

        data = await self.call(read)
        status = 404 if data["looked_up"] and data["info"] is None else 200
        return self.render(
            request,
            "job.html",
            status=status,
            title="Job lookup",
            dep=dep,
            job_id=job_id,
            now=views.clock(data["now_ms"]),
            **data,
        )

    async def healthz(self, request: Request) -> Response:
        try:
            await self.call(self._now_ms)
        except Exception as exc:  # (public: the caller learns nothing but "not ok")
            log.warning("dashboard: /healthz: %s", redact_text(str(exc)))
            return _json({"ok": False}, 503)
        return _json({"ok": True})

    # -- actions ----------------------------------------------------------------------------

    async def _form(self, request: Request) -> Mapping[str, Any]:
        """The posted form, after the checks every action passes: refused whole in
        read-only mode (before the body is read), and without a valid CSRF token (nothing is
        read or written)."""
        if self.config.read_only:
            raise Problem(
                403,
                "Read-only dashboard",
                "This dashboard was started with --read-only: actions are refused. "
                "Nothing was changed.",
            )
        form = await _read_form(request, MAX_FIELDS)
        self._check_csrf(request, form)
        return form

    def _check_csrf(
        self, request: Request, form: Mapping[str, Any], *, anonymous_ok: bool = False
    ) -> None:
        """A signed-in browser's form carries its session's token (one minted for anyone
        else does not do); any other, the signed double-submit cookie's (``anonymous_ok``:
        either, for signing in and out)."""
        value = form.get(security.CSRF_FIELD)
        field = value if isinstance(value, str) else None
        session = self.session(request)
        if session is not None and self.signer.session_csrf_ok(session, field):
            return
        cookie = _cookie(request, security.CSRF_COOKIE)
        if (session is None or anonymous_ok) and self.signer.csrf_ok(cookie, field):
            return
        raise Problem(
            403,
            "CSRF check failed",
            "The form's CSRF token is missing or does not match this browser's: the "
            "request was refused and nothing was changed. Reload the page and try again.",
        )

    def confirm(
        self,
        request: Request,
        *,
        title: str,
        text: str,
        action: str,
        fields: Sequence[tuple[str, str]],
        back: str,
        danger: bool = False,
    ) -> Response:
        return self.render(
            request,
            "confirm.html",
            title=title,
            text=text,
            action=action,
            fields=fields,
            back=back,
            danger=danger,
        )

    @staticmethod
    def _client(request: Request) -> str:
        return request.client.host if request.client else "?"

    async def pause(self, request: Request) -> Response:
        return await self._pause_or_resume(request, resume=False)

    async def resume(self, request: Request) -> Response:
        return await self._pause_or_resume(request, resume=True)

    async def _pause_or_resume(self, request: Request, *, resume: bool) -> Response:
        dep = self._known(request.path_params["dep"])
        form = await self._form(request)
        scope = _text(form, "scope") or None
        if scope is not None:
            check_user_name("scope", scope)
        for_text = _field(form, "for")
        try:
            for_s = None if resume else views.pause_for_s(for_text)
        except ValueError as exc:
            raise Problem(400, "Bad pause length", str(exc)) from None
        target = views.target_text(dep, scope)
        back = f"/d/{dep}" if scope is None else f"/d/{dep}/scope?name={quote(scope, safe='')}"
        verb = "resume" if resume else "pause"
        if _field(form, "confirm") != "yes":
            if resume:
                text = (
                    f"Resume {target}: releases start again (a Retry-After pause still ends "
                    "when the dependency said it would)."
                )
            else:
                length = "until resumed" if for_s is None else f"for {for_text.strip()}"
                text = (
                    f"Pause {target} {length}: nothing is released; waiting work stays, "
                    "running attempts run on."
                )
            fields = [("for", for_text)]
            if scope is not None:  # (hex: a browser rewrites line breaks in a field's value)
                fields.append(("scope_hex", scope.encode().hex()))
            return self.confirm(
                request,
                title=f"{verb.capitalize()} {target}?",
                text=text,
                action=f"/d/{dep}/{verb}",
                fields=fields,
                back=back,
            )
        if resume:
            result = await self.call(self.jn.resume, dep, scope=scope)
            said = "resumed" if result.status == "resumed" else "was not paused by hand"
        else:
            result = await self.call(self.jn.pause, dep, for_s=for_s, scope=scope)
            said = "paused " + ("until resumed" if for_s is None else f"for {for_text.strip()}")
        log.info("dashboard: %s %s: %s (from %s)", verb, target, said, self._client(request))
        return self.done(request, f"{target}: {said}", back)

    async def replay(self, request: Request) -> Response:
        return await self._replay_or_purge(request, purge=False)

    async def purge(self, request: Request) -> Response:
        return await self._replay_or_purge(request, purge=True)

    async def _replay_or_purge(self, request: Request, *, purge: bool) -> Response:
        dep = self._known(request.path_params["dep"])
        form = await self._form(request)
        entries = [e for e in _list(form, "entry") if e]
        if len(entries) > MAX_ENTRIES:
            raise Problem(400, "Too many selected", f"Select at most {MAX_ENTRIES:,} at once.")
        every = _field(form, "all") == "1"
        params = {k: _field(form, k) for k in ("reason", "newer", "older")}
        flt = views.dead_letter_filter({**params, "scope": _text(form, "scope")})
        if flt.errors:
            raise Problem(400, "Bad filter", "; ".join(flt.errors))
        if not entries and not every:
            raise Problem(400, "Nothing selected", "Select at least one dead letter.")
        back = f"/d/{dep}/dead" + (f"?{urlencode(flt.query())}" if flt.query() else "")
        verb = "purge" if purge else "replay"
        what = _selection_text(entries, every, flt)
        confirmed = _field(form, "confirm") == "yes"
        counted = _counted(form) if every and confirmed else None

        def select() -> tuple[list[DeadLetter], list[tuple[str, str]], str]:
            """The letters; for a confirm page, the fields that pin them (every match: the
            absolute bounds, the newest entry counted, the count) and a note."""
            if not every:
                return self.jn.dead_letters_by_id(dep, entries), [], ""
            if counted is not None:  # confirmed: exactly what the confirm page counted
                since, until, through, _ = counted
                if through is None:
                    return [], [], ""
                return self._every_match(dep, flt, since, until, through)[0], [], ""
            since, until = flt.bounds(self._now_ms())
            letters, capped = self._every_match(dep, flt, since, until, None)
            pin = [
                ("since_ms", "" if since is None else str(since)),
                ("until_ms", "" if until is None else str(until)),
                ("through", letters[-1].entry_id if letters else ""),
                ("count", str(len(letters))),
            ]
            note = ""
            if capped:
                more = "narrow the filter, or repeat" if purge else "narrow the filter (by age)"
                note = (
                    f" Only the oldest {ACTION_SCAN:,} dead letters of the range were read (at "
                    f"most {ACTION_SCAN:,} per action): {more} for the rest."
                )
            return letters, pin, note

        letters, pin, note = await self.call(select)
        if not confirmed:
            if purge:
                text = (
                    f"Delete {len(letters):,} dead letter(s) of {dep} for good ({what}). "
                    "This cannot be undone."
                )
            else:
                text = (
                    f"Send {len(letters):,} dead-lettered job(s) of {dep} back through "
                    f"admission ({what}): attempts start again, their history is kept, and "
                    "the dead letters stay until purged."
                )
            fields = [("entry", e) for e in entries]
            if every:
                fields += [("all", "1"), *flt.form_fields(), *pin]
            return self.confirm(
                request,
                title=f"{verb.capitalize()} {len(letters):,} dead letter(s)?",
                text=text + note,
                action=f"/d/{dep}/dead/{verb}",
                fields=fields,
                back=back,
                danger=purge,
            )
        if counted is not None and len(letters) != counted[3]:
            raise Problem(
                409,
                "The selection changed",
                f"The confirm page counted {counted[3]:,} dead letter(s) and {len(letters):,} "
                "of them are left now (purged meanwhile?): nothing was changed. Go back and "
                "confirm again.",
            )
        if not letters:
            said = f"nothing to {verb}"
        elif purge:
            n = await self.call(self.jn.purge, dep, letters)
            said = f"purged {n:,} dead letter(s)"
        else:
            result = await self.call(self.jn.replay, dep, letters)
            said = "replay: " + views.replay_summary(result)
        # Replays and purges write no event in Redis (the functions do not log them): this
        # log line is their record (user text in it as repr: one line, nothing forged).
        ids = ",".join(d.entry_id for d in letters[:20]) + ("..." if len(letters) > 20 else "")
        client = self._client(request)
        what = _selection_text(entries, every, flt, for_log=True)
        log.info(
            "dashboard: %s %s: %s (%s; entries %s; from %s)", verb, dep, said, what, ids, client
        )
        return self.done(request, f"{dep}: {said}", back)

    def _every_match(
        self,
        dep: str,
        flt: views.DeadLetterFilter,
        since: int | None,
        until: int | None,
        through: str | None,
    ) -> tuple[list[DeadLetter], bool]:
        """The dead letters the filter selects between ``since`` and ``until`` (Redis ms)
        and up to the entry ``through`` (inclusive), oldest first, reading at most
        :data:`ACTION_SCAN` entries (paged: never the whole stream). Returns (the letters,
        whether the read stopped at that bound with more left)."""
        if through is not None:  # (entries only grow: nothing newer than it was counted)
            upto = views.entry_ms(through) + 1
            until = upto if until is None else min(until, upto)
        out: list[DeadLetter] = []
        read, cursor = 0, None
        while read < ACTION_SCAN:
            letters, cursor, n = self.jn.dead_letter_page(
                dep,
                cursor=cursor,
                newest_first=False,
                scope=flt.scope,
                reason=flt.reason,
                since_ms=since,
                until_ms=until,
                limit=1000,
                scan=ACTION_SCAN - read,
            )
            read += n
            out.extend(letters)
            if cursor is None or n == 0:
                break
        if through is not None:
            last = _id_key(through)
            out = [d for d in out if _id_key(d.entry_id) <= last]
        return out, cursor is not None

    # -- signing in ------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        token = self.config.auth_token
        if token is None:
            return RedirectResponse("/", status_code=303)
        error = None
        if request.method == "POST":
            form = await _read_form(request, 10)
            self._check_csrf(request, form, anonymous_ok=True)
            given = _field(form, "token")
            if given and security.bearer_ok(token, f"Bearer {given}"):
                response = RedirectResponse(_safe_next(_field(form, "next")), status_code=303)
                self.sessions.end(_cookie(request, security.AUTH_COOKIE))  # (a new one)
                session = self.sessions.new()
                self._cookie(response, request, security.AUTH_COOKIE, session, security.SESSION_S)
                log.info("dashboard: signed in (from %s)", self._client(request))
                return response
            log.warning("dashboard: a wrong token was given (from %s)", self._client(request))
            error = "That is not the dashboard's token."
        return self.render(
            request,
            "login.html",
            status=401 if error else 200,
            title="Sign in",
            error=error,
            next=_safe_next(request.query_params.get("next", "")),
        )

    async def logout(self, request: Request) -> Response:
        form = await _read_form(request, 10)
        self._check_csrf(request, form, anonymous_ok=True)
        self.sessions.end(_cookie(request, security.AUTH_COOKIE))  # every copy of it, too
        response = RedirectResponse("/login", status_code=303)
        _drop_cookie(response, request, security.AUTH_COOKIE)
        return response


class _Guard(BaseHTTPMiddleware):
    """Before every request: the Host check, the auth token, a POST's Origin. After: the
    security headers (a strict Content-Security-Policy: no inline script, no other site)."""

    def __init__(self, app: ASGIApp, dashboard: Dashboard) -> None:
        super().__init__(app)
        self.dashboard = dashboard

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        config = self.dashboard.config
        host = request.headers.get("host", "")
        path = request.url.path
        response: Response
        passed = False
        if not security.host_allowed(host, config.allowed_hosts):
            response = _plain(f"host {views.short(host)!r} is not one this dashboard serves", 421)
        elif not _public(path) and not self.dashboard.authorized(request):
            if path.startswith("/api/") or request.method != "GET":
                response = _json({"error": "sign in first (the dashboard's auth token)"}, 401)
            else:
                response = RedirectResponse(f"/login?next={quote(path, safe='/')}", status_code=303)
        elif request.method == "POST" and not security.from_here(
            request.headers.get("origin"), request.headers.get("referer"), host, request.url.scheme
        ):
            response = _plain("a form from another site: refused, nothing was changed", 403)
        else:
            response = await call_next(request)
            passed = True
        if request.method == "POST" and not passed:  # (the app logs its own refusals)
            log.warning(
                "dashboard: POST %r refused (%d) (from %s)",
                path,
                response.status_code,
                request.client.host if request.client else "?",
            )
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not path.startswith("/static/"):
            response.headers["cache-control"] = "no-store"
        return response


SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # (same-origin, not no-referrer: with no-referrer a browser's form POST says Origin:
    # null, which the Origin check must refuse)
    "referrer-policy": "same-origin",
}


#: A stream entry id (each part below 2**64, as Redis takes them).
_ENTRY_ID = re.compile(r"(\d{1,20})-(\d{1,20})")


def _entry_id(text: str) -> bool:
    m = _ENTRY_ID.fullmatch(text)
    return m is not None and all(int(part) < 2**64 for part in m.groups())


def _id_key(entry_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in entry_id.split("-"))


def _cookie(request: Request, name: str) -> str | None:
    """A cookie of ours (``__Host-`` prefixed over https)."""
    return request.cookies.get(security.cookie_name(name, request.url.scheme == "https"))


def _drop_cookie(response: Response, request: Request, name: str) -> None:
    https = request.url.scheme == "https"
    response.delete_cookie(
        security.cookie_name(name, https), path="/", secure=https, httponly=True, samesite="strict"
    )


def _failed(request: Request, exc: Exception) -> None:
    """Log an unexpected error (its traceback, redacted) for a 500 that shows nothing."""
    detail = redact_text("".join(traceback.format_exception(exc)))
    log.error("dashboard: %s %r failed: %s", request.method, request.url.path, detail)


async def _read_form(request: Request, max_fields: int) -> FormData:
    """The posted form, read up to :data:`MAX_BODY` bytes (a 413 beyond) before parsing,
    with at most ``max_fields`` fields and no files."""
    too_big = Problem(
        413, "Request too large", f"A form is at most {MAX_BODY:,} bytes: nothing was changed."
    )
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise too_big
        chunks.append(chunk)
    body = b"".join(chunks)
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return await Request(request.scope, receive).form(max_files=0, max_fields=max_fields)


def _text(form: Mapping[str, Any], name: str) -> str:
    """A user string a form carries: hex-encoded in ``<name>_hex`` (our forms: a browser
    rewrites the line breaks of a field's value), else plain in ``name`` (scripts)."""
    encoded = _field(form, name + "_hex")
    if not encoded:
        return _field(form, name)
    try:
        return bytes.fromhex(encoded).decode("utf-8")
    except ValueError:
        raise Problem(400, "Bad request", f"{name}_hex is not hex-encoded UTF-8") from None


def _counted(form: Mapping[str, Any]) -> tuple[int | None, int | None, str | None, int]:
    """What the confirm page of an "every match" action counted: (since ms, until ms, the
    newest entry id counted or None, how many)."""
    refused = Problem(
        400,
        "Not confirmed",
        "Replay or purge every match from its confirm page (its form carries what it "
        "counted): nothing was changed.",
    )
    if "count" not in form:
        raise refused
    ms: list[int | None] = []
    for name in ("since_ms", "until_ms"):
        text = _field(form, name)
        if text and not (text.isdigit() and len(text) <= 20 and int(text) < 2**64):
            raise refused
        ms.append(int(text) if text else None)
    through = _field(form, "through") or None
    count = _field(form, "count")
    if (through is not None and not _entry_id(through)) or not (
        count.isdigit() and len(count) <= 6 and int(count) <= ACTION_SCAN
    ):
        raise refused
    return ms[0], ms[1], through, int(count)


def _public(path: str) -> bool:
    return path in ("/healthz", "/login", "/favicon.ico") or path.startswith("/static/")


async def _no_icon(request: Request) -> Response:
    return Response(status_code=204)


def _json(data: object, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def _plain(text: str, status: int) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain")


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _list(form: Mapping[str, Any], name: str) -> list[str]:
    getlist = getattr(form, "getlist", None)
    values = getlist(name) if getlist is not None else [form.get(name)]
    return [v for v in values if isinstance(v, str)]


def _safe_next(path: str) -> str:
    """Where to go after signing in: a path of this site only (never ``//host``)."""
    if path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"


def _selection_text(
    entries: Sequence[str], every: bool, flt: views.DeadLetterFilter, *, for_log: bool = False
) -> str:
    """What an action selects, for its confirm page (or, ``for_log``, its log line: the
    values as repr, so a line break or a quote in them cannot forge another line)."""
    if not every:
        return f"{len(entries)} selected"
    items = [(k, v) for k, v in flt.query().items() if k != "order"]
    parts = [f"{k}={v!r}" if for_log else f"{k}={views.short(v, 40)}" for k, v in items]
    return "every dead letter" + (" matching " + ", ".join(parts) if parts else "")


def create_app(jn: Janus, config: DashboardConfig) -> Starlette:
    """The dashboard as an ASGI app over ``jn`` (the caller closes ``jn``)."""
    return Dashboard(jn, config).app()


def serve(app: Starlette, host: str, port: int) -> None:
    """Run ``app`` with uvicorn until SIGINT/SIGTERM (logging through Janus's handlers)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_config=None, access_log=True, server_header=False)
