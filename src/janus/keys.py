"""Every Redis key Janus uses is built here, and nowhere else.

Layout (``P`` = key prefix, default ``janus``; ``D`` = dependency name)::

    P:deps                       set     names of dependencies with an applied policy (registry)
    P:{D}:policy                 hash    compiled limits of D (integers; see policy.compile)
    P:{D}:scopes                 hash    encoded scope -> compiled per-scope override
    P:{D}:state                  hash    dependency bucket, queue totals, coordinator wake time
    P:{D}:s:<scope>              hash    one scope's buckets (TTL: until its buckets are full)
    P:{D}:j:<job>                hash    one job record (no TTL while queued; TTL once released)
    P:{D}:delayed                zset    waiting jobs not yet eligible, score = eligible time (us)
    P:{D}:active                 zset    scopes with ready work, score = virtual start tag (fair
                                         queueing)
    P:{D}:throttled              zset    scopes held by their own bucket or quota, score = until
    P:{D}:q:<scope>              list    one scope's ready jobs, FIFO (bounded by its work)
    P:{D}:quota:<scope>          hash    one scope's quota window (TTL: two periods)
    P:{D}:quota:<scope>:log      zset    rolling quota: reservations by time (TTL: two periods)
    P:{D}:parked                 zset    retries waiting for a retry-budget token (FIFO)
    P:{D}:inflight               zset    started attempts, score = lease deadline in milliseconds
    P:{D}:groups                 set     consumer groups that ever fetched
    P:{D}:stream:<group>         stream  one group's running attempts (entry deleted when the
                                         attempt ends); its consumer group delivers each entry
                                         to the worker that fetched it (the PEL)
    P:{D}:f:<group>:<consumer>   string  a consumer's last fetch, for re-sent calls (TTL)
    P:{D}:dead                   stream  dead letters: job, payload, every attempt's outcome
                                         (about max_dead_letters kept, oldest trimmed)
    P:{D}:replayed               zset    replayed dead-letter entry ids (bounded by the dead
                                         letters: marks of trimmed ones are dropped)
    P:{D}:events                 stream  state changes in order: circuit, pauses, dead letters,
                                         reclaimed leases, policy applied / deleted (about
                                         10,000 kept; named by the functions from the state key)
    P:{D}:wake                   list    at most one element: "coordinator, look again"
    P:{D}:work                   list    at most one element: "idle worker, fetch"

Cluster: every key of one dependency carries the hash tag ``{D}``, so each script touches
one slot and dependencies spread over the shards. Dependency names are validated to a
safe alphabet (no braces), so the tag is exactly the name.

User strings (scope names, job ids) never reach a key verbatim unless they are short and
made only of ``[A-Za-z0-9_.-]``. Anything else is replaced by ``~`` plus a 128-bit BLAKE2b
digest of its UTF-8 bytes. ``~`` is outside the safe alphabet, so an encoded name can never
equal a verbatim one, and no user string can add ``{``, ``}``, ``:`` or whitespace to a key:
the slot of a key depends on the dependency name alone. The original string is kept inside
the job record, never recovered from the key.

Scripts receive fixed keys as ``KEYS`` and, where they must address keys that are only known
inside Redis (queued jobs, scopes), the *prefix* of those keys (``P:{D}:j:``, ``P:{D}:s:``)
plus the encoded member; the prefix carries the tag, so the slot cannot change.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from janus.errors import InvalidName

#: Dependency names: they become the hash tag, so they use a safe alphabet.
DEPENDENCY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
#: Key prefixes: same alphabet plus ':'; never braces.
PREFIX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}")
_VERBATIM = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

#: Longest scope name or job id accepted, in UTF-8 bytes.
MAX_NAME_BYTES = 16 * 1024


def check_dependency(name: object) -> str:
    """Return ``name`` if it is a valid dependency name, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or not DEPENDENCY_NAME.fullmatch(name):
        raise InvalidName(
            f"invalid dependency name {_show(name)}: use 1-64 characters from "
            "[A-Za-z0-9_.-], starting with a letter or digit"
        )
    return name


