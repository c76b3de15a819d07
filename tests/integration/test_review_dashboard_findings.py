"""Security review of the dashboard: one test per finding. Each test asserts the behaviour
the safety model (README "The dashboard") promises, so each FAILS on the code as reviewed.

Run: timeout 600 python -m pytest -q tests/integration/test_review_dashboard_*.py \
        -p no:cacheprovider -W ignore::DeprecationWarning
"""

from __future__ import annotations

import html
import logging
import re
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner

import janus.calls
import janus.dashboard.app as dashboard_app
from janus.cli import main
from janus.client import Janus, Job
from janus.dashboard import security
from janus.dashboard.app import DashboardConfig, create_app
from janus.testing import RedisServer, free_port

from tests.helpers import make_janus, raw_client, take, wait_until

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


def _web(jn: Janus, url: str, prefix: str, **config: Any) -> TestClient:
    app = create_app(jn, DashboardConfig(redis_url=url, prefix=prefix, **config))
    return TestClient(
        app,
        base_url="http://127.0.0.1:8080",
        follow_redirects=False,
        raise_server_exceptions=False,
    )


@pytest.fixture
def jn(standalone_url: str, prefix: str) -> Iterator[Janus]:
    jn = make_janus(standalone_url, prefix, BODY)
    yield jn
    jn.close()


def _dead(jn: Janus, jobs: list[Job], error: str = "http_500") -> None:
    before = len(jn.dead_letters("pay"))
    jn.submit_many("pay", jobs)
    w = jn.worker("pay", group="g", consumer="w1")

    def all_dead() -> bool:
        got = take(jn, "pay")
        if got:
            w.report([w.failed(j, error, detail="d") for j in got])
        return len(jn.dead_letters("pay")) == before + len(jobs)

    wait_until(all_dead, 30, f"{len(jobs)} dead letters")


