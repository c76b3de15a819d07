"""What the dashboard shows, without a browser or Redis: janus.dashboard.views turns the
API's values into the text of each page (rates from counter reads, shares, quotas, the
chart, payloads shown safely), and janus.dashboard.security decides who may do what."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from janus.dashboard import security, views
from janus.decisions import DeadLetter, DependencyStatus, Event, JobInfo, ScopeLoad, ScopeStatus

NOW = 1_800_000_000_000  # Redis time, ms
PACKAGE = Path(__file__).resolve().parents[2] / "src" / "janus" / "dashboard"


def _status(**kw: object) -> DependencyStatus:
    base: dict[str, object] = dict(
        dependency="pay", policy_version=3, scheduled=0, in_flight=0, stream_length=0,
        queued_cost=0, next_due_us=None, circuit="closed", circuit_open_until_ms=None,
        paused_until_ms=None, retry_budget=None, dead_letters=0,
    )  # fmt: skip
    base.update(kw)
    return DependencyStatus(**base)  # type: ignore[arg-type]


def _scope(**kw: object) -> ScopeStatus:
    base: dict[str, object] = dict(
        dependency="pay", scope="acme", weight=1.0, place="idle", share=0.0, waiting_jobs=0,
        waiting_cost=0, ready_jobs=0, max_queued=None, max_queued_cost=None, quota_limit=None,
        quota_used=None, quota_period_ms=None, quota_resets_at_ms=None,
    )  # fmt: skip
    base.update(kw)
    return ScopeStatus(**base)  # type: ignore[arg-type]


FIELDS = {"interval_us": "50000", "burst": "20", "lease_ms": "30000", "max_wait_ms": "30000"}


# -- the overview ---------------------------------------------------------------------------


def test_an_overview_row_shows_the_status_and_policy_as_an_sre_reads_them() -> None:
    """Rate from interval_us, in flight against the limit, queue, oldest wait (its age),
    circuit with its end, the pause, the budget, dead letters with thousands separators."""
    st = _status(
        scheduled=12_345, queued_cost=20_000, in_flight=3, max_in_flight=10, tokens=12.5,
        circuit="open", circuit_open_until_ms=NOW + 60_000, circuit_opens=2, retry_budget=4.25,
        dead_letters=100_000, oldest_waiting_ms=NOW - 125_000,
    )  # fmt: skip
    rates = {"started": 19.5, "completed": 18.0, "failed": None}
    row = views.overview_row(st, FIELDS, rates, NOW)
    assert (row.rate, row.burst, row.tokens) == ("20/s", "20", "12.5")
    assert (row.started_s, row.completed_s, row.failed_s) == ("19.5", "18", "-")
    assert row.in_flight == "3 / 10"
    assert (row.queued_jobs, row.queued_cost) == ("12,345", "20,000")
    assert row.oldest_wait == "2 min"
    assert row.circuit.startswith("open until") and "in 60 s" in row.circuit
    assert "opened 2x in a row" in row.circuit
    assert row.retry_budget == "4.2" and row.dead_letters == "100,000"
    assert (row.policy, row.level) == ("v3", "bad")


def test_the_row_level_says_what_needs_a_look() -> None:
    """bad: circuit open or paused (by hand or Retry-After); warn: half-open, dead letters,
    a deletion, paused scopes; ok otherwise."""
    assert views.level(_status()) == "ok"
    assert views.level(_status(held_until_ms=-1)) == "bad"
    assert views.level(_status(paused_until_ms=NOW + 1)) == "bad"
    assert views.level(_status(dead_letters=1)) == "warn"
    assert views.level(_status(circuit="half_open")) == "warn"
    assert views.level(_status(held_scopes=2)) == "warn"


def test_no_limit_no_policy_and_a_deletion_are_said_plainly() -> None:
    row = views.overview_row(_status(policy_version=None, deleting=True), {}, {}, NOW)
    assert (row.rate, row.burst, row.in_flight, row.policy) == (
        "-",
        "-",
        "0 / -",
        "none (deleting)",
    )
    assert row.oldest_wait == "-" and row.started_s == "-"


@pytest.mark.parametrize(
    ("rate", "text"),
    [(20.0, "20/s"), (2.5, "2.5/s"), (0.5, "30/m"), (1 / 3600, "1/h"), (None, "-")],
)
def test_rates_are_written_as_policies_write_them(rate: float | None, text: str) -> None:
    assert views.rate_text(rate) == text


def test_rates_are_differences_between_two_reads() -> None:
    """Rates per second between the last two reads (Redis time); none before the second
    read; reads closer than min_step are not kept; a counter that went down (the state was
    recreated) gives no rate; a clock that went back starts the history again."""
    h = views.CounterHistory(keep_ms=10_000, min_step_ms=1000)
    h.add(NOW, {"started": 100, "started_cost": 300, "completed": 90, "failed": 5})
    assert h.rates() == {"started": None, "started_cost": None, "completed": None, "failed": None}
    h.add(NOW + 400, {"started": 999})  # too soon: ignored
    h.add(NOW + 2000, {"started": 140, "started_cost": 400, "completed": 130, "failed": 5})
    assert h.rates() == {"started": 20.0, "started_cost": 50.0, "completed": 20.0, "failed": 0.0}
    assert h.series("started_cost") == [(NOW + 2000, 50.0)]
    h.add(NOW + 4000, {"started": 10, "completed": 130, "failed": 5})
    assert h.rates()["started"] is None
    assert h.series("started") == [(NOW + 2000, 20.0)]
    h.add(NOW + 20_000, {"started": 30})
    assert [s.at_ms for s in h.samples] == [NOW + 20_000]  # the rest left the window
    h.add(NOW + 19_000, {"started": 1})  # another server's clock (a failover)
    assert [s.at_ms for s in h.samples] == [NOW + 19_000]


def test_the_history_keeps_only_its_window() -> None:
    h = views.CounterHistory(keep_ms=10_000, min_step_ms=1000)
    for i in range(30):
        h.add(NOW + i * 1000, {"started": i})
    assert h.samples[0].at_ms == NOW + 19_000 and len(h.samples) == 11
    assert all(rate == 1.0 for _, rate in h.series("started"))


def test_pages_of_a_list() -> None:
    p = views.page_of(120, 3, 50)
    assert (p.number, p.pages, p.first, p.last, p.previous, p.next) == (3, 3, 100, 120, 2, None)
    assert views.page_of(0, 5, 50).pages == 1
    assert views.page_of(120, 99, 50).number == 3 and views.page_of(120, -1, 50).number == 1


# -- a dependency ---------------------------------------------------------------------------


def test_dependency_facts_include_the_overview_numbers_and_the_limits() -> None:
    st = _status(next_due_us=(NOW + 5000) * 1000, active_scopes=4, parked=2, stream_length=7)
    facts = {f.key: f.value for f in views.dependency_facts(st, FIELDS, {}, NOW)}
    assert facts["rate"] == "20/s" and facts["lease"] == "30 s" and facts["max_wait"] == "30 s"
    assert "in 5 s" in facts["next_due"]
    assert (facts["active_scopes"], facts["parked"], facts["stream"]) == ("4", "2", "7")


def test_scopes_are_sorted_by_waiting_work_with_share_weight_and_quota() -> None:
    """Most waiting jobs first (then cost, then name); share shown for active scopes only;
    quota as used / limit (percent) per period, with its reset; pauses by hand."""
    loads = [
        ScopeLoad("small", 1, 1),
        ScopeLoad("big", 9, 9, held_until_ms=-1),
        ScopeLoad("mid", 5, 7),
        ScopeLoad("mid2", 5, 6),
    ]
    statuses = {
        "big": _scope(scope="big", weight=3, place="active", share=0.75, waiting_jobs=9,
                      waiting_cost=9, quota_limit=1000, quota_used=250,
                      quota_period_ms=3_600_000, quota_resets_at_ms=NOW + 600_000),
        "mid": _scope(scope="mid", weight=1, place="active", share=0.25, waiting_jobs=5,
                      waiting_cost=7),
        "small": _scope(scope="small", place="throttled", waiting_jobs=1, waiting_cost=1),
    }  # fmt: skip
    rows = views.scope_rows(loads, statuses, NOW)
    assert [r.scope for r in rows] == ["big", "mid", "mid2", "small"]
    big, mid, mid2, small = rows
    assert (big.weight, big.share, big.paused) == ("3", "75.0%", "until resumed")
    assert big.quota == "250 / 1,000 (25.0%) per 60 min" and "in 10 min" in big.quota_resets
    assert (mid.share, mid.quota, mid.quota_resets) == ("25.0%", "-", "-")
    assert (small.place, small.share) == ("throttled", "-")
    assert (mid2.waiting_jobs, mid2.place) == ("5", "-")  # no status read: the load's numbers


def test_a_long_scope_name_is_cut_for_the_cell_but_kept_whole() -> None:
    name = "tenant-" + "x" * 200
    (row,) = views.scope_rows([ScopeLoad(name, 1, 1)], {}, NOW)
    assert row.scope == name and len(row.name) == views.SHORT and row.name.endswith("…")


def test_events_are_newest_first_with_readable_fields() -> None:
    events = [
        Event("pay", "1-0", "policy_applied", NOW - 5000, {"version": "3"}),
        Event("pay", "2-0", "circuit_open", NOW, {"until_ms": str(NOW + 60_000), "opens": "1"}),
        Event("pay", "3-0", "resumed", NOW, {"by": "hand", "scope": ""}),
    ]
    rows = views.event_rows(events, NOW)
    assert [r.kind for r in rows] == ["resumed", "circuit_open", "policy_applied"]
    assert rows[0].fields == "by=hand"
    assert rows[1].fields == "until_ms=2027-01-15T08:01:00.000Z opens=1" and rows[1].level == "warn"
    assert rows[2].at.endswith("(5 s ago)")


def test_the_chart_scales_to_the_highest_value_and_the_rate_line() -> None:
    """Time runs left to right ending now; y from 0 (bottom) to a round top above both the
    highest point and the rate; points older than the span are left out."""
    started = [(NOW - 400_000, 999.0), (NOW - 150_000, 10.0), (NOW, 20.0)]
    c = views.chart(started, [(NOW, 5.0)], 20.0, NOW, span_ms=300_000, width=600, height=100)
    assert c.top == "25" and c.rate == "20/s" and c.latest == "20"
    assert c.started == "300.0,60.0 600.0,20.0"
    assert c.failed == "600.0,80.0" and c.rate_y == "20.0"
    empty = views.chart([], [], None, NOW)
    assert (empty.started, empty.rate_y, empty.top, empty.latest) == ("", "", "1", "-")


@pytest.mark.parametrize(
    ("x", "top"), [(0.3, 0.5), (1.0, 1.0), (11, 20), (22, 25), (26, 50), (51, 100)]
)
def test_the_chart_top_is_a_round_number(x: float, top: float) -> None:
    assert views.nice_ceiling(x) == top


# -- dead letters and jobs --------------------------------------------------------------------


def _letter(**kw: object) -> DeadLetter:
    base: dict[str, object] = dict(
        entry_id=f"{NOW - 60_000}-0", dependency="pay", job_id="j1", scope="acme", cost=1,
        reason="attempts_exhausted", attempts=3, error="http_503", dead_ms=NOW - 60_000,
        payload=b"", history=[],
    )  # fmt: skip
    base.update(kw)
    return DeadLetter(**base)  # type: ignore[arg-type]


def test_a_text_payload_is_shown_as_text_and_markup_stays_text() -> None:
    """The view holds the text as it is: escaping is the template's (autoescape)."""
    p = views.payload_preview(b"<script>alert(1)</script>\n\tok")
    assert (p.kind, p.text) == ("text", "<script>alert(1)</script>\n\tok")
    assert (p.size, p.shown, p.truncated) == (29, 29, False)
    unicode = views.payload_preview("naïve ✓".encode())
    assert unicode.kind == "text" and unicode.text == "naïve ✓"


