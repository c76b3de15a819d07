"""Failover to an async replica: what it can lose, and the opt-in durability that loses
nothing acknowledged. Real primary and replica processes; the replica replicates through a
TCP proxy that can hold the primary's stream (replication lag), then the primary is killed
-9 with the held bytes dropped, and the replica is promoted.

Redis replicates asynchronously: a write acknowledged by the primary and not yet on the
replica is gone after the promotion, and so is its job id (a re-submit runs the job again).
With ``wait_replicas=1`` every state-changing call returns only once the replica has it
(WAIT, in the same round trip), so what a producer or worker was told is what survives.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from janus.client import Janus
from janus.errors import NotReplicated, RedisUnavailable
from janus.policy import parse_policy_text
from janus.testing import RedisServer

from tests.helpers import policy, wait_until

BODY = """
pay:
  rate: 10000
  burst: 10000
  lease: 30s
  max_wait: 1h
"""


class LaggyLink:
    """A TCP proxy between a replica and its primary. ``hold()`` keeps what the primary
    sends from reaching the replica (its acks still flow back): replication lag. ``cut()``
    drops the held bytes and closes the link, as a dying primary's unsent stream is lost."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.holding = threading.Event()
        self.closed = threading.Event()
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                down, _ = self.server.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:  # the primary is gone (killed by the test): no link to make
                down.close()
                continue
            self.socks += [down, up]
            threading.Thread(target=self._pump, args=(up, down, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(down, up, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_primary: bool) -> None:
        held = b""
        while not self.closed.is_set():
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if from_primary and self.holding.is_set():
                held += data  # never delivered: the failover loses it
                continue
            try:
                dst.sendall(data)
            except OSError:
                return

    def hold(self) -> None:
        self.holding.set()

    def cut(self) -> None:
        self.closed.set()
        for sock in [self.server, *self.socks]:
            with contextlib.suppress(OSError):
                sock.close()


@contextmanager
def primary_and_replica() -> Iterator[tuple[RedisServer, RedisServer, LaggyLink]]:
    with RedisServer.start() as primary:
        link = LaggyLink(primary.port)
        args = ("--replicaof", "127.0.0.1", str(link.port))
        try:
            with RedisServer.start(extra_args=args) as replica:
                r = redis.Redis(port=replica.port)
                wait_until(lambda: r.info("replication").get("master_link_status") == "up",
                           30, "the replica to sync")  # fmt: skip
                r.close()
                yield primary, replica, link
        finally:
            link.cut()


def _failover(primary: RedisServer, replica: RedisServer, link: LaggyLink) -> redis.Redis:
    """kill -9 the primary (what it had not yet delivered is lost), promote the replica."""
    primary.kill()
    link.cut()
    client = redis.Redis(port=replica.port)
    client.execute_command("REPLICAOF", "NO", "ONE")
    return client


@pytest.mark.parametrize("durable", [False, True])
def test_what_a_failover_to_an_async_replica_loses(durable: bool) -> None:
    """Without durability, every submit acknowledged while the replica lagged is lost in
    the failover (and a re-submit of its id creates it again). With wait_replicas=1 those
    submits are refused with NotReplicated instead of acknowledged, and every acknowledged
    submit, fetch and report is on the new primary: 0 lost."""
    with primary_and_replica() as (primary, replica, link):
        kw = {"wait_replicas": 1, "wait_timeout_ms": 200} if durable else {}
        jn = Janus.from_url(primary.url, prefix="fo", socket_timeout=2.0, **kw)  # type: ignore[arg-type]
        jn.apply_policies(parse_policy_text(policy(BODY), "p.yaml"))
        w = jn.worker("pay", group="g", consumer="w1")
        before = [f"early{i}" for i in range(20)]
        for job_id in before:
            jn.submit("pay", scope="t", job_id=job_id)
        done = w.fetch(count=10, block_ms=None)
        for job in done:
            w.complete(job)
        if not durable:  # let the async replica catch up, as it normally would
            admin = redis.Redis(port=primary.port)
            offset = admin.info("replication")["master_repl_offset"]
            wait_until(lambda: redis.Redis(port=replica.port).info("replication")
                       .get("slave_repl_offset", 0) >= offset, 30, "replication")  # fmt: skip
        link.hold()  # replication lag from here on
        acknowledged, refused = [], []
        for i in range(30):
            job_id = f"late{i}"
            try:
                jn.submit("pay", scope="t", job_id=job_id)
                acknowledged.append(job_id)
            except NotReplicated:
                refused.append(job_id)
        new_primary = _failover(primary, replica, link)
        jn.close()
        after = Janus.from_url(f"redis://127.0.0.1:{replica.port}/0", prefix="fo")
        lost = [j for j in before + acknowledged if after.job("pay", j) is None]
        completed = [j.id for j in done]
        still_done = [j for j in completed if after.job("pay", j).status == "completed"]  # type: ignore[union-attr]
        print(f"\ndurable={durable}: acknowledged {len(before)} + {len(acknowledged)} submits, "
              f"refused {len(refused)}; lost after failover: {len(lost)}; completed reports "
              f"kept: {len(still_done)}/{len(completed)}")  # fmt: skip
        if durable:
            assert lost == [] and still_done == completed
            assert len(refused) == 30 and acknowledged == []
        else:
            assert refused == [] and lost == acknowledged and len(lost) == 30
            again = after.submit("pay", scope="t", job_id=lost[0])
            assert again.created  # its idempotency key vanished with it
        new_primary.close()
        after.close()


def test_durability_refuses_when_no_replica_answers_in_time() -> None:
    """wait_replicas against a server with no replica: every state-changing call raises
    NotReplicated (a RedisUnavailable: retrying is safe) within the timeout, saying why."""
    with RedisServer.start() as server:
        jn = Janus.from_url(server.url, prefix="nr", wait_replicas=1, wait_timeout_ms=50)
        with pytest.raises(NotReplicated) as err:
            jn.apply_policies(parse_policy_text(policy(BODY), "p.yaml"))
        assert isinstance(err.value, RedisUnavailable)
        assert "only 0 of 1 replica(s) confirmed it within 50 ms" in str(err.value)
        t0 = time.monotonic()
        with pytest.raises(NotReplicated):
            jn.submit("pay", scope="t", job_id="x")
        assert time.monotonic() - t0 < 10  # bounded by the timeout, not a hang


def test_a_read_only_replica_refuses_every_call_with_a_clear_error() -> None:
    """Pointed at a replica (say, a stale URL after a failover), every state-changing call
    is refused whole with RedisReadOnly (a RedisUnavailable), and nothing changes there."""
    from janus.errors import RedisReadOnly

    with primary_and_replica() as (primary, replica, _link):
        Janus.from_url(primary.url, prefix="ro").apply_policies(
            parse_policy_text(policy(BODY), "p.yaml")
        )
        stale = Janus.from_url(f"redis://127.0.0.1:{replica.port}/0", prefix="ro")
        wait_until(lambda: stale.status("pay").policy_version == 1, 30, "replication")
        before = redis.Redis(port=replica.port).dbsize()
        with pytest.raises(RedisReadOnly) as err:
            stale.submit("pay", scope="t", job_id="x")
        assert isinstance(err.value, RedisUnavailable)
        assert "read-only replica" in str(err.value)
        with pytest.raises(RedisReadOnly):
            stale.worker("pay", group="g", consumer="c").fetch(block_ms=None)
        assert redis.Redis(port=replica.port).dbsize() == before