def _csrf(web: TestClient, path: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', web.get(path).text)
    assert m is not None, path
    return m.group(1)


def _hidden_fields(page: str) -> list[tuple[str, str]]:
    """The hidden inputs of the confirm form (what the browser posts on 'Confirm')."""
    form = re.search(r'<form method="post"[^>]*id="confirm-form">(.*?)</form>', page, re.S)
    assert form is not None, page[:500]
    return [
        (html.unescape(n), html.unescape(v))
        for n, v in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', form[1])
    ]


# -- F1 (medium): "every match" reads the whole dead-letter stream ---------------------------


def test_every_match_reads_a_bounded_number_of_dead_letters(
    jn: Janus, standalone_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: "Every list is paged or a bounded sample" (a page reads at most 10,000
    entries). The dead-letter PAGE honours it, but merely opening the confirm page of
    "Purge/Replay every match" reads and parses EVERY entry (payloads included) into memory,
    and the confirmed action does it again: app.py _replay_or_purge.select() calls
    jn.dead_letters(dep, scope=, since_ms=) with no limit and filters reason/until in Python."""
    _dead(jn, [Job(scope="a", job_id="seed", payload="p")])
    r: Any = raw_client(standalone_url)
    key = f"{prefix}:{{pay}}:dead"
    ((_, fields),) = r.xrange(key)
    n = janus.calls.DEAD_LETTER_SCAN + 2000
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(key, {**fields, b"id": f"bulk{i}".encode(), b"payload": b"x" * 1024})
    pipe.execute()

    parsed = {"n": 0}
    real = janus.calls.parse_dead_letter  # type: ignore[attr-defined]

    def counting(*args: Any) -> Any:
        parsed["n"] += 1
        return real(*args)

    monkeypatch.setattr(janus.calls, "parse_dead_letter", counting)
    web = _web(jn, standalone_url, prefix)
    page = web.get("/d/pay/dead", params={"scope": "nobody"})
    assert page.status_code == 200
    assert parsed["n"] <= janus.calls.DEAD_LETTER_SCAN  # the page: bounded (holds)
    token = _csrf(web, "/d/pay/dead")
    parsed["n"] = 0
    asked = web.post("/d/pay/dead/purge", data={"csrf": token, "all": "1", "scope": "nobody"})
    assert "Purge 0 dead letter(s)?" in asked.text
    assert parsed["n"] <= janus.calls.DEAD_LETTER_SCAN, (
        f"the confirm page of 'purge every match' parsed {parsed['n']:,} dead letters "
        f"(bound: {janus.calls.DEAD_LETTER_SCAN:,})"
    )


# -- F2 (medium): the confirmed "every match" acts on more than was confirmed ----------------


def test_purge_every_match_deletes_only_what_the_confirm_page_counted(
    jn: Janus, standalone_url: str, prefix: str
) -> None:
    """The confirm page says "Delete 2 dead letter(s) ... This cannot be undone", but its
    form carries the FILTER, not the entries: the confirming POST re-runs the filter at its
    own time (relative ages slide, new dead letters match) and deletes whatever matches
    then. Here 3 dead letters that arrived while the operator read the page are purged
    too (5 deleted after confirming 2)."""
    _dead(jn, [Job(scope="a", job_id=f"old{i}") for i in range(2)])
    web = _web(jn, standalone_url, prefix)
    token = _csrf(web, "/d/pay/dead?scope=a")
    asked = web.post("/d/pay/dead/purge", data={"csrf": token, "all": "1", "scope": "a"})
    assert "Purge 2 dead letter(s)?" in asked.text
    confirmed = _hidden_fields(asked.text)
    _dead(jn, [Job(scope="a", job_id=f"new{i}") for i in range(3)])  # meanwhile
    done = web.post(
        "/d/pay/dead/purge",
        content=urlencode(confirmed),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 303
    left = sorted(d.job_id for d in jn.dead_letters("pay"))
    assert left == ["new0", "new1", "new2"], f"confirmed 2, left {left}"


# -- F4 (low/medium): a session cannot be ended -----------------------------------------------


def test_signing_out_ends_the_session(jn: Janus, standalone_url: str, prefix: str) -> None:
    """The session cookie is HMAC(token, constant) (security.py session_value): the same
    value for every browser, forever, with no expiry. /logout only asks the browser to drop
    it (app.py logout); a copy (a shared machine, a proxy log, a stolen cookie jar) stays
    valid until the token itself is changed."""
    web = _web(jn, standalone_url, prefix, auth_token=TOKEN)
    token = _csrf(web, "/login")
    assert web.post("/login", data={"csrf": token, "token": TOKEN}).status_code == 303
    stolen = web.cookies.get(security.AUTH_COOKIE)
    assert stolen
    assert web.post("/logout", data={"csrf": token}).status_code == 303
    later = _web(jn, standalone_url, prefix, auth_token=TOKEN)
    later.cookies.set(security.AUTH_COOKIE, stolen)
    assert later.get("/").status_code != 200, "the signed-out session still opens the dashboard"


def test_two_browsers_do_not_share_a_session_value(
    jn: Janus, standalone_url: str, prefix: str
) -> None:
    """Same root cause: every sign-in yields the identical cookie value."""
    values = []
    for _ in range(2):
        web = _web(jn, standalone_url, prefix, auth_token=TOKEN)
        token = _csrf(web, "/login")
        web.post("/login", data={"csrf": token, "token": TOKEN})
        values.append(web.cookies.get(security.AUTH_COOKIE))
    assert values[0] != values[1]


# -- F5 (low): raw Redis errors reach the user as HTTP 500 ------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/d/pay/dead?cursor=0-0",  # XREVRANGE: "invalid end ID for the interval"
        "/d/pay/dead?cursor=99999999999999999999-0",  # > 2**64: "Invalid stream ID"
        "/d/pay/dead/99999999999999999999-0",
    ],
)
def test_a_bad_cursor_or_entry_id_is_a_400_not_a_500(
    jn: Janus, standalone_url: str, prefix: str, path: str
) -> None:
    """client.py _STREAM_ID accepts 20-digit parts (> 2**64-1) and any cursor; Redis
    refuses them with a ResponseError that store.translate() does not map, so it is no
    JanusError and app.py _page() lets it through: Starlette's bare 500 (and a traceback in
    the log) instead of the dashboard's one-sentence 400 page."""
    _dead(jn, [Job(scope="a", job_id="d1")])
    response = _web(jn, standalone_url, prefix).get(path)
    assert response.status_code in (400, 404), (response.status_code, response.text[:100])


# -- F6 (low): CSRF tokens are bearer tokens, mintable by anyone --------------------------------


def test_a_csrf_token_minted_by_an_anonymous_visitor_does_not_act_for_a_signed_in_user(
    jn: Janus, standalone_url: str, prefix: str
) -> None:
    """security.py says "a sibling site that can set cookies still cannot make a valid one".
    It can: the public /login page hands every anonymous visitor a valid signed pair
    (the token is bound to nothing: no session, no expiry, reusable). Planted as the
    victim's janus_csrf cookie (cookie tossing from a sibling sub-domain, which SameSite
    does not stop: same site), it is accepted for the signed-in victim; only the Origin
    header is left between that and a pause. Here the POST carries no Origin (as a
    non-browser client, or a browser extension/old browser that omits it)."""
    app = create_app(jn, DashboardConfig(redis_url=standalone_url, prefix=prefix, auth_token=TOKEN))
    attacker = TestClient(app, base_url="http://127.0.0.1:8080", follow_redirects=False)
    attacker.get("/login")
    minted = attacker.cookies.get(security.CSRF_COOKIE)
    assert minted
    victim = TestClient(app, base_url="http://127.0.0.1:8080", follow_redirects=False)
    # signed in (through /login: a session is a random id of the dashboard's, not a value
    # derived from the token)
    login = _csrf(victim, "/login")
    assert victim.post("/login", data={"csrf": login, "token": TOKEN}).status_code == 303
    victim.cookies.set(security.CSRF_COOKIE, minted)  # tossed
    response = victim.post("/d/pay/pause", data={"csrf": minted, "confirm": "yes"})
    paused = jn.status("pay").held_until_ms
    jn.resume("pay")
    assert response.status_code == 403 and paused is None, "an anonymous visitor's token paused pay"


# -- F7 (low): the Redis password is printed when it holds an unencoded / ? # -----------------


@pytest.mark.parametrize("secret", ["pa/ss-w0rd", "pa?ss-w0rd", "12#ss-w0rd"])
def test_the_dashboard_command_never_prints_the_redis_password(secret: str) -> None:
    """urls.redact() trusts urlsplit's netloc: with an unencoded '/', '?' or '#' in the
    password the netloc ends early, holds no '@', and the URL comes back whole. check_url()
    and the store's "connecting to ..." message then print it (stderr: terminals, CI and
    journald logs). (redact_text's regex would have caught it; redact() does not use it.)"""
    port = free_port()
    url = f"redis://user:{secret}@127.0.0.1:{port}/0"
    result = CliRunner().invoke(main, ["dashboard", "--redis", url, "--port", str(free_port())])
    assert result.exit_code == 2
    assert secret not in result.output, result.output


# -- F8 (low): log forging through the filter fields of replay/purge ---------------------------


def test_the_action_log_line_cannot_be_forged(
    jn: Janus, standalone_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """app.py _selection_text() puts the posted filter values (scope, reason, ages: never
    validated) into the INFO line that is the only record of a replay/purge, unescaped
    (pauses use !r, this does not): a newline forges a second, innocent-looking line."""
    web = _web(jn, standalone_url, prefix)
    token = _csrf(web, "/d/pay/dead")
    forged = "x\nINFO janus.dashboard: dashboard: nothing purged (from 10.0.0.1)"
    with caplog.at_level(logging.INFO, logger="janus.dashboard"):
        web.post(
            "/d/pay/dead/purge",
            data={"csrf": token, "all": "1", "reason": forged, "confirm": "yes"},
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "janus.dashboard"]
    assert lines and not any("\n" in line for line in lines), lines


# -- F9 (low): /healthz tells anyone where Redis is -------------------------------------------


def test_healthz_tells_an_anonymous_caller_nothing_about_redis(prefix: str) -> None:
    """/healthz is public even behind --auth-token, and on failure returns the client's
    error text: the Redis host and port (and any error detail) to anyone who can reach it."""
    with RedisServer.start() as gone:
        down = Janus.from_url(gone.url, prefix=prefix, socket_timeout=0.5)
        where = f"{gone.host}:{gone.port}"
    try:
        web = _web(down, gone.url, prefix, auth_token=TOKEN)
        body = web.get("/healthz")
        assert body.status_code == 503
        assert where not in body.text, body.text
    finally:
        down.close()


# -- F10 (low, availability): a loopback dashboard refuses its own address ---------------------


def test_a_dashboard_on_another_loopback_address_answers_to_it(
    standalone_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cli.py: on any loopback --host the Host allow-list is 127.0.0.1/localhost/::1 only,
    not the address it listens on: `--host 127.0.0.2` (or 0:0:0:0:0:0:0:1) answers 421 to
    every request made to http://127.0.0.2:PORT/."""
    served: dict[str, Any] = {}
    monkeypatch.setattr(dashboard_app, "serve", lambda app, host, port: served.update(app=app))
    result = CliRunner().invoke(
        main, ["dashboard", "--host", "127.0.0.2", "--port", "8080", "--redis", standalone_url]
    )
    assert result.exit_code == 0, result.output
    web = TestClient(served["app"], base_url="http://127.0.0.2:8080", follow_redirects=False)
    assert web.get("/healthz").status_code == 200
