"""Security: a least-privilege ACL user runs all of Janus, keys stay inside the deployment's
prefix, credentials failures are their own error (never retried for ever), passwords never
appear in messages, and TLS works with certificates made here. Real redis-server."""

from __future__ import annotations

import logging
import subprocess
import uuid
from pathlib import Path

import pytest
import redis

from janus import doctor
from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.errors import AccessDenied, AuthenticationFailed, RedisUnavailable
from janus.policy import parse_policy_text
from janus.testing import RedisServer
from janus.urls import InvalidUrl, check_url, redact

from tests.conftest import RedisClient
from tests.helpers import policy

ROOT = Path(__file__).resolve().parents[2]
BODY = """
pay:
  rate: 100
  burst: 10
  lease: 5s
  retry: {max_attempts: 2, backoff: {base: 1ms, max: 1ms, jitter: none}, budget: false}
"""


def _nodes(client: RedisClient) -> list[redis.Redis]:
    if isinstance(client, redis.RedisCluster):
        return [n.redis_connection for n in client.get_primaries()]  # type: ignore[misc]
    return [client]


def _user_url(url: str, user: str, password: str) -> str:
    return url.replace("redis://", f"redis://{user}:{password}@", 1)


def _whole_flow(jn: Janus) -> None:
    """Everything a deployment does: apply, submit, fetch, heartbeat, report (retry and dead
    letter), a coordinator step, status, dead letters, replay, purge, a worker leaving, and
    the operator's actions (pause, resume, events, delete)."""
    jn.apply_policies(parse_policy_text(policy(BODY), "p.yaml"))
    assert jn.submit("pay", scope="t", job_id="a").status == "ready"
    jn.submit_many("pay", [Job(scope="t", job_id="b"), Job(scope="u", job_id="c")])
    w = jn.worker("pay", group="g", consumer="w1")
    a, b, c = w.fetch(count=3, block_ms=None)
    w.heartbeat(a)
    w.complete(a)
    assert w.fail(b, "http_503").decision == "retry"
    w.fail(c, "ValueError")  # not retried: dead letter... unless retry_on matches
    Coordinator(jn.store).step("pay")
    got = w.fetch(count=3, block_ms=1000)
    for job in got:
        w.fail(job, "http_503")  # attempt 2 of 2: dead
    st = jn.status("pay")
    assert st.dead_letters >= 1 and st.in_flight == 0
    letters = jn.dead_letters("pay")
    assert set(jn.replay("pay", letters).values()) == {"replayed"}
    assert jn.purge("pay", letters) == len(letters)
    assert jn.job("pay", "a") is not None
    assert jn.scope_status("pay", "t").scope == "t"
    assert w.store.forget_consumer("pay", "g", "w1")  # a worker leaving its group cleanly
    # Operations: metrics' reads, pauses by hand, events, a top-scopes status, a deletion.
    assert jn.counters("pay")["started"] >= 3
    jn.pause("pay", scope="t", for_s=60)
    jn.pause("pay")
    jn.submit("pay", scope="t", job_id="d")
    assert jn.status("pay", top=3).held_scopes == 1
    assert jn.resume("pay").status == "resumed"
    jn.resume("pay", scope="t")
    assert jn.events("pay", last=2)[-1].kind == "resumed"
    assert jn.events("pay", count=1)[0].kind == "policy_applied"
    progress = jn.delete_policy("pay", drop=True)
    assert progress.deleted and progress.dropped >= 1  # d, and the replayed letters


@pytest.mark.parametrize("rules", ["least-privilege", "+@all -@dangerous"])
def test_an_acl_user_without_dangerous_commands_runs_the_whole_flow(
    redis_url: str, redis_client: RedisClient, prefix: str, rules: str
) -> None:
    """The least-privilege rules in the README (janus.doctor.ACL_RULES), and the common
    `+@all -@dangerous`, run every producer, worker, coordinator and operator call; `janus
    doctor` says it cannot read CONFIG instead of failing."""
    cluster = isinstance(redis_client, redis.RedisCluster)
    user, password = f"u{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    acl = (
        doctor.acl_rules(prefix, cluster=cluster)
        if rules == "least-privilege"
        else f"resetkeys ~{prefix}:* +@all -@dangerous"
    )
    for node in _nodes(redis_client):
        node.execute_command("ACL", "SETUSER", user, "on", f">{password}", *acl.split())
    try:
        jn = Janus.from_url(_user_url(redis_url, user, password), prefix=prefix)
        _whole_flow(jn)
        findings = doctor.evaluate(jn.store.server_configs())
        assert any("CONFIG GET is not allowed here" in f.message for f in findings)
        jn.close()
    finally:
        for node in _nodes(redis_client):
            node.execute_command("ACL", "DELUSER", user)


