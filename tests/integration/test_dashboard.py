"""The dashboard against real Redis, through Starlette's TestClient (no browser): every page
renders with the numbers the API reads; actions ask first, then act through the API; a
read-only dashboard, a POST without the CSRF token, a request without the auth token, a
cross-site POST and a foreign Host header are all refused and change nothing; user data
(payloads, scope names, job ids) is never markup and binary payloads are hex; the Redis
password never reaches a page. (The same flows in headless Chromium:
test_dashboard_browser.py.)"""

from __future__ import annotations

import html
import logging
import re
import uuid
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from click.testing import CliRunner

from janus.cli import main
from janus.client import Janus, Job
from janus.dashboard import security
from janus.dashboard.app import DashboardConfig, create_app
from janus.testing import RedisServer, free_port

from tests.helpers import make_janus, raw_client, take, unchanged, wait_until

with warnings.catch_warnings():  # (Starlette < 1 warns about nothing; 1.x about httpx)
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

BODY = """
pay:
  rate: 20
  burst: 20
  max_in_flight: 10
  max_wait: 1h
  retry: {max_attempts: 1, budget: false}
  scopes:
    default: {rate: 20, burst: 20, weight: 1}
    vip: {rate: 20, burst: 20, weight: 3, quota: {limit: 1000, period: 1h}}
llm:
  rate: 2
  burst: 4
  max_wait: 2m
bulk:
  rate: 100000
  burst: 1000
  retry: {max_attempts: 1, budget: false}
"""
TOKEN = "t0ken-for-the-dashboard-tests"
SCRIPT = "<script>window.__xss=1</script>"


def _client(jn: Janus, url: str, prefix: str, **config: Any) -> TestClient:
    app = create_app(jn, DashboardConfig(redis_url=url, prefix=prefix, **config))
    return TestClient(app, base_url="http://127.0.0.1:8080", follow_redirects=False)


@pytest.fixture
def jn(standalone_url: str, prefix: str) -> Iterator[Janus]:
    jn = make_janus(standalone_url, prefix, BODY)
    yield jn
    jn.close()


@pytest.fixture
def web(jn: Janus, standalone_url: str, prefix: str) -> TestClient:
    return _client(jn, standalone_url, prefix)


def _dead(jn: Janus, dep: str, jobs: list[Job], error: str = "http_500") -> list[str]:
    """Submit ``jobs`` and fail each once (max_attempts 1): dead letters, ids in order."""
    before = len(jn.dead_letters(dep))
    jn.submit_many(dep, jobs)
    w = jn.worker(dep, group="g", consumer="w1")

    def all_dead() -> bool:
        got = take(jn, dep)  # (within max_in_flight and the rate: maybe in rounds)
        if got:
            w.report([w.failed(j, error, detail=f"Traceback for {j.id}") for j in got])
        return len(jn.dead_letters(dep)) == before + len(jobs)

    wait_until(all_dead, 30, f"{len(jobs)} dead letters")
    return [d.entry_id for d in jn.dead_letters(dep)][before:]


def _cell(page: str, key: str) -> str:
    """The text of the element with ``data-k="key"``."""
    m = re.search(rf'data-k="{re.escape(key)}"[^>]*>([^<]*)<', page)
    assert m is not None, key
    return html.unescape(m.group(1))


def _csrf(web: TestClient, path: str = "/") -> str:
    """Load a page (which sets the CSRF cookie) and return the token of its forms."""
    page = web.get(path).text
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m is not None, "no CSRF field on " + path
    return m.group(1)


def test_every_page_renders_against_standalone_and_cluster(redis_url: str, prefix: str) -> None:
    """Overview, dependency (with its JSON twin), scope, dead letters (list and one), job,
    sign-in and health pages render (200) on both a server and a cluster."""
    jn = make_janus(redis_url, prefix, BODY)
    _dead(jn, "pay", [Job(scope="vip", job_id="d1", payload="p")])
    jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(3)])
    web = _client(jn, redis_url, prefix)
    entry = jn.dead_letters("pay")[0].entry_id
    for path in (
        "/",
        "/api/overview",
        "/d/pay",
        "/api/d/pay",
        "/d/pay/scope?name=vip",
        "/d/pay/dead",
        f"/d/pay/dead/{entry}",
        "/job",
        "/job?dep=pay&id=j1",
        "/healthz",
        "/static/dashboard.js",
        "/static/dashboard.css",
    ):
        response = web.get(path)
        assert response.status_code == 200, (path, response.text[:300])
    assert "j1" in web.get("/job?dep=pay&id=j1").text
    jn.close()


