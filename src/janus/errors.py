"""Every exception Janus raises, in one tree.

Outcomes are values, errors are bugs: a rejected submit, a job that must wait, an empty
queue are ordinary return values with a reason (see :mod:`janus.decisions`). Exceptions are
for misuse of the API and for infrastructure faults::

    JanusError
    ├── PolicyError            a policy file (or set of files) failed validation
    ├── InvalidInput           the caller passed something Janus will not accept;
    │   │                      nothing was written to Redis
    │   ├── InvalidName        empty, oversized or malformed dependency / scope / job id
    │   ├── InvalidCost        cost is not an integer >= 1, or can never fit the policy
    │   ├── PayloadTooLarge    payload over the configured limit
    │   └── InvalidUrl         a Redis URL that cannot work (janus.urls)
    ├── LeaseLost              a heartbeat or report from someone who does not hold the
    │                          current attempt's live lease (expired, superseded, finished,
    │                          unknown job); nothing was changed
    ├── RedisUnavailable       Redis could not be reached, timed out or refused to serve;
    │   │                      fail safe: the call changed nothing it did not report (a
    │   │                      retry with the same job id, fetch or report is safe)
    │   ├── RedisOutOfMemory   Redis is at maxmemory (noeviction): every script that
    │   │                      writes is refused before it runs, so nothing moves
    │   ├── RedisReadOnly      the server is a replica (e.g. after a failover) or read-only
    │   └── NotReplicated      durability is on and too few replicas confirmed a write in
    │                          time: it is on the primary, a failover could lose it
    ├── AuthenticationFailed   Redis refused the user or password: never retried (retrying
    │                          cannot help, and would lock the account with some providers)
    ├── AccessDenied           the ACL user may not run a command or touch a key Janus needs
    │                          (the message names it; README "Security" has the ACL line)
    ├── ProtocolError          a script replied with a shape this client does not know
    └── EmbeddedRedisError     the throwaway redis-server (demo, tests) could not start
"""

from __future__ import annotations

from dataclasses import dataclass


class JanusError(Exception):
    """Base class of every exception Janus raises."""


@dataclass(frozen=True)
class PolicyIssue:
    """One validation problem, located by file, dependency and field path."""

    file: str
    dependency: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file
        path = ".".join(p for p in (self.dependency, self.field) if p)
        return f"{where}: {path}: {self.message}" if path else f"{where}: {self.message}"


class PolicyError(JanusError):
    """A policy failed validation. ``issues`` lists every problem found, not just the first."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = list(issues)
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        super().__init__(f"{len(self.issues)} policy error(s):\n{lines}")


class InvalidInput(JanusError, ValueError):
    """The caller passed input Janus does not accept. Nothing was written."""


class InvalidName(InvalidInput):
    """A dependency, scope or job id is empty, too long or malformed."""


class InvalidCost(InvalidInput):
    """A cost is not an integer >= 1, or exceeds what the policy could ever admit."""


class PayloadTooLarge(InvalidInput):
    """A payload is larger than the configured limit."""


class UnknownDependency(InvalidInput):
    """The dependency has no applied policy (an admin action needs one). Nothing changed."""


class LeaseLost(JanusError):
    """The caller does not hold the current attempt's live lease; nothing was changed.

    ``reason`` is one of ``expired`` (the deadline passed; the coordinator reclaims the
    attempt), ``superseded`` (another attempt is current, or this one already ended),
    ``finished`` (the job completed or was dead-lettered) or ``unknown_job``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class RedisUnavailable(JanusError):
    """Redis could not be reached, timed out, or refused to serve now. Nothing was changed
    that the call did not report; retrying the same call is safe."""


class RedisOutOfMemory(RedisUnavailable):
    """Redis is at maxmemory with noeviction: writes are refused, and a Janus script is
    refused whole, before it runs. Nothing moves until memory is freed."""


class RedisReadOnly(RedisUnavailable):
    """The server refused a write because it is a replica (or read-only)."""


class NotReplicated(RedisUnavailable):
    """With ``wait_replicas`` set, fewer replicas than asked confirmed a call in time. The
    call took effect on the primary; retrying it (same job id, fetch, report) is safe."""


class AuthenticationFailed(JanusError):
    """Redis refused the credentials (wrong user or password). Not retried."""


class AccessDenied(JanusError):
    """The connected ACL user may not run a command, or touch a key, that Janus needs."""


class ProtocolError(JanusError):
    """A Lua script answered with a reply this client cannot parse (version skew?)."""


class EmbeddedRedisError(JanusError):
    """A throwaway ``redis-server`` (used by the demo and the tests) failed to start."""
