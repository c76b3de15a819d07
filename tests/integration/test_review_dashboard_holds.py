"""Security review of the dashboard: the attacks that did NOT work (these tests pass; they
pin down what held up, next to test_review_dashboard_findings.py which fails)."""

from __future__ import annotations

import ast
import asyncio
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from janus.cli import main
from janus.client import Janus, Job
from janus.dashboard import security
from janus.dashboard.app import DashboardConfig, create_app
from janus.testing import free_port

from tests.helpers import make_janus, raw_client, take, unchanged

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

BODY = """
pay:
  rate: 100000
  burst: 1000
  max_wait: 1h
  retry: {max_attempts: 1, budget: false}
"""
TOKEN = "t0ken-for-the-dashboard-review"
DASH = Path(__file__).resolve().parents[2] / "src" / "janus" / "dashboard"
EVIL = "\"'><svg onload=alert(1)></textarea></pre><script>alert(2)</script>"


@pytest.fixture
def jn(standalone_url: str, prefix: str) -> Iterator[Janus]:
    jn = make_janus(standalone_url, prefix, BODY)
    yield jn
    jn.close()


def _web(jn: Janus, url: str, prefix: str, **config: Any) -> TestClient:
    app = create_app(jn, DashboardConfig(redis_url=url, prefix=prefix, **config))
    return TestClient(app, base_url="http://127.0.0.1:8080", follow_redirects=False)


def test_hostile_strings_and_invalid_utf8_are_text_on_every_page_and_api(
    jn: Janus, standalone_url: str, prefix: str
) -> None:
    """HTML in a scope, job id, error kind/detail, reason, history and payload; a raw
    dead letter with invalid UTF-8 and control characters in every field: every page 200,
    nothing unescaped, binary payloads as hex."""
    jn.submit_many("pay", [Job(scope=EVIL, job_id=EVIL, payload=EVIL)])
    w = jn.worker("pay", group="g", consumer="w1")
    (job,) = take(jn, "pay")
    w.report([w.failed(job, "http_500", detail=EVIL)])
    jn.pause("pay", scope=EVIL)  # an event whose fields hold the scope
    jn.submit_many("pay", [Job(scope=EVIL + "w", job_id="waiting", payload=EVIL)])
    r: Any = raw_client(standalone_url)
    bad = b"\xff\xfe<svg onload=alert(3)>\x1b[2J\x00"
    entry = r.xadd(
        f"{prefix}:{{pay}}:dead",
        {
            "id": bad,
            "scope": bad,
            "cost": "1",
            "reason": bad,
            "attempts": "1",
            "error": bad,
            "dead_ms": "1",
            "payload": bad,
            "history": json.dumps([{"outcome": EVIL, "error": EVIL, "detail": EVIL, "x": EVIL}]),
        },
    ).decode()
    web = _web(jn, standalone_url, prefix)
    letters = [d.entry_id for d in jn.dead_letters("pay")]
    pages = [
        "/",
        "/d/pay",
        "/d/pay/dead",
        f"/d/pay/dead/{entry}",
        *(f"/d/pay/dead/{e}" for e in letters),
    ]
    pages += ["/job?dep=pay&id=" + EVIL, "/d/pay/scope?name=" + EVIL, "/d/pay/dead?scope=" + EVIL]
    pages += ["/d/pay/dead?reason=" + EVIL, "/d/pay/dead?newer=" + EVIL]
    for path in pages:
        response = (
            web.get(path)
            if "?" not in path
            else web.get(path.split("?")[0], params=dict([path.split("?", 1)[1].split("=", 1)]))
        )
        assert response.status_code in (200, 404), (path, response.status_code)
        body = response.text
        assert "<svg onload" not in body and "<script>alert" not in body, path
    assert "binary: shown as hex" in web.get(f"/d/pay/dead/{entry}").text
    api = web.get("/api/d/pay").json()
    assert EVIL + "w" in [row[0]["text"] for row in api["lists"]["scopes"]]
    assert any(EVIL in e[2] for e in api["lists"]["events"])  # text, set with textContent
    assert all(row[0]["href"].startswith("/d/pay/scope?name=") for row in api["lists"]["scopes"])