def test_the_overview_shows_every_dependency_with_the_numbers_status_reads(
    jn: Janus, web: TestClient
) -> None:
    """One row per applied dependency: rate and burst from the policy, in flight against
    max, queued jobs and cost, dead letters, the policy version, the circuit."""
    _dead(jn, "pay", [Job(scope="vip", job_id=f"d{i}") for i in range(2)])
    jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}", cost=2) for i in range(4)])
    w = jn.worker("pay", group="g", consumer="w1")
    running = w.fetch(count=1, block_ms=None)
    assert len(running) == 1
    page = web.get("/").text
    st = jn.status("pay")
    assert _cell(page, "pay.rate") == "20/s" and _cell(page, "pay.burst") == "20"
    assert _cell(page, "pay.in_flight") == "1 / 10"
    assert _cell(page, "pay.queued_jobs") == str(st.scheduled) == "3"
    assert _cell(page, "pay.queued_cost") == str(st.queued_cost) == "6"
    assert _cell(page, "pay.dead_letters") == "2"
    assert _cell(page, "pay.policy") == "v1"
    assert _cell(page, "pay.circuit") == "off" and _cell(page, "pay.paused") == "no"
    assert _cell(page, "llm.rate") == "2/s" and _cell(page, "llm.in_flight") == "0 / -"
    assert _cell(page, "pay.started_s") == "-"  # one read so far: no rate yet
    assert _cell(page, "pay.oldest_wait") != "-"
    data = web.get("/api/overview").json()
    assert data["keys"] == ["bulk", "llm", "pay"]
    assert data["values"]["pay.queued_jobs"] == "3" and data["levels"]["pay"] == "warn"


def test_rates_are_differences_between_two_reads_of_the_counters(
    jn: Janus, web: TestClient
) -> None:
    """started/s appears from the second read on (reads at least 1 s apart, Redis time):
    the attempts started between the two reads over the time between them."""
    jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(5)])
    assert web.get("/api/overview").json()["values"]["pay.started_s"] == "-"
    take(jn, "pay")
    rates: dict[str, str] = {}

    def measured() -> bool:
        rates.update(web.get("/api/overview").json()["values"])
        return rates["pay.started_s"] != "-"

    wait_until(measured, 30, "a second read of the counters")
    assert float(rates["pay.started_s"]) > 0
    assert rates["pay.completed_s"] == "0" and rates["pay.failed_s"] == "0"


def test_the_dependency_page_lists_scopes_by_queue_with_share_weight_and_quota(
    jn: Janus, web: TestClient
) -> None:
    """Scopes sorted by waiting work; each with its weight, its share of the active
    weights, its quota use and reset; the events; the chart with the rate line."""
    jn.submit("pay", scope="vip", job_id="started")
    assert len(take(jn, "pay")) == 1  # a started attempt counts against the quota
    jn.submit_many("pay", [Job(scope="vip", job_id=f"v{i}") for i in range(2)])
    jn.submit_many("pay", [Job(scope="a", job_id=f"a{i}") for i in range(5)])
    data = web.get("/api/d/pay").json()
    scopes = data["lists"]["scopes"]
    assert [row[0]["text"] for row in scopes] == ["a", "vip"]
    a, vip = scopes
    assert a[1:6] == ["5", "5", "active", "1", "25.0%"]
    assert vip[1:6] == ["2", "2", "active", "3", "75.0%"]
    assert vip[6] == "1 / 1,000 (0.1%) per 60 min" and "UTC" in vip[7]
    assert data["values"]["rate"] == "20/s" and data["chart"]["rate_y"]
    assert [e[1] for e in data["lists"]["events"]][-1] == "policy_applied"
    page = web.get("/d/pay").text
    assert "75.0%" in page and 'id="chart-rate"' in page


def test_a_scope_page_shows_its_pause_by_hand(jn: Janus, web: TestClient) -> None:
    """A scope paused by hand says so on its page (even with nothing waiting)."""
    jn.pause("pay", scope="quiet")
    page = web.get("/d/pay/scope?name=quiet").text
    assert _cell(page, "paused") == "until resumed"
    assert _cell(web.get("/d/pay/scope?name=other").text, "paused") == "no"


