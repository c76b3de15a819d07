"""The dashboard end to end in headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium pointed at them: nothing is downloaded) against a
live run on a real Redis: the overview shows the applied dependencies with the numbers
Redis holds and refreshes them live; a pause clicked on the page stops releases (checked
in Redis with a worker's fetch) and resume restarts them; a replay from the dead-letter
page re-admits the job; a read-only dashboard (``janus dashboard --read-only``, a real
process) refuses the action; a form whose CSRF token was taken out is refused; a payload
holding ``<script>`` is shown as text and never runs. Screenshots of the overview, a
dependency and its dead letters are written under the test's output folder
(``JANUS_UPDATE_SCREENSHOTS=1`` also copies the overview to docs/images/ for the README).

One browser and one dashboard for the module; every wait is a ``wait_until`` with a
deadline on something the page or Redis shows, never a sleep. If Chromium is missing the
tests fail (never skip), naming the apt-get command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from janus.client import Janus, Job
from janus.dashboard import security
from janus.dashboard.app import DashboardConfig, create_app
from janus.testing import free_port

from tests.helpers import make_janus, raw_client, take, unchanged, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
REPO = Path(__file__).resolve().parents[2]

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
search:
  rate: 50
  burst: 100
  max_in_flight: 20
"""
SCRIPT = "<script>window.__xss = 1; alert('xss')</script>"
TAG = '<img src=x onerror="window.__xss = 2">'
#: How long any one wait may take (generous: the suite must pass on a busy machine).
WAIT_S = 60


@dataclass
class Site:
    """The live run: Redis, the Janus client, the dashboard's URL, the test data."""

    url: str
    prefix: str
    jn: Janus
    base: str
    screens: Path
    dead: dict[str, str]
    """job id -> dead-letter entry id"""


def _dead(jn: Janus, jobs: list[Job]) -> dict[str, str]:
    """Submit ``jobs`` and fail each once (max_attempts 1): job id -> entry id."""
    jn.submit_many("pay", jobs)
    w = jn.worker("pay", group="g", consumer="setup")
    got = take(jn, "pay", consumer="setup")
    w.report([w.failed(j, "http_500", detail=f"Traceback ({j.id})") for j in got])
    return {d.job_id: d.entry_id for d in jn.dead_letters("pay")}


def _finish(jn: Janus, jobs: list[Any]) -> None:
    """Complete what a test took (no lease left running into the next test)."""
    w = jn.worker("pay", group="g", consumer="w1")
    for job in jobs:
        w.complete(job)


