"""Review: a revision-1 library (the build before the change) loaded again after a
FUNCTION FLUSH (or on a node without the library) by a client of that build, during a
rolling deploy. docs/protocol.md: "old and new clients work against one Redis during a
rolling deploy"; the brief: jobs survive "script or function flushes"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from janus.client import Janus
from janus.policy import parse_policy_text

from tests.helpers import policy, raw_client

OLD = "5cf00b9"  # the parent of "Events stream, pause/resume by hand, policy delete"
ROOT = Path(__file__).resolve().parents[2]
BODY = """
pay:
  rate: 1000
  burst: 100
  max_wait: 1h
"""

OLD_CLIENT = """
import sys
import janus.scripts
assert janus.scripts.REVISION == 1, janus.scripts.__file__
from janus.client import Janus, Job
from janus.policy import parse_policy_text
url, prefix, action = sys.argv[1:4]
jn = Janus.from_url(url, prefix=prefix)
try:
    if action == "apply":
        body = "dependencies:\\n  pay:\\n    rate: 1000\\n    burst: 100\\n    max_wait: 1h\\n"
        jn.apply_policies(parse_policy_text(body, "p.yaml"))
        jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(3)])
        print("OK applied")
    elif action == "submit":
        print("OK", jn.submit("pay", scope="a", job_id="old1").status)
    elif action == "fetch":
        w = jn.worker("pay", group="g", consumer="old")
        print("OK", " ".join(j.id for j in w.fetch(count=10, block_ms=None)))
except Exception as exc:
    print("ERROR", type(exc).__name__, exc)
"""


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("janus_rev1")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", OLD, "src", "lua"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    (dest / "old_client.py").write_text(OLD_CLIENT)
    return dest


def _old(tree: Path, url: str, prefix: str, action: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    out = subprocess.run(
        [sys.executable, str(tree / "old_client.py"), url, prefix, action],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip() or out.stderr.strip()[-400:]


def test_every_call_of_a_revision_1_library_fails_on_a_policy_the_new_build_applied(
    old_tree: Path, standalone_url: str, prefix: str
) -> None:
    """apply_policy.lua (revision 2) packs 41 fields (`deleting` appended); revision 1's
    load_policy does p[POLICY_FIELDS[i]] for each, and POLICY_FIELDS[41] is nil:
    'table index is nil' on every submit and fetch of every old process."""
    jn = Janus.from_url(standalone_url, prefix=prefix)
    jn.apply_policies(parse_policy_text(policy(BODY), "p.yaml"))
    raw_client(standalone_url).function_flush()
    submit = _old(old_tree, standalone_url, prefix, "submit")
    fetch = _old(old_tree, standalone_url, prefix, "fetch")
    assert submit.startswith("OK") and fetch.startswith("OK"), (submit, fetch)
