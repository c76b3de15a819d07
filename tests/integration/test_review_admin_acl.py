"""Review: a coordinator of the new build under the ACL the previous release documented
(no +xrevrange, no +srem; the CHANGELOG says the rules "gain" them)."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
import redis

from janus import doctor
from janus.client import Janus
from janus.coordinator import Coordinator
from janus.testing import FakeClock

from tests.helpers import make_janus

BODY = """
pay:
  rate: 1000
  burst: 100
  max_wait: 1h
"""


def test_without_xrevrange_the_watcher_dies_silently_and_wake_ups_stop(
    standalone_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """_watch_loop treats AccessDenied as FATAL and returns without a log line: the
    dependency's watcher (its BLPOP on `wake`, i.e. the coordinator's early wake-ups, and
    the event log) is gone, while the coordinator keeps running and looks healthy."""
    caplog.set_level(logging.DEBUG, logger="janus.coordinator")
    make_janus(standalone_url, prefix, BODY, FakeClock())
    old_rules = doctor.acl_rules(prefix).replace(" +srem", "").replace(" +xrevrange", "")
    admin = redis.Redis.from_url(standalone_url)
    user, password = f"u{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", *old_rules.split())
    try:
        url = standalone_url.replace("redis://", f"redis://{user}:{password}@", 1)
        jn = Janus.from_url(url, prefix=prefix)
        co = Coordinator(jn.store, dependencies=["pay"], watch_s=0.2)
        co._watch("pay")
        time.sleep(1.0)
        alive = co._watchers["pay"].is_alive()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        co.stop()
        assert alive or errors, "watcher thread ended, nothing logged"
    finally:
        admin.execute_command("ACL", "DELUSER", user)
