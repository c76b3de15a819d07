"""Security review of the dashboard, in headless Chromium (the same Debian chromium +
chromedriver as test_dashboard_browser.py): what a real browser posts is not what the page
holds for scope names with a line break.

F3 (medium, wrong target of an action): the scope page and its confirm page carry the
scope name in ``<input type="hidden" value="...">``. A browser normalises line breaks
twice on the way back: CR / CRLF in the markup become LF when the page is parsed, and every
LF / CR is sent as CRLF by the form encoder. A scope whose name holds "\\n" (or "\\r") --
check_user_name accepts both -- is therefore never the scope the POST names: "Pause" pauses
a different, unused scope (``"tenant\\r\\nx"``) and the page says the pause worked, while
the real tenant keeps being released; "Resume" of a scope paused from the CLI/API says
"was not paused by hand" and leaves it paused.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from janus.client import Janus
from janus.dashboard import security
from janus.dashboard.app import DashboardConfig, create_app
from janus.testing import free_port

from tests.helpers import make_janus, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 60
BODY = """
pay:
  rate: 20
  burst: 20
  max_wait: 1h
"""


@pytest.fixture(scope="module")
def site(standalone_server: Any) -> Iterator[tuple[Janus, str]]:
    import uvicorn

    prefix = "r" + uuid.uuid4().hex[:12]
    jn = make_janus(standalone_server.url, prefix, BODY)
    config = DashboardConfig(
        redis_url=standalone_server.url, prefix=prefix, allowed_hosts=security.loopback_hosts()
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(jn, config), host="127.0.0.1", port=port, log_config=None,
            access_log=False, lifespan="off",
        )
    )  # fmt: skip
    thread = threading.Thread(target=server.run, name="review-dashboard", daemon=True)
    thread.start()
    wait_until(lambda: server.started, WAIT_S, "the dashboard to listen")
    try:
        yield jn, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        jn.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{missing} not found: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("review-chromium-profile")
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _click_then_confirm(browser: Any, button_id: str) -> str:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, button_id).click()
    wait_until(lambda: browser.find_elements(By.ID, "confirm"), WAIT_S, "the confirm page")
    browser.find_element(By.ID, "confirm").click()
    wait_until(lambda: browser.find_elements(By.ID, "flash"), WAIT_S, "the flash line")
    return str(browser.find_element(By.ID, "flash").text)


@pytest.mark.parametrize("scope", ["tenant\nx", "tenant\rx"])
def test_pausing_a_scope_from_the_browser_pauses_that_scope(
    site: tuple[Janus, str], browser: Any, scope: str
) -> None:
    jn, base = site
    jn.submit("pay", scope=scope, job_id=f"j-{uuid.uuid4().hex[:6]}")
    browser.get(f"{base}/d/pay/scope?name={quote(scope, safe='')}")
    said = _click_then_confirm(browser, "pause-scope")
    assert "paused until resumed" in said  # the page says it worked...
    wrong = jn.scope_held_until("pay", "tenant\r\nx")
    jn.resume("pay", scope="tenant\r\nx")
    held = jn.scope_held_until("pay", scope)
    jn.resume("pay", scope=scope)
    assert held == -1, (
        f"the browser paused {('tenant' + chr(13) + chr(10) + 'x')!r} (held={wrong}), "
        f"not {scope!r} (held={held})"
    )


def test_resuming_a_scope_from_the_browser_resumes_it(
    site: tuple[Janus, str], browser: Any
) -> None:
    jn, base = site
    scope = "tenant\ny"
    jn.pause("pay", scope=scope)  # e.g. `janus pause pay --scope ...` in an incident
    browser.get(f"{base}/d/pay/scope?name={quote(scope, safe='')}")
    said = _click_then_confirm(browser, "resume-scope")
    held = jn.scope_held_until("pay", scope)
    jn.resume("pay", scope=scope)
    assert held is None, f"still paused after the dashboard said {said!r}"