def test_the_readme_documents_the_acl_rules_verbatim() -> None:
    """The README shows exactly the rules the test above proves."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert doctor.ACL_RULES.replace("<prefix>", "janus") in readme


def test_a_user_of_one_prefix_cannot_touch_another_deployment(
    standalone_url: str, standalone_server: RedisServer, prefix: str
) -> None:
    """`~janus:*` (with the colon) keeps a user to its own deployment: using the prefix
    `<prefix>2` is AccessDenied, with the reason; `~janus*` would have matched it."""
    admin = redis.Redis.from_url(standalone_url)
    user, password = f"u{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}",
                          *doctor.acl_rules(prefix).split())  # fmt: skip
    try:
        url = _user_url(standalone_url, user, password)
        other = Janus.from_url(url, prefix=prefix + "2")
        with pytest.raises(AccessDenied) as err:
            other.apply_policies(parse_policy_text(policy(BODY), "p.yaml"))
        assert "the Redis user may not do this" in str(err.value)
        assert "no permissions to access one of the keys" in str(err.value)
        assert password not in str(err.value)
    finally:
        admin.execute_command("ACL", "DELUSER", user)


def test_a_wrong_password_is_authentication_failed_and_never_retried_for_ever(
    standalone_url: str, prefix: str
) -> None:
    """A wrong password used to be reported as "Redis is unavailable" and retried for ever.
    It is AuthenticationFailed (not a RedisUnavailable), its message hides the password, and
    a running coordinator whose user is revoked stops and raises instead of retrying."""
    import threading

    admin = redis.Redis.from_url(standalone_url)
    user, password = f"u{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}",
                          *doctor.acl_rules(prefix).split())  # fmt: skip
    try:
        with pytest.raises(AuthenticationFailed) as err:
            Janus.from_url(_user_url(standalone_url, user, "wrong-secret-123"))
        assert not isinstance(err.value, RedisUnavailable)
        assert "wrong-secret-123" not in str(err.value) and "***" in str(err.value)
        assert "refused the credentials" in str(err.value)
        jn = Janus.from_url(_user_url(standalone_url, user, password), prefix=prefix)
        jn.apply_policies(parse_policy_text(policy(BODY), "p.yaml"))
        coord = Coordinator(jn.store, idle_s=0.2, watch_s=0.2, refresh_s=0.2)
        raised: list[BaseException] = []

        def run() -> None:
            try:
                coord.run(check=False)
            except BaseException as exc:  # what the loop raised is the result
                raised.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        admin.execute_command("ACL", "SETUSER", user, "resetpass", f">{uuid.uuid4().hex}")
        admin.execute_command("CLIENT", "KILL", "USER", user)
        thread.join(30)
        assert not thread.is_alive(), "the coordinator kept retrying a credential failure"
        assert raised and isinstance(raised[0], AuthenticationFailed), raised
    finally:
        admin.execute_command("ACL", "DELUSER", user)


def test_passwords_never_appear_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    """A URL's password is redacted in every message: connection errors, URL errors."""
    caplog.set_level(logging.DEBUG)
    url = "redis://app:hunter2-secret@127.0.0.1:1/0"
    with pytest.raises(RedisUnavailable) as err:
        Janus.from_url(url, socket_timeout=0.5)
    assert "hunter2-secret" not in str(err.value)
    with pytest.raises(InvalidUrl) as bad:
        check_url("http://app:hunter2-secret@host/0")
    assert "hunter2-secret" not in str(bad.value)
    assert "hunter2-secret" not in caplog.text
    assert redact(url) == "redis://app:***@127.0.0.1:1/0"
    assert redact("rediss://h/0?ssl_password=pw&x=1") == "rediss://h/0?ssl_password=***&x=1"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis:/host", "is not a URL"),
        ("http://host:6379/0", "the scheme must be redis://, rediss:// (TLS) or unix://"),
        ("127.0.0.1:6379", "is not a URL: write redis://127.0.0.1:6379"),
        ("redis://host:6379/99", "the database index must be a number 0..15, got '99'"),
        ("redis://host:6379/x", "the database index must be a number"),
        ("redis://:6379/0", "no host"),
        ("redis://host:99999/0", "invalid Redis URL"),
        ("redis://host/0?sockettimeout=1", "unknown option 'sockettimeout'"),
        ("", "the Redis URL is empty"),
    ],
)
def test_bad_urls_get_one_clear_line(url: str, message: str) -> None:
    """Bad URLs and database indexes are refused before connecting, in one line."""
    with pytest.raises(InvalidUrl) as err:
        Janus.from_url(url)
    assert message in str(err.value) and "\n" not in str(err.value)


def _make_certs(tmp: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, with openssl."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=janus-ca",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    (tmp / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
            f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf",
            "-out", f"{name}.crt")  # fmt: skip
    return {n: tmp / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def test_tls_with_a_ca_and_client_certificates_runs_the_whole_flow(tmp_path: Path) -> None:
    """rediss:// with the CA file and a client certificate (the server requires one): the
    whole flow runs over TLS; without the client certificate the connection is refused."""
    from janus.testing import free_port

    certs = _make_certs(tmp_path)
    tls_port = free_port()
    args = ("--tls-port", str(tls_port), "--tls-cert-file", str(certs["server.crt"]),
            "--tls-key-file", str(certs["server.key"]), "--tls-ca-cert-file",
            str(certs["ca.crt"]), "--tls-auth-clients", "yes")  # fmt: skip
    with RedisServer.start(extra_args=args):
        base = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={certs['ca.crt']}"
        url = f"{base}&ssl_certfile={certs['client.crt']}&ssl_keyfile={certs['client.key']}"
        jn = Janus.from_url(url, prefix="tls")
        _whole_flow(jn)
        jn.close()
        with pytest.raises(RedisUnavailable):
            Janus.from_url(base, prefix="tls", socket_timeout=2)