def test_pause_asks_first_then_pauses_and_resume_resumes(
    jn: Janus, web: TestClient, standalone_url: str, prefix: str
) -> None:
    """A POST without confirm=yes only shows the confirm page (nothing changed); with it,
    the dependency is paused (an event in Redis) and the page says so; resume likewise."""
    jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(3)])
    token = _csrf(web, "/d/pay")
    with unchanged(raw_client(standalone_url), prefix):
        asked = web.post("/d/pay/pause", data={"csrf": token, "for": ""})
    assert asked.status_code == 200 and 'id="confirm-form"' in asked.text
    assert "Pause pay until resumed" in asked.text
    done = web.post("/d/pay/pause", data={"csrf": token, "for": "", "confirm": "yes"})
    assert done.status_code == 303 and done.headers["location"] == "/d/pay"
    assert jn.status("pay").held_until_ms == -1
    assert take(jn, "pay") == []
    page = web.get("/d/pay").text
    assert "pay: paused until resumed" in page and _cell(page, "paused").startswith("by hand")
    done = web.post("/d/pay/resume", data={"csrf": token, "confirm": "yes"})
    assert done.status_code == 303
    assert jn.status("pay").held_until_ms is None
    assert len(take(jn, "pay")) == 3
    paused, resumed = jn.events("pay", last=2)
    assert (paused.kind, paused.fields["by"], resumed.kind) == ("paused", "hand", "resumed")


def test_a_timed_pause_of_one_scope(jn: Janus, web: TestClient) -> None:
    """The pause form's length and scope reach jn.pause; a bad length is refused."""
    token = _csrf(web, "/d/pay/scope?name=vip")
    fields = {"csrf": token, "for": "10m", "scope": "vip", "confirm": "yes"}
    done = web.post("/d/pay/pause", data=fields)
    assert done.status_code == 303 and done.headers["location"] == "/d/pay/scope?name=vip"
    now_ms = jn.store.time_us() // 1000
    held = jn.scope_held_until("pay", "vip")
    assert held is not None and 590_000 <= held - now_ms <= 600_000
    assert jn.status("pay").held_until_ms is None
    bad = web.post("/d/pay/pause", data={**fields, "for": "soon"})
    assert bad.status_code == 400 and "Bad pause length" in bad.text


