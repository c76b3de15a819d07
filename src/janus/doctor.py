"""Start-up checks of the Redis configuration. Pure: evaluates CONFIG values it is given.

Janus keeps its limits and its queued jobs in Redis. A server that may evict keys, or that
keeps nothing across a restart, silently breaks both: an evicted bucket admits a burst, an
evicted job record is a lost job. The coordinator and ``janus doctor`` report these loudly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Level = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class Finding:
    level: Level
    server: str
    message: str

    def __str__(self) -> str:
        return f"[{self.level.upper()}] {self.server}: {self.message}"


def evaluate(configs: Mapping[str, Mapping[str, str]]) -> list[Finding]:
    """Findings for each server's CONFIG values (``server -> {name: value}``)."""
    out: list[Finding] = []
    for server, cfg in sorted(configs.items()):
        if not cfg:
            out.append(
                Finding(
                    "warning",
                    server,
                    "CONFIG GET is not allowed here; check by hand that maxmemory-policy is "
                    "noeviction and that persistence (appendonly or save) is on",
                )
            )
            continue
        policy = cfg.get("maxmemory-policy", "")
        maxmemory = cfg.get("maxmemory", "0")
        if policy and policy != "noeviction":
            level: Level = "error" if maxmemory not in ("", "0") else "warning"
            limit = "" if level == "error" else " (maxmemory is 0 today, so not yet)"
            out.append(
                Finding(
                    level,
                    server,
                    f"maxmemory-policy is {policy}: Redis may evict Janus keys{limit}; an "
                    "evicted bucket breaks the limits and an evicted job is lost. Set "
                    "maxmemory-policy noeviction",
                )
            )
        else:
            out.append(Finding("ok", server, "maxmemory-policy is noeviction"))
        appendonly = cfg.get("appendonly", "no")
        save = cfg.get("save", "").strip()
        if appendonly != "yes" and not save:
            out.append(
                Finding(
                    "warning",
                    server,
                    'no persistence (appendonly no, save ""): a Redis restart loses every '
                    "queued job and all bucket state. Enable appendonly yes",
                )
            )
        elif appendonly != "yes":
            out.append(
                Finding(
                    "warning",
                    server,
                    f"only RDB snapshots (save {save!r}): a crash loses the jobs accepted since "
                    "the last snapshot. Enable appendonly yes",
                )
            )
        else:
            out.append(Finding("ok", server, "appendonly is on"))
    return out


def test_mode(dependencies: list[str], where: str = "policies") -> list[Finding]:
    """An error per dependency whose policy accepts a test clock (applied by janus.testing):
    any caller could move its time, so its limits hold for nobody."""
    return [
        Finding(
            "error",
            where,
            f"dependency {dep!r} is in TEST MODE: its policy was applied by janus.testing and "
            "its scripts accept a caller's clock, so any producer can move its time. Apply "
            "its policy again with `janus policy apply`",
        )
        for dep in dependencies
    ]


def library(
    versions: Mapping[str, tuple[int, int, str] | None],
    protocol: int | None = None,
    revision: int | None = None,
) -> list[Finding]:
    """What each primary has loaded of Janus's function library (``janus_p<protocol>``)."""
    from janus import scripts  # (pure: reads the library files)

    protocol = scripts.PROTOCOL if protocol is None else protocol
    revision = scripts.REVISION if revision is None else revision
    out = []
    for server, version in sorted(versions.items()):
        if version is None:
            out.append(
                Finding(
                    "ok",
                    server,
                    f"library janus_p{protocol} not loaded yet (the first call loads it)",
                )
            )
            continue
        loaded_protocol, loaded_revision, digest = version
        text = (
            f"library janus_p{loaded_protocol} revision {loaded_revision} "
            f"(digest {digest[:12]}) loaded"
        )
        if loaded_revision < revision:
            out.append(
                Finding(
                    "warning",
                    server,
                    f"{text}: older than this client's revision "
                    f"{revision}; the next call of this client replaces it",
                )
            )
        elif loaded_revision > revision:
            out.append(Finding("ok", server, f"{text}: newer than this client's {revision} (kept)"))
        else:
            out.append(Finding("ok", server, text))
    return out


def worst(findings: list[Finding]) -> Level:
    levels = {f.level for f in findings}
    if "error" in levels:
        return "error"
    if "warning" in levels:
        return "warning"
    return "ok"


#: The least-privilege ACL rules of a Janus user, for ``ACL SETUSER <user> on >PASSWORD``
#: followed by these (README, "Security"). ``<prefix>`` is the key prefix; keep the colon:
#: ``~janus*`` would also match another deployment's ``janus2:`` keys.
ACL_RULES = (
    "resetkeys ~<prefix>:* resetchannels -@all "
    "+hello +ping +time +fcall +function|load "
    "+hget +hgetall +hmget +hset +hincrby +hdel +hexists +exists +del +pexpire +persist +get +set "
    "+sadd +srem +smembers +zadd +zrem +zrange +zcard +zcount +zscore +zremrangebyscore "
    "+lpush +rpush +lpop +lindex +llen +blpop "
    "+xadd +xreadgroup +xgroup|create +xgroup|delconsumer +xack +xdel +xrange +xrevrange +xlen "
    "+xpending +xinfo|consumers"
)
#: Added on a Redis Cluster: what redis-py's cluster client needs to find the slots.
ACL_RULES_CLUSTER = "+cluster|slots +cluster|shards +command +readonly"
#: Optional: lets `janus doctor` read the settings it checks (else it says to check by hand).
ACL_RULES_DOCTOR = "+config|get"


def acl_rules(prefix: str, *, cluster: bool = False, doctor: bool = False) -> str:
    """The ACL rules for a user of the deployment under ``prefix``."""
    rules = ACL_RULES.replace("<prefix>", prefix)
    if cluster:
        rules += " " + ACL_RULES_CLUSTER
    if doctor:
        rules += " " + ACL_RULES_DOCTOR
    return rules