def test_binary_payloads_and_control_characters_are_a_hex_dump() -> None:
    """Not UTF-8, or holding control characters (a terminal escape, NUL): hexdump -C."""
    p = views.payload_preview(b"\x00\x01\xfe\xffJanus<b>\n")
    assert p.kind == "hex"
    assert p.text.startswith("00000000  00 01 fe ff 4a 61 6e 75  73 3c 62 3e 0a  ")
    assert p.text.endswith("  |....Janus<b>.|") and p.text.index("|") == 60  # as a full line
    assert views.payload_preview(b"\x1b[31mred").kind == "hex"
    assert views.payload_preview(b"a\x00b").kind == "hex"
    assert views.payload_preview(b"").kind == "empty"


def test_a_large_payload_is_cut_without_breaking_a_character() -> None:
    text = views.payload_preview(("é" * 3000).encode(), text_limit=4095)
    assert text.kind == "text" and text.truncated and text.text == "é" * 2047
    assert text.shown == 4094 and text.size == 6000
    blob = views.payload_preview(bytes(range(256)) * 10, hex_limit=64)
    assert blob.kind == "hex" and blob.shown == 64 and len(blob.text.splitlines()) == 4


def test_dead_letter_rows_and_facts() -> None:
    d = _letter(job_id="j" * 100, error="e" * 100)
    (row,) = views.dead_letter_rows([d], NOW)
    assert row.dead_at.endswith("(60 s ago)") and row.attempts == "3"
    assert len(row.job) == 40 and row.job_id == d.job_id and len(row.error) == 60
    facts = {f.key: f.value for f in views.dead_letter_facts(d, NOW)}
    assert facts["reason"] == "attempts_exhausted" and facts["payload_size"] == "0 bytes"