def check_user_name(kind: str, value: object) -> str:
    """Validate a scope name or job id: non-empty Unicode text of at most MAX_NAME_BYTES.

    Text that UTF-8 cannot encode (a lone surrogate, as ``surrogateescape`` decoding or a
    ``"\\ud800"`` escape produces) is refused here, so it never reaches a key or redis-py.
    """
    if not isinstance(value, str):
        raise InvalidName(f"{kind} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidName(f"{kind} must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        # In a str, only surrogates (U+D800..U+DFFF) cannot be encoded as UTF-8.
        raise InvalidName(
            f"{kind} must be valid Unicode text: lone surrogate at index {exc.start}"
        ) from None
    if size > MAX_NAME_BYTES:
        raise InvalidName(f"{kind} is {size} bytes; the limit is {MAX_NAME_BYTES} bytes")
    if "\x00" in value:
        raise InvalidName(f"{kind} must not contain NUL characters")
    return value


def encode_part(value: str) -> str:
    """Encode a user string for use inside a key (see module docstring)."""
    if _VERBATIM.fullmatch(value):
        return value
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16)
    return "~" + digest.hexdigest()


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Keys:
    """The keys of one dependency under one prefix."""

    prefix: str
    dependency: str

    def __post_init__(self) -> None:
        if not PREFIX_NAME.fullmatch(self.prefix):
            raise InvalidName(f"invalid key prefix {_show(self.prefix)}")
        check_dependency(self.dependency)

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.dependency}}}"

    @property
    def policy(self) -> str:
        return f"{self.base}:policy"

    @property
    def scopes(self) -> str:
        return f"{self.base}:scopes"

    @property
    def state(self) -> str:
        return f"{self.base}:state"

    @property
    def delayed(self) -> str:
        return f"{self.base}:delayed"

    @property
    def inflight(self) -> str:
        return f"{self.base}:inflight"

    @property
    def stream_prefix(self) -> str:
        return f"{self.base}:stream:"

    def stream(self, group: str) -> str:
        """The stream of one consumer group (group names are user data: encoded)."""
        return self.stream_prefix + encode_part(group)

    def fetch_log(self, group: str, consumer: str) -> str:
        return f"{self.base}:f:{encode_part(group)}:{encode_part(consumer)}"

    @property
    def groups(self) -> str:
        return f"{self.base}:groups"

    @property
    def work(self) -> str:
        return f"{self.base}:work"

    @property
    def parked(self) -> str:
        return f"{self.base}:parked"

    @property
    def dead(self) -> str:
        return f"{self.base}:dead"

    @property
    def replayed(self) -> str:
        return f"{self.base}:replayed"

    @property
    def wake(self) -> str:
        return f"{self.base}:wake"

    @property
    def events(self) -> str:
        """The events stream. The functions name it themselves: the state (or policy) key
        with ``events`` for its last part (lua/include/core.lua ``events_key``)."""
        return f"{self.base}:events"

    @property
    def active(self) -> str:
        return f"{self.base}:active"

    @property
    def throttled(self) -> str:
        return f"{self.base}:throttled"

    @property
    def ready_prefix(self) -> str:
        return f"{self.base}:q:"

    @property
    def quota_prefix(self) -> str:
        return f"{self.base}:quota:"

    def ready(self, scope: str) -> str:
        return self.ready_prefix + encode_part(scope)

    def quota(self, scope: str) -> str:
        return self.quota_prefix + encode_part(scope)

    @property
    def job_prefix(self) -> str:
        return f"{self.base}:j:"

    @property
    def scope_prefix(self) -> str:
        return f"{self.base}:s:"

    def job(self, job_id: str) -> str:
        return self.job_prefix + encode_part(job_id)

    def scope(self, scope: str) -> str:
        return self.scope_prefix + encode_part(scope)

    def all_fixed(self) -> list[str]:
        """Every key of this dependency that is not per job or per scope."""
        return [
            self.policy,
            self.scopes,
            self.state,
            self.delayed,
            self.inflight,
            self.groups,
            self.dead,
            self.replayed,
            self.events,
            self.wake,
            self.work,
            self.active,
            self.throttled,
            self.parked,
        ]


def registry(prefix: str) -> str:
    """The set of dependency names that have an applied policy (one slot of its own)."""
    if not PREFIX_NAME.fullmatch(prefix):
        raise InvalidName(f"invalid key prefix {_show(prefix)}")
    return f"{prefix}:deps"