def test_the_live_refresh_and_the_templates_never_make_markup() -> None:
    """dashboard.js writes only textContent / setAttribute (hrefs built by the server);
    no template marks anything safe; no inline script or handler (the CSP forbids them)."""
    js = (DASH / "static" / "dashboard.js").read_text()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setTimeout("',
        "location.href =",
    ):
        assert sink not in js, sink
    for template in (DASH / "templates").glob("*.html"):
        text = template.read_text()
        assert "|safe" not in text and "autoescape false" not in text, template.name
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert not re.search(r"\son[a-z]+=", text) and "style=" not in text, template.name
        assert "javascript:" not in text, template.name


def test_every_route_and_method_needs_the_token(
    jn: Janus, standalone_url: str, prefix: str
) -> None:
    """Without the token: pages redirect to /login, everything else is a 401, nothing is
    read from Redis; only /healthz, /login, /favicon.ico and /static/* are public."""
    web = _web(jn, standalone_url, prefix, auth_token=TOKEN)
    paths = [
        "/",
        "/api/overview",
        "/d/pay",
        "/api/d/pay",
        "/d/pay/scope?name=a",
        "/d/pay/dead",
        "/d/pay/dead/1-0",
        "/job?dep=pay&id=x",
        "/d/pay/pause",
        "/d/pay/resume",
        "/d/pay/dead/replay",
        "/d/pay/dead/purge",
        "/logout",
        "/api/overview/",
        "/Login",
        "/login/",
        "/healthz/",
        "/static",
    ]
    with unchanged(raw_client(standalone_url), prefix):
        for path in paths:
            for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
                response = web.request(
                    method, path, data={"confirm": "yes"} if method == "POST" else None
                )
                assert response.status_code in (303, 401), (method, path, response.status_code)
                assert "pay" not in response.text or response.status_code == 303, (method, path)
            for bad in (
                "Bearer",
                "Bearer ",
                f"Basic {TOKEN}",
                f"Bearer {TOKEN}x",
                f"Bearer {TOKEN[:-1]}",
            ):
                assert web.get(path, headers={"authorization": bad}).status_code in (303, 401)
        cookie = _web(jn, standalone_url, prefix, auth_token=TOKEN)
        cookie.cookies.set(security.AUTH_COOKIE, TOKEN)  # the token itself is not a session
        assert cookie.get("/").status_code == 303
    app = create_app(jn, DashboardConfig(redis_url=standalone_url, prefix=prefix, auth_token=TOKEN))
    for raw in (
        "/static/../api/overview",
        "/static/%2e%2e/api/overview",
        "/healthz/../api/overview",
        "//api/overview",
        "/static/../templates/base.html",
        "/static/../app.py",
    ):
        status, body = asyncio.run(_asgi(app, raw))
        assert status in (303, 401, 404) and b"pay" not in body, (raw, status)


async def _asgi(app: Any, path: str) -> tuple[int, bytes]:
    """A request with an un-normalised path (what a raw socket can send)."""
    out: dict[str, Any] = {"body": b""}
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8080")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return out["status"], out["body"]


@pytest.mark.parametrize(
    "given, expected",
    [
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("https://evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("evil.example", "/"),
        ("/\t/evil.example", "/%09/evil.example"),
        ("/%2F/evil.example", "/%2F/evil.example"),
        ("/d/pay?x=1", "/d/pay?x=1"),
    ],
)
def test_sign_in_never_redirects_off_the_site(
    jn: Janus, standalone_url: str, prefix: str, given: str, expected: str
) -> None:
    web = _web(jn, standalone_url, prefix, auth_token=TOKEN)
    web.get("/login")
    csrf = web.cookies.get(security.CSRF_COOKIE)
    response = web.post("/login", data={"csrf": csrf, "token": TOKEN, "next": given})
    assert response.headers["location"] == expected
    shown = web.get("/login", params={"next": given}).text
    assert 'name="next" value="/"' in shown or (given.startswith("/") and "//" not in given[:2])


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8080",
        "127.0.0.1@evil.example",
        "evil.example#@127.0.0.1",
        "127.0.0.1.nip.io",
        "localhost.evil.example",
        "localhost.",
        "",
        "0x7f000001",
    ],
)
def test_a_foreign_host_header_gets_nothing(
    jn: Janus, standalone_url: str, prefix: str, host: str
) -> None:
    web = _web(jn, standalone_url, prefix, allowed_hosts=security.loopback_hosts())
    for path in ("/", "/api/overview", "/healthz", "/login", "/static/dashboard.js"):
        response = web.get(path, headers={"host": host})
        assert response.status_code == 421 and "pay" not in response.text, (host, path)