def test_every_attempt_of_a_history_is_a_row() -> None:
    history = [
        {"attempt": 1, "outcome": "failed", "error": "http_503", "consumer": "w1",
         "at_ms": NOW - 2000, "detail": "Traceback..."},
        {"attempt": 2, "outcome": "failed", "error": "lease_expired", "at_ms": NOW - 1000},
        {"outcome": "unreadable", "raw": "{oops"},
    ]  # fmt: skip
    rows = views.history_rows(history, NOW)
    assert [(r.attempt, r.outcome, r.error) for r in rows] == [
        ("1", "failed", "http_503"), ("2", "failed", "lease_expired"), ("-", "unreadable", "-"),
    ]  # fmt: skip
    assert rows[0].at.endswith("(2 s ago)") and rows[0].detail == "Traceback..."
    assert rows[2].other == "raw={oops" and rows[1].consumer == "-"


def test_job_facts() -> None:
    job = JobInfo(
        "pay", "j1", "acme", "scheduled", 2, 1, b"x", NOW - 1000, NOW + 500, None, None, None,
        "http_503", [],
    )  # fmt: skip
    facts = {f.key: f.value for f in views.job_facts(job, NOW)}
    assert facts["status"] == "scheduled" and "in 0 s" in facts["not_before"]
    assert facts["started"] == "-" and facts["last_error"] == "http_503"