@pytest.fixture(scope="module")
def site(standalone_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Policies applied, two dead letters (one holding <script>), three jobs waiting, and
    the dashboard served by uvicorn on a free port in a thread of this process."""
    import uvicorn

    url, prefix = standalone_server.url, "t" + uuid.uuid4().hex[:12]
    jn = make_janus(url, prefix, BODY)
    dead = _dead(
        jn,
        [
            Job(scope=TAG, job_id="xss", payload=SCRIPT),
            Job(scope="vip", job_id="bin", payload=b"\x00\x01\xfe\xff binary"),
        ],
    )
    jn.submit_many("pay", [Job(scope=s, job_id=f"w-{s}") for s in ("a", "b", "vip")])
    jn.submit_many("llm", [Job(scope="team-a", job_id=f"l{i}", cost=2) for i in range(3)])
    jn.pause("search", for_s=3600)
    config = DashboardConfig(
        redis_url=url, prefix=prefix, allowed_hosts=security.loopback_hosts(), refresh_ms=500
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(jn, config), host="127.0.0.1", port=port, log_config=None,
            access_log=False, lifespan="off",
        )
    )  # fmt: skip
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    wait_until(lambda: server.started, WAIT_S, "the dashboard to listen")
    screens = tmp_path_factory.mktemp("dashboard-screenshots")
    try:
        yield Site(url, prefix, jn, f"http://127.0.0.1:{port}", screens, dead)
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        jn.close()
        print(f"\ndashboard screenshots: {screens}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module; FAILS (never skips) when it is not installed."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the dashboard's browser tests need Debian's "
            f"Chromium. Install it: sudo {INSTALL} (scripts/bootstrap.sh does it as root)",
            pytrace=False,
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"selenium is missing ({exc}): pip install -e '.[dev]'", pytrace=False)
    options = Options()
    options.binary_location = CHROMIUM  # with the driver's path: Selenium Manager never runs
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--window-size=1600,1000", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _by_id(browser: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id)


def _css(browser: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, selector)


def _text_of(browser: Any, element_id: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return str(_by_id(browser, element_id).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _wait_text(browser: Any, element_id: str, wanted: str) -> None:
    """Wait until the element (on the page the last click led to) holds ``wanted``."""
    wait_until(lambda: wanted in _text_of(browser, element_id), WAIT_S, f"#{element_id}: {wanted}")


def _cell(browser: Any, key: str) -> str:
    return str(_css(browser, f'[data-k="{key}"]').text)


def _shot(site: Site, browser: Any, name: str) -> Path:
    path = site.screens / f"{name}.png"
    browser.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def test_the_overview_shows_the_applied_dependencies_with_correct_numbers(
    site: Site, browser: Any
) -> None:
    """Every applied dependency has a row with the numbers Redis holds; the page goes live
    (its JSON twin polled) and started/s appears once attempts start."""
    browser.get(site.base + "/")
    st = site.jn.status("pay")
    assert _cell(browser, "pay.policy") == f"v{st.policy_version}" == "v1"
    assert (_cell(browser, "pay.rate"), _cell(browser, "pay.burst")) == ("20/s", "20")
    assert _cell(browser, "pay.in_flight") == "0 / 10"
    assert _cell(browser, "pay.queued_jobs") == str(st.scheduled) == "3"
    assert _cell(browser, "pay.dead_letters") == str(st.dead_letters) == "2"
    assert _cell(browser, "pay.circuit") == "off" and _cell(browser, "pay.paused") == "no"
    assert (_cell(browser, "llm.rate"), _cell(browser, "llm.queued_jobs")) == ("2/s", "3")
    assert (_cell(browser, "llm.queued_cost"), _cell(browser, "llm.in_flight")) == ("6", "0 / -")
    assert _cell(browser, "search.paused").startswith("by hand until")
    assert "level-bad" in _by_id(browser, "dep-search").get_attribute("class")
    wait_until(
        lambda: _text_of(browser, "live-state").startswith("live"), WAIT_S, "the live refresh"
    )
    running = take(site.jn, "pay", count=2)
    assert len(running) == 2
    wait_until(lambda: _cell(browser, "pay.in_flight") == "2 / 10", WAIT_S, "in flight 2")
    wait_until(
        lambda: _cell(browser, "pay.started_s") not in ("-", "0"), WAIT_S, "started/s measured"
    )
    assert float(_cell(browser, "pay.started_s")) > 0
    _shot(site, browser, "overview")
    if os.environ.get("JANUS_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(site.screens / "overview.png", REPO / "docs/images/dashboard-overview.png")
    _finish(site.jn, running)


def test_a_pause_from_the_page_stops_releases_and_resume_restarts_them(
    site: Site, browser: Any
) -> None:
    """Pause (until resumed) -> confirm: Redis holds the dependency and a worker's fetch
    gets nothing; Resume -> confirm: the same fetch gets the waiting work."""
    from selenium.webdriver.support.ui import Select

    jn = site.jn
    browser.get(site.base + "/d/pay")
    Select(_css(browser, "#pause-form select[name=for]")).select_by_value("")
    _by_id(browser, "pause").click()
    _wait_text(browser, "confirm-text", "Pause pay until resumed")
    assert jn.status("pay").held_until_ms is None  # asking changed nothing
    _by_id(browser, "confirm").click()
    _wait_text(browser, "flash", "pay: paused until resumed")
    assert jn.status("pay").held_until_ms == -1
    waiting = jn.status("pay").scheduled
    assert waiting >= 1 and take(jn, "pay") == []  # held: the waiting work is not released
    late = jn.submit("pay", scope="a", job_id="late")  # producers learn at once
    assert (late.status, late.reason) == ("rejected", "dependency_paused")
    wait_until(lambda: _cell(browser, "paused").startswith("by hand"), WAIT_S, "paused shown")
    _by_id(browser, "resume").click()
    _wait_text(browser, "confirm-text", "Resume pay")
    _by_id(browser, "confirm").click()
    _wait_text(browser, "flash", "pay: resumed")
    assert jn.status("pay").held_until_ms is None
    got = take(jn, "pay")
    assert len(got) == waiting and jn.status("pay").scheduled == 0
    # A few seconds of activity for the chart (each refresh reads the counters once more).
    wait_until(
        lambda: len(_by_id(browser, "chart-started").get_attribute("points").split()) >= 2,
        WAIT_S,
        "two points on the chart",
    )
    _finish(jn, got)
    _shot(site, browser, "dependency")


def test_a_replay_from_the_dead_letter_page_readmits_the_job(site: Site, browser: Any) -> None:
    """Tick a dead letter, Replay selected -> confirm: the job's record is scheduled again
    and a worker gets it."""
    jn, entry = site.jn, site.dead["bin"]
    assert jn.job("pay", "bin").status == "dead"  # type: ignore[union-attr]
    browser.get(site.base + "/d/pay/dead")
    _shot(site, browser, "dead-letters")
    _css(browser, f'input[name="entry"][value="{entry}"]').click()
    _by_id(browser, "replay-selected").click()
    _wait_text(browser, "confirm-text", "Send 1 dead-lettered job(s) of pay back")
    _by_id(browser, "confirm").click()
    _wait_text(browser, "flash", "pay: replay: 1 replayed")
    assert jn.job("pay", "bin").status == "scheduled"  # type: ignore[union-attr]
    got = take(jn, "pay")
    assert [j.id for j in got] == ["bin"]
    _finish(jn, got)


def test_a_payload_holding_script_is_shown_as_text(site: Site, browser: Any) -> None:
    """The payload, its scope name (an <img onerror>) and its error are text on the page:
    nothing ran (no alert, no global set), the text is visible."""
    from selenium.common.exceptions import NoAlertPresentException

    browser.get(site.base + f"/d/pay/dead/{site.dead['xss']}")
    assert _by_id(browser, "payload").text == SCRIPT
    assert TAG in _by_id(browser, "fact-scope").text
    browser.get(site.base + "/d/pay/dead")
    assert TAG in browser.find_element("tag name", "main").text
    browser.get(site.base + "/job?dep=pay&id=xss")
    assert _by_id(browser, "payload").text == SCRIPT
    assert browser.execute_script("return window.__xss === undefined") is True
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018


def test_a_form_without_its_csrf_token_is_refused(site: Site, browser: Any) -> None:
    """The pause form with its CSRF field taken out (and confirm=yes put in): 403, and
    nothing changed in Redis."""
    browser.get(site.base + "/d/pay")
    browser.execute_script(
        """
        var form = document.getElementById("pause-form");
        form.querySelector("input[name=csrf]").remove();
        var yes = document.createElement("input");
        yes.type = "hidden"; yes.name = "confirm"; yes.value = "yes";
        form.appendChild(yes);
        """
    )
    with unchanged(raw_client(site.url), site.prefix):
        _by_id(browser, "pause").click()
        _wait_text(browser, "message-title", "CSRF check failed")
    assert "nothing was changed" in _text_of(browser, "message-text")
    assert site.jn.status("pay").held_until_ms is None


def test_a_read_only_dashboard_refuses_the_action(site: Site, browser: Any, tmp_path: Path) -> None:
    """`janus dashboard --read-only` (a real process, stopped by its PID): no action on
    the pages, and a pause posted anyway is a 403 that changes nothing."""
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    command = [
        sys.executable, "-m", "janus", "dashboard", "--redis", site.url, "--prefix",
        site.prefix, "--port", str(port), "--read-only",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(base, proc), WAIT_S, "janus dashboard --read-only")
        browser.get(base + "/d/pay")
        assert _by_id(browser, "read-only").text == "read-only"
        assert browser.find_elements("id", "pause") == []
        browser.execute_script(
            """
            var form = document.createElement("form");
            form.method = "post"; form.action = "/d/pay/pause";
            [["confirm", "yes"], ["for", ""]].forEach(function (kv) {
              var input = document.createElement("input");
              input.type = "hidden"; input.name = kv[0]; input.value = kv[1];
              form.appendChild(input);
            });
            document.body.appendChild(form);
            form.submit();
            """
        )
        with unchanged(raw_client(site.url), site.prefix):
            _wait_text(browser, "message-title", "Read-only dashboard")
        assert "Nothing was changed" in _text_of(browser, "message-text")
        assert site.jn.status("pay").held_until_ms is None
    finally:
        proc.terminate()
        try:
            proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT_S)
        log.close()
    output = (tmp_path / "dashboard.log").read_text()
    assert f"janus dashboard (read-only): http://127.0.0.1:{port}/" in output


def _healthy(base: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"janus dashboard exited with {proc.returncode}")
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