def test_replay_from_the_dead_letters_readmits_the_job_and_is_logged(
    jn: Janus, web: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Replaying a selected dead letter (after the confirm page) sends its job back through
    admission: its record is scheduled again and a worker gets it. The action is logged."""
    (entry,) = _dead(jn, "pay", [Job(scope="vip", job_id="j1")])
    assert jn.job("pay", "j1").status == "dead"  # type: ignore[union-attr]
    token = _csrf(web, "/d/pay/dead")
    asked = web.post("/d/pay/dead/replay", data={"csrf": token, "entry": entry})
    assert "Replay 1 dead letter(s)?" in asked.text
    with caplog.at_level(logging.INFO, logger="janus.dashboard"):
        fields = {"csrf": token, "entry": entry, "confirm": "yes"}
        done = web.post("/d/pay/dead/replay", data=fields)
    assert done.status_code == 303 and done.headers["location"] == "/d/pay/dead"
    assert jn.job("pay", "j1").status == "scheduled"  # type: ignore[union-attr]
    assert [j.id for j in take(jn, "pay")] == ["j1"]
    assert "1 replayed" in web.get("/d/pay/dead").text
    assert any("replay pay: replay: 1 replayed" in r.getMessage() for r in caplog.records)


def _confirmed(web: TestClient, path: str, fields: dict[str, str]) -> Any:
    """Ask (the confirm page), then post its form as a browser would on 'Confirm'."""
    asked = web.post(path, data=fields)
    form = re.search(r'<form method="post"[^>]*id="confirm-form">(.*?)</form>', asked.text, re.S)
    assert form is not None, asked.text[:300]
    hidden = re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', form[1])
    data = [(html.unescape(n), html.unescape(v)) for n, v in hidden]
    headers = {"content-type": "application/x-www-form-urlencoded"}
    return asked, web.post(path, content=urlencode(data), headers=headers)


def test_replay_and_purge_every_match_of_a_filter(jn: Janus, web: TestClient) -> None:
    """'every match' acts on all the dead letters the filter selects, and only those."""
    _dead(jn, "pay", [Job(scope="a", job_id=f"a{i}") for i in range(3)])
    _dead(jn, "pay", [Job(scope="b", job_id=f"b{i}") for i in range(2)])
    token = _csrf(web, "/d/pay/dead")
    asked, done = _confirmed(web, "/d/pay/dead/purge", {"csrf": token, "all": "1", "scope": "a"})
    assert "Purge 3 dead letter(s)?" in asked.text and "scope=a" in asked.text
    assert "at most 10,000" in web.get("/d/pay/dead").text  # the bound, stated
    assert done.headers["location"] == "/d/pay/dead?scope=a"
    assert sorted(d.job_id for d in jn.dead_letters("pay")) == ["b0", "b1"]
    _confirmed(web, "/d/pay/dead/replay", {"csrf": token, "all": "1"})
    assert sorted(j.id for j in take(jn, "pay")) == ["b0", "b1"]


def test_every_match_acts_only_as_confirmed(
    jn: Janus, web: TestClient, standalone_url: str, prefix: str
) -> None:
    """A confirm without what the confirm page counted is refused; so is one whose count
    no longer holds (letters purged meanwhile); nothing changes either way."""
    _dead(jn, "pay", [Job(scope="a", job_id=f"a{i}") for i in range(3)])
    token = _csrf(web, "/d/pay/dead")
    with unchanged(raw_client(standalone_url), prefix):
        bare = web.post("/d/pay/dead/purge", data={"csrf": token, "all": "1", "confirm": "yes"})
        assert bare.status_code == 400 and "confirm page" in bare.text
    asked = web.post("/d/pay/dead/purge", data={"csrf": token, "all": "1"})
    form = re.search(r'id="confirm-form">(.*?)</form>', asked.text, re.S)
    assert form is not None
    fields = dict(re.findall(r'name="([^"]*)" value="([^"]*)"', form[1]))
    jn.purge("pay", jn.dead_letters("pay")[:1])  # meanwhile
    changed = web.post("/d/pay/dead/purge", data=fields)
    assert changed.status_code == 409 and "nothing was changed" in changed.text
    assert len(jn.dead_letters("pay")) == 2


def test_a_scope_name_with_a_line_break_round_trips_through_the_forms(
    jn: Janus, web: TestClient
) -> None:
    """The scope page's and the confirm page's forms carry the scope hex-encoded (a browser
    rewrites line breaks in a field's value); a plain ``scope`` field still works (scripts)."""
    scope = "tenant\r\nx"
    page = web.get("/d/pay/scope", params={"name": scope}).text
    assert f'name="scope_hex" value="{scope.encode().hex()}"' in page
    token = _csrf(web, "/d/pay")
    _, done = _confirmed(
        web, "/d/pay/pause", {"csrf": token, "for": "", "scope_hex": scope.encode().hex()}
    )
    assert done.status_code == 303
    assert jn.scope_held_until("pay", scope) == -1
    bad = web.post("/d/pay/resume", data={"csrf": token, "scope_hex": "zz", "confirm": "yes"})
    assert bad.status_code == 400
    web.post("/d/pay/resume", data={"csrf": token, "scope": scope, "confirm": "yes"})
    assert jn.scope_held_until("pay", scope) is None


def test_a_read_only_dashboard_refuses_every_action_and_changes_nothing(
    jn: Janus, standalone_url: str, prefix: str
) -> None:
    """--read-only: every POST action, even confirmed with a valid CSRF token, is a 403
    saying so; nothing under the prefix changes; the pages show no action."""
    entries = _dead(jn, "pay", [Job(scope="a", job_id=f"d{i}") for i in range(2)])
    jn.submit_many("pay", [Job(scope="a", job_id="waiting")])
    web = _client(jn, standalone_url, prefix, read_only=True)
    page = web.get("/d/pay").text
    assert "read-only" in page and 'id="pause"' not in page
    assert 'name="entry"' not in web.get("/d/pay/dead").text
    token = web.cookies.get(security.CSRF_COOKIE)  # this app's own, valid token
    assert token
    posts = [
        ("/d/pay/pause", {"for": ""}),
        ("/d/pay/pause", {"for": "1h", "scope": "a"}),
        ("/d/pay/resume", {}),
        ("/d/pay/dead/replay", {"entry": entries[0]}),
        ("/d/pay/dead/purge", {"entry": entries[1]}),
        ("/d/pay/dead/replay", {"all": "1"}),
        ("/d/pay/dead/purge", {"all": "1"}),
    ]
    with unchanged(raw_client(standalone_url), prefix):
        for path, fields in posts:
            response = web.post(path, data={**fields, "csrf": token, "confirm": "yes"})
            assert response.status_code == 403, path
            assert "started with --read-only" in response.text
            assert "Nothing was changed" in response.text


def test_a_post_without_a_valid_csrf_token_is_refused_and_changes_nothing(
    jn: Janus, web: TestClient, standalone_url: str, prefix: str
) -> None:
    """No token, a token unlike the cookie's, and a forged pair (well-formed, not signed
    by this dashboard) are each a 403; nothing changes."""
    (entry,) = _dead(jn, "pay", [Job(scope="a", job_id="d1")])
    good = _csrf(web, "/d/pay")
    forged = security.Signer().new_csrf()
    with unchanged(raw_client(standalone_url), prefix):
        for fields in ({}, {"csrf": ""}, {"csrf": forged}, {"csrf": good + "x"}):
            for path in ("/d/pay/pause", "/d/pay/dead/purge"):
                response = web.post(path, data={**fields, "entry": entry, "confirm": "yes"})
                assert response.status_code == 403, (path, fields)
                assert "CSRF check failed" in response.text
        other = _client(jn, standalone_url, prefix)
        other.cookies.set(security.CSRF_COOKIE, forged)
        response = other.post("/d/pay/pause", data={"csrf": forged, "confirm": "yes"})
        assert response.status_code == 403
    assert jn.status("pay").held_until_ms is None


def test_a_post_from_another_site_is_refused(
    jn: Janus, web: TestClient, standalone_url: str, prefix: str
) -> None:
    """A browser's Origin naming another site: refused before the form is read."""
    token = _csrf(web, "/d/pay")
    with unchanged(raw_client(standalone_url), prefix):
        response = web.post(
            "/d/pay/pause",
            data={"csrf": token, "confirm": "yes"},
            headers={"origin": "http://evil.example"},
        )
    assert response.status_code == 403
    ok = web.post(
        "/d/pay/pause",
        data={"csrf": token, "confirm": "yes"},
        headers={"origin": "http://127.0.0.1:8080"},
    )
    assert ok.status_code == 303


def test_a_loopback_dashboard_answers_only_to_loopback_host_names(
    jn: Janus, standalone_url: str, prefix: str
) -> None:
    """Against DNS rebinding: a Host header naming another site gets 421 and no data."""
    web = _client(jn, standalone_url, prefix, allowed_hosts=security.loopback_hosts())
    assert web.get("/").status_code == 200
    for host in ("localhost:8080", "[::1]:8080", "127.0.0.1"):
        assert web.get("/", headers={"host": host}).status_code == 200, host
    bad = web.get("/api/overview", headers={"host": "evil.example:8080"})
    assert bad.status_code == 421 and "pay" not in bad.text


def test_the_auth_token_is_required_by_every_page_action_and_api(
    jn: Janus, standalone_url: str, prefix: str
) -> None:
    """With --auth-token: pages send to the sign-in page, the JSON API and POSTs answer
    401 (nothing changes); a bearer header or the sign-in cookie (an HMAC, not the token)
    lets through; a wrong token does not; /healthz and the static files stay public."""
    web = _client(jn, standalone_url, prefix, auth_token=TOKEN)
    first = web.get("/d/pay")
    assert first.status_code == 303 and first.headers["location"] == "/login?next=/d/pay"
    assert web.get("/api/overview").status_code == 401
    assert web.get("/healthz").status_code == 200
    assert web.get("/static/dashboard.js").status_code == 200
    with unchanged(raw_client(standalone_url), prefix):
        assert web.post("/d/pay/pause", data={"confirm": "yes"}).status_code == 401
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert web.get("/api/overview", headers=bearer).status_code == 200
    assert web.get("/", headers={"authorization": "Bearer wrong"}).status_code == 303
    token = _csrf(web, "/login")
    assert prefix not in web.get("/login").text  # which Redis: only once signed in
    wrong = web.post("/login", data={"csrf": token, "token": "wrong", "next": "/d/pay"})
    assert wrong.status_code == 401 and "not the dashboard" in wrong.text
    good = web.post("/login", data={"csrf": token, "token": TOKEN, "next": "/d/pay"})
    assert good.status_code == 303 and good.headers["location"] == "/d/pay"
    cookie = web.cookies.get(security.AUTH_COOKIE)
    assert cookie and TOKEN not in cookie
    assert web.get("/d/pay").status_code == 200
    away = web.post("/login", data={"csrf": token, "token": TOKEN, "next": "//evil.example"})
    assert away.headers["location"] == "/"


def test_user_data_is_never_markup(jn: Janus, web: TestClient) -> None:
    """A payload, a scope name, a job id and an error holding HTML are shown as text on
    every page that shows them (escaped), in the JSON too (set with textContent)."""
    tag = '<img src=x onerror="window.__xss=2">'
    (entry,) = _dead(jn, "pay", [Job(scope=tag, job_id=SCRIPT, payload=SCRIPT)], error=SCRIPT)
    jn.submit_many("pay", [Job(scope=tag, job_id="waiting", payload=SCRIPT)])
    pages = {
        "letter": web.get(f"/d/pay/dead/{entry}").text,
        "list": web.get("/d/pay/dead").text,
        "dependency": web.get("/d/pay").text,
        "job": web.get("/job", params={"dep": "pay", "id": SCRIPT}).text,
        "scope": web.get("/d/pay/scope", params={"name": tag}).text,
    }
    for name, page in pages.items():
        assert "<script>window" not in page and "<img src=x" not in page, name
    assert html.escape(SCRIPT, quote=False) in pages["letter"]
    assert html.escape(SCRIPT, quote=False) in pages["job"]
    assert "&lt;img src=x" in pages["list"] and "&lt;img src=x" in pages["dependency"]
    payload = re.search(r'<pre class="payload text" id="payload">([^<]*)</pre>', pages["letter"])
    assert payload is not None and html.unescape(payload.group(1)) == SCRIPT
    assert tag in [row[0]["text"] for row in web.get("/api/d/pay").json()["lists"]["scopes"]]


def test_a_binary_payload_is_shown_as_hex(jn: Janus, web: TestClient) -> None:
    """Bytes that are not UTF-8 text (or hold control characters) are a hex dump."""
    data = b"\x00\x01\xfe\xffJanus<b>\n"
    (entry,) = _dead(jn, "pay", [Job(scope="a", job_id="bin", payload=data)])
    page = web.get(f"/d/pay/dead/{entry}").text
    assert "binary: shown as hex" in page
    assert "00000000  00 01 fe ff 4a 61 6e 75  73 3c 62 3e 0a" in page
    assert "|....Janus&lt;b&gt;.|" in page
    assert "binary: shown as hex" in web.get("/job?dep=pay&id=bin").text


def test_a_dead_letter_shows_every_attempt_with_its_error(jn: Janus, web: TestClient) -> None:
    """The dead letter's page: reason, attempts, and each attempt's outcome and error."""
    (entry,) = _dead(jn, "pay", [Job(scope="a", job_id="j1")], error="http_503")
    page = web.get(f"/d/pay/dead/{entry}").text
    assert _cell(page, "reason") == "attempts_exhausted" and _cell(page, "attempts") == "1"
    assert re.search(r"<td>1</td><td>failed</td><td>[^<]+</td><td>http_503</td>", page)
    assert "Traceback for j1" in page


def test_the_redis_password_never_reaches_a_page(
    standalone_url: str, standalone_server: Any, prefix: str
) -> None:
    """Connected with a user and password: the pages show the URL redacted (and so does
    the page of an error), never the password."""
    admin = redis.Redis.from_url(standalone_url)
    user, password = f"u{uuid.uuid4().hex[:8]}", f"pw{uuid.uuid4().hex}"
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    try:
        url = standalone_url.replace("redis://", f"redis://{user}:{password}@", 1)
        jn = make_janus(url, prefix, BODY)
        _dead(jn, "pay", [Job(scope="a", job_id="d1")])
        web = _client(jn, url, prefix)
        entry = jn.dead_letters("pay")[0].entry_id
        for path in ("/", "/d/pay", "/d/pay/dead", f"/d/pay/dead/{entry}", "/job", "/nope"):
            page = web.get(path).text
            assert password not in page, path
        assert f"redis://{user}:***@" in web.get("/").text
        with RedisServer.start() as gone:
            redis.Redis.from_url(gone.url).execute_command(
                "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all"
            )
            gone_url = gone.url.replace("redis://", f"redis://{user}:{password}@", 1)
            down = Janus.from_url(gone_url, prefix=prefix, socket_timeout=0.5)
        page = _client(down, gone_url, prefix).get("/")  # (its server has stopped)
        assert page.status_code == 503 and "Redis unavailable" in page.text
        assert password not in page.text and f"redis://{user}:***@" in page.text
        jn.close()
    finally:
        admin.execute_command("ACL", "DELUSER", user)


def test_reading_pages_changes_nothing(
    jn: Janus, web: TestClient, standalone_url: str, prefix: str
) -> None:
    """Every page is a read: nothing under the prefix changes while they render."""
    (entry,) = _dead(jn, "pay", [Job(scope="a", job_id="d1")])
    jn.submit_many("pay", [Job(scope="a", job_id="j1")])
    paths = ["/", "/api/overview", "/d/pay", "/api/d/pay", "/d/pay/scope?name=a", "/d/pay/dead"]
    with unchanged(raw_client(standalone_url), prefix):
        for path in [*paths, f"/d/pay/dead/{entry}", "/job?dep=pay&id=j1"]:
            assert web.get(path).status_code == 200, path


def test_dead_letters_are_paged_newest_first_and_filtered(jn: Janus, web: TestClient) -> None:
    """50 a page, newest first (or oldest first), a cursor to the next page; filters by
    scope, reason and age; the same through jn.dead_letter_page."""
    _dead(jn, "bulk", [Job(scope="a" if i % 3 else "b", job_id=f"d{i:03}") for i in range(120)])
    total = jn.dead_letters("bulk")
    assert len(total) == 120
    seen: list[str] = []
    path = "/d/bulk/dead"
    for _ in range(3):
        page = web.get(path).text
        seen += re.findall(r'name="entry" value="([^"]+)"', page)
        nxt = re.search(r'href="([^"]+)" id="next-page"', page)
        if nxt is None:
            break
        path = html.unescape(nxt.group(1))
    assert seen == [d.entry_id for d in reversed(total)]
    assert 'id="next-page"' not in page
    only_b = web.get("/d/bulk/dead?scope=b&order=oldest").text
    ids = re.findall(r'name="entry" value="([^"]+)"', only_b)
    assert ids == [d.entry_id for d in total if d.scope == "b"][:50]
    assert re.findall(r'name="entry"', web.get("/d/bulk/dead?reason=not_retryable").text) == []
    assert len(re.findall(r'name="entry"', web.get("/d/bulk/dead?newer=1h").text)) == 50
    assert re.findall(r'name="entry"', web.get("/d/bulk/dead?older=1h").text) == []
    assert "older: " in web.get("/d/bulk/dead?older=soon").text  # named, not a failure
    letters, cursor, read = jn.dead_letter_page("bulk", scope="b", limit=10, newest_first=False)
    assert [d.job_id for d in letters] == [f"d{i:03}" for i in range(0, 30, 3)]
    tenth_b = [i for i, d in enumerate(total) if d.scope == "b"][9]
    assert cursor == letters[-1].entry_id and read == tenth_b + 1  # read up to it, no further
    rest, end, _ = jn.dead_letter_page("bulk", scope="b", cursor=cursor, newest_first=False)
    assert len(rest) == 30 and end is None


def test_unknown_and_bad_input_get_a_clear_page(jn: Janus, web: TestClient) -> None:
    """An unknown dependency, a bad name, a bad entry id, an unknown job: 404 or 400 with
    one sentence, never a traceback."""
    assert web.get("/d/nope").status_code == 404
    assert web.get("/api/d/nope").status_code == 404
    assert web.get("/d/bad%7Bname").status_code == 404
    bad = web.get("/d/pay/dead/not-an-id")
    assert bad.status_code == 400 and "stream entry id" in bad.text
    assert web.get("/d/pay/dead/1-0").status_code == 404
    missing = web.get("/job?dep=pay&id=missing")
    assert missing.status_code == 404 and 'id="not-found"' in missing.text
    assert web.get("/d/pay/scope").status_code == 400


def test_pages_carry_strict_security_headers_and_cookies(web: TestClient) -> None:
    """A Content-Security-Policy allowing no inline script and no other site, no framing,
    no caching of pages; the CSRF cookie is HttpOnly and SameSite=Strict."""
    response = web.get("/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(security.CSRF_COOKIE + "=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_the_cli_refuses_to_listen_beyond_loopback_without_a_token(
    standalone_url: str,
) -> None:
    """`janus dashboard --host 0.0.0.0` without --auth-token (or with a short one) exits 2
    with the reason, before connecting or listening."""
    runner = CliRunner()
    result = runner.invoke(main, ["dashboard", "--host", "0.0.0.0", "--redis", standalone_url])
    assert result.exit_code == 2
    assert "not a loopback address" in result.output and "--auth-token" in result.output
    result = runner.invoke(
        main, ["dashboard", "--host", "0.0.0.0", "--auth-token", "short", "--redis", standalone_url]
    )
    assert result.exit_code == 2 and "at least 16 characters" in result.output
    down = f"redis://127.0.0.1:{free_port()}/0"
    result = runner.invoke(main, ["dashboard", "--port", str(free_port()), "--redis", down])
    assert result.exit_code == 2 and "error:" in result.output


def test_over_https_the_cookies_are_host_prefixed_and_the_scheme_is_checked(
    jn: Janus, standalone_url: str, prefix: str
) -> None:
    """Behind TLS the cookies are ``__Host-`` (Secure, this host only), a signed-in
    browser's CSRF token is its session's, and a POST from the http origin is refused."""
    app = create_app(jn, DashboardConfig(redis_url=standalone_url, prefix=prefix, auth_token=TOKEN))
    web = TestClient(app, base_url="https://dash.example", follow_redirects=False)
    login = web.get("/login")
    assert login.headers["set-cookie"].startswith("__Host-" + security.CSRF_COOKIE + "=")
    token = _csrf(web, "/login")
    signed = web.post("/login", data={"csrf": token, "token": TOKEN})
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith("__Host-" + security.AUTH_COOKIE + "=") and "Secure" in cookie
    assert "Max-Age=" in cookie
    assert web.get("/").status_code == 200
    mine = _csrf(web, "/d/pay")
    assert mine != token  # bound to the session now
    fields = {"csrf": mine, "confirm": "yes"}
    other = web.post("/d/pay/pause", data=fields, headers={"origin": "http://dash.example"})
    assert other.status_code == 403 and jn.status("pay").held_until_ms is None
    stale = web.post("/d/pay/pause", data={**fields, "csrf": token})  # the anonymous one
    assert stale.status_code == 403 and jn.status("pay").held_until_ms is None
    ok = web.post("/d/pay/pause", data=fields, headers={"origin": "https://dash.example"})
    assert ok.status_code == 303 and jn.status("pay").held_until_ms == -1
    jn.resume("pay")


def test_an_unexpected_error_is_a_500_page_without_internals(
    jn: Janus, web: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The last resort: a one-sentence 500 (no traceback, no Redis URL); the log has it."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom at redis://user:s3cret@db.internal:6379/0")

    monkeypatch.setattr(jn, "status", broken)
    with caplog.at_level(logging.ERROR, logger="janus.dashboard"):
        page = web.get("/d/pay")
        api = web.get("/api/d/pay")
    assert page.status_code == 500 and api.status_code == 500
    for body in (page.text, api.text):
        assert "db.internal" not in body and "Traceback" not in body and "boom" not in body
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError" in logged and "s3cret" not in logged


def test_forms_are_bounded_and_the_flash_line_is_signed(jn: Janus, web: TestClient) -> None:
    """An action's body is at most 1 MB (413 beyond, nothing parsed); a flash cookie the
    dashboard did not set is not shown."""
    token = _csrf(web, "/d/pay")
    big = web.post("/d/pay/pause", data={"csrf": token, "confirm": "yes", "x": "a" * (2 << 20)})
    assert big.status_code == 413 and jn.status("pay").held_until_ms is None
    web.cookies.set(security.FLASH_COOKIE, "forged%20news")
    assert "forged news" not in web.get("/d/pay").text