def test_dead_letter_filters_read_from_the_query() -> None:
    """Ages become entry-id bounds (since = now - newer, until = now - older); an
    unreadable age is named, not an error; the query round-trips for the next page."""
    f = views.dead_letter_filter(
        {"scope": "acme", "newer": "1h", "older": "10m", "order": "oldest"}
    )
    assert f.bounds(NOW) == (NOW - 3_600_000, NOW - 600_000) and f.oldest_first
    assert f.query() == {"scope": "acme", "newer": "1h", "older": "10m", "order": "oldest"}
    bad = views.dead_letter_filter({"newer": "soon", "older": "0s"})
    assert bad.bounds(NOW) == (None, None) and len(bad.errors) == 2
    assert views.dead_letter_filter({}).query() == {}


def test_reasons_to_filter_by_include_the_counted_ones() -> None:
    counters = {"dead:attempts_exhausted": 3, "dead:custom_reason": 1, "started": 9}
    assert "custom_reason" in views.reasons(counters) and "not_retryable" in views.reasons({})


def test_pause_lengths_and_action_texts() -> None:
    assert views.pause_for_s("") is None and views.pause_for_s("10m") == 600.0
    for bad in ("soon", "-1s", "0s"):
        with pytest.raises(ValueError):
            views.pause_for_s(bad)
    assert views.target_text("pay", None) == "pay"
    assert views.target_text("pay", "acme") == "pay scope 'acme'"
    summary = views.replay_summary({"1-0": "replayed", "2-0": "replayed", "3-0": "active"})
    assert summary == "1 active, 2 replayed" and views.replay_summary({}) == "nothing selected"


# -- safety -----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    assert security.is_loopback(host) and security.bind_problem(host, None) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "dash.example.com"])
def test_any_other_address_needs_a_token(host: str) -> None:
    problem = security.bind_problem(host, None)
    assert problem is not None and "--auth-token" in problem
    assert security.bind_problem(host, "x" * security.MIN_TOKEN) is None


def test_a_short_token_is_refused_everywhere() -> None:
    problem = security.bind_problem("127.0.0.1", "short")
    assert problem is not None and "at least 16 characters" in problem


def test_csrf_tokens_are_signed_and_must_match_the_cookie() -> None:
    signer = security.Signer()
    token = signer.new_csrf()
    assert signer.csrf_ok(token, token)
    assert not signer.csrf_ok(token, signer.new_csrf())  # another of ours: not this cookie's
    assert not signer.csrf_ok(None, token) and not signer.csrf_ok(token, None)
    forged = security.Signer().new_csrf()  # well-formed, another key
    assert not signer.csrf_ok(forged, forged)
    assert not signer.csrf_valid("no-dot") and not signer.csrf_valid("a.b.c")
    assert not signer.csrf_ok("é.ü", "é.ü")  # non-ASCII: refused, no TypeError