def test_no_method_or_encoding_trick_acts(jn: Janus, standalone_url: str, prefix: str) -> None:
    """GET/PUT/PATCH/DELETE on action routes (even with confirm=yes and the token in the
    query), text/plain or JSON bodies, a method override, Origin null or another site,
    the token in a file part: nothing changes."""
    (_,) = jn.submit_many("pay", [Job(scope="a", job_id="j")])
    web = _web(jn, standalone_url, prefix)
    web.get("/d/pay")
    csrf = web.cookies.get(security.CSRF_COOKIE)
    assert csrf
    form = f"csrf={csrf}&confirm=yes&for="
    with unchanged(raw_client(standalone_url), prefix):
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            assert web.request(method, "/d/pay/pause?" + form).status_code == 405
        for ctype, body in (
            ("text/plain", form),
            ("application/json", json.dumps({"csrf": csrf, "confirm": "yes"})),
        ):
            response = web.post("/d/pay/pause", content=body, headers={"content-type": ctype})
            assert response.status_code == 403, ctype
        response = web.post("/d/pay/pause?_method=POST&" + form)  # fields in the query only
        assert response.status_code == 403
        for origin in (
            "null",
            "http://evil.example",
            "http://127.0.0.1:8081",
            "http://localhost:8080",
        ):
            response = web.post(
                "/d/pay/pause", data={"csrf": csrf, "confirm": "yes"}, headers={"origin": origin}
            )
            assert response.status_code == 403, origin
        response = web.post(
            "/d/pay/pause", data={"confirm": "yes"}, files={"csrf": ("c", csrf.encode())}
        )
        assert response.status_code in (400, 403)
        other = _web(jn, standalone_url, prefix)  # another process: another signing key
        other.get("/")
        assert (
            web.post(
                "/d/pay/pause",
                data={"csrf": other.cookies.get(security.CSRF_COOKIE), "confirm": "yes"},
            ).status_code
            == 403
        )
    assert jn.status("pay").held_until_ms is None


def test_read_only_refuses_before_anything_else(
    jn: Janus, standalone_url: str, prefix: str
) -> None:
    """--read-only: even a forged/missing CSRF token or an unknown entry id get the
    read-only 403 (no action code runs); login/logout are no Redis writes."""
    web = _web(jn, standalone_url, prefix, read_only=True)
    with unchanged(raw_client(standalone_url), prefix):
        for path in ("/d/pay/pause", "/d/pay/resume", "/d/pay/dead/replay", "/d/pay/dead/purge"):
            response = web.post(path, data={"confirm": "yes", "all": "1", "entry": "1-0"})
            assert response.status_code == 403 and "read-only" in response.text, path


def test_huge_or_negative_paging_parameters_are_clamped(
    jn: Janus, standalone_url: str, prefix: str
) -> None:
    web = _web(jn, standalone_url, prefix)
    for path in (
        "/?page=-1",
        "/?page=" + "9" * 5000,
        "/?page=1e9",
        "/api/overview?page=-5",
        "/d/pay?top=100000",
        "/d/pay?top=-1",
        "/api/d/pay?top=0",
        "/d/pay/dead?newer=1e400s",
        "/d/pay/dead?older=-5m",
        "/d/pay/dead?newer=99999999999d",
    ):
        assert web.get(path).status_code == 200, path


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_the_dashboard_never_imports_redis() -> None:
    for module in DASH.glob("*.py"):
        assert "redis" not in _imports(module), module.name


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "",
        "0",
        "127.1",
        "::ffff:127.0.0.1",
        "localhost.",
        "10.0.0.1",
        "example.com",
    ],
)
def test_the_cli_refuses_every_non_loopback_address_without_a_token(host: str) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    for env in ({}, {"JANUS_DASHBOARD_TOKEN": ""}):
        result = CliRunner().invoke(main, ["dashboard", "--host", host, "--redis", down], env=env)
        assert result.exit_code == 2 and "not a loopback address" in result.output, (host, env)