def test_the_auth_token_by_header_or_session() -> None:
    token = "t" * 20
    assert security.authorized(None, None, False)
    assert security.authorized(token, f"Bearer {token}", False)
    assert security.authorized(token, None, True)  # a valid session cookie
    assert not security.authorized(token, "Bearer wrong", False)
    assert not security.authorized(token, f"Basic {token}", False)
    assert not security.authorized(token, "Bearer ü", False)
    assert not security.authorized(token, None, False)


def test_sessions_are_random_expire_and_can_be_ended() -> None:
    now = [1000.0]
    sessions = security.Sessions(lambda: now[0], ttl_s=60, limit=3)
    a, b = sessions.new(), sessions.new()
    assert a != b and sessions.valid(a) and sessions.valid(b)
    assert not sessions.valid(None) and not sessions.valid("") and not sessions.valid("x")
    sessions.end(a)
    assert not sessions.valid(a) and sessions.valid(b)
    now[0] += 61
    assert not sessions.valid(b)  # expired
    kept = [sessions.new() for _ in range(4)]
    assert not sessions.valid(kept[0]) and all(sessions.valid(s) for s in kept[1:])  # bounded


def test_csrf_tokens_of_a_session_are_bound_to_it() -> None:
    signer = security.Signer()
    token = signer.session_csrf("session-a")
    assert signer.session_csrf_ok("session-a", token)
    assert not signer.session_csrf_ok("session-b", token)
    assert not signer.session_csrf_ok("session-a", None)
    assert not signer.session_csrf_ok("session-a", signer.new_csrf())  # an anonymous one
    assert not security.Signer().session_csrf_ok("session-a", token)  # another process


def test_sealed_values_are_ours_only() -> None:
    signer = security.Signer()
    sealed = signer.seal("pay%3A%20paused")
    assert signer.unseal(sealed) == "pay%3A%20paused"
    assert signer.unseal("pay%3A%20paused") is None
    assert signer.unseal(None) is None
    assert security.Signer().unseal(sealed) is None


def test_host_and_origin_checks() -> None:
    allowed = security.loopback_hosts(["dash.internal"])
    for header in ("127.0.0.1:8080", "localhost", "[::1]:8080", "DASH.internal:443"):
        assert security.host_allowed(header, allowed), header
    for header in ("evil.example", "127.0.0.1.evil.example:80", "", "[bad"):
        assert not security.host_allowed(header, allowed), header
    assert security.host_allowed("anything", None)
    here = "127.0.0.1:8080"
    assert security.same_origin(None, here, "http")
    assert security.same_origin("http://127.0.0.1:8080", here, "http")
    assert not security.same_origin("https://127.0.0.1:8080", here, "http")  # the scheme too
    assert not security.same_origin("http://127.0.0.1:8080", here, "https")
    assert not security.same_origin("http://evil.example", here, "http")
    assert not security.same_origin("null", here, "http")
    assert security.from_here(None, None, here, "http")  # a script: the CSRF token decides
    assert security.from_here(None, "http://127.0.0.1:8080/d/pay", here, "http")
    assert not security.from_here(None, "http://evil.example/x", here, "http")
    assert not security.from_here(None, "https://127.0.0.1:8080/d/pay", here, "http")
    assert not security.from_here("http://evil.example", "http://127.0.0.1:8080/", here, "http")
    assert security.cookie_name("janus_session", True) == "__Host-janus_session"
    assert security.cookie_name("janus_session", False) == "janus_session"


def test_a_token_must_be_printable_without_spaces() -> None:
    assert security.bind_problem("0.0.0.0", " " * 16) is not None
    assert security.bind_problem("0.0.0.0", "a" * 15 + "\x07") is not None
    assert security.bind_problem("0.0.0.0", "a" * 8 + " " + "b" * 8) is not None
    assert security.bind_problem("0.0.0.0", "a" * 16) is None


# -- layers -----------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_the_dashboard_has_no_redis_logic_and_its_views_are_pure() -> None:
    """No dashboard module imports redis (everything goes through the Janus API) or builds
    a key; views and security import no web framework, no clock, no I/O."""
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        assert "redis" not in _imports(path), path.name
        assert "Keys(" not in text and ":{" not in text, path.name
    io = {"redis", "starlette", "jinja2", "uvicorn", "time", "datetime", "socket", "threading"}
    for name in ("views.py", "security.py"):
        assert not _imports(PACKAGE / name) & io, name
