"""The Lua code: where it lives, how it is assembled into one Redis Functions library, and
what each function takes.

Pure: reads files, never talks to Redis (:mod:`janus.store` loads the library and calls it).

**One library.** :func:`library` assembles ``lua/`` into the library ``janus_p<PROTOCOL>``:
the shared helpers of ``lua/include/`` once, at library level (defined once per load, not once
per call), then each script under ``lua/`` wrapped as a function ``janus_p<PROTOCOL>_<name>``
(registered with no flags: it may write, so Redis refuses it whole under OOM; none is
``allow-oom``), and ``janus_p<PROTOCOL>_info`` (``no-writes``), which answers the protocol,
the revision and the digest of the loaded code. Library-level state persists between calls
until the library is loaded again, which is what the policy cache relies on.

**Versioning.** The protocol version is in every name: a new, incompatible protocol is a new
library (``janus_p2``) loaded beside the old one, so during a rolling deploy old and new
producers and workers both work against one Redis. Within a protocol, :data:`REVISION` orders
compatible builds: a client replaces a loaded library of a lower revision (or the same
revision with other code), never a higher one. See ``docs/protocol.md``.

Each script under ``lua/`` decides one thing atomically and opens with a header naming its
``KEYS[i]`` and ``ARGV[i]``. :data:`SPECS` repeats those names for the Python side, and the
store passes arguments *by name* through :meth:`ScriptSpec.keys_of` / :meth:`ScriptSpec.argv_of`,
so a call site cannot pass a key the script does not expect. A test parses the headers and
checks they match :data:`SPECS` exactly.

Shared helpers live in ``lua/include/``; a line ``--- @include "name"`` names a helper file
a script (or another helper) uses; the library defines each once, dependencies first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TypeVar

A = TypeVar("A")

#: The call interface's version: in the library's and every function's name.
PROTOCOL = 1
#: Orders compatible builds of one protocol (bump it when the Lua changes).
REVISION = 2
LIBRARY = f"janus_p{PROTOCOL}"


def function_name(script: str) -> str:
    """The registered name of a script's function: ``janus_p1_submit``."""
    return f"{LIBRARY}_{script}"


_INCLUDE = re.compile(r'^--- @include "([a-z_]+)"\s*$', re.MULTILINE)
_HEADER_ITEM = re.compile(r"^-- (KEYS|ARGV)\[(\d+)(\.\.\.)?\]\s+(\w+)", re.MULTILINE)


def lua_dir() -> Path:
    """The directory holding the ``.lua`` files (installed package or source checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "lua", here.parent.parent / "lua"):
        if (candidate / "submit.lua").is_file():
            return candidate
    raise FileNotFoundError(f"Janus Lua scripts not found next to {here}")


@dataclass(frozen=True)
class ScriptSpec:
    """The names of a script's KEYS and ARGV, in order. A trailing ``...`` ARGV is variadic."""

    name: str
    keys: tuple[str, ...]
    argv: tuple[str, ...]
    variadic: bool = False

    def keys_of(self, given: Mapping[str, str]) -> list[str]:
        """Order ``given`` as the script's KEYS; refuse missing or unexpected names."""
        _check_names(self.name, "KEYS", self.keys, given)
        return [given[k] for k in self.keys]

    def argv_of(self, given: Mapping[str, A], rest: Sequence[A] = ()) -> list[A]:
        """Order ``given`` as the script's fixed ARGV, then append the variadic ``rest``."""
        fixed = self.argv[:-1] if self.variadic else self.argv
        _check_names(self.name, "ARGV", fixed, given)
        if rest and not self.variadic:
            raise TypeError(f"{self.name}.lua takes no variadic ARGV")
        return [given[a] for a in fixed] + list(rest)


def _check_names(
    script: str, what: str, expected: tuple[str, ...], given: Mapping[str, object]
) -> None:
    if set(given) != set(expected):
        missing = sorted(set(expected) - set(given))
        extra = sorted(set(given) - set(expected))
        raise TypeError(f"{script}.lua {what}: missing {missing}, unexpected {extra}")


_QUEUE_ARGV = ("job_prefix", "scope_prefix", "ready_prefix", "quota_prefix", "now_us")
_DUE_KEYS = (
    "policy",
    "scopes",
    "state",
    "delayed",
    "inflight",
    "dead",
    "active",
    "throttled",
    "parked",
    "wake",
    "work",
)

SPECS: dict[str, ScriptSpec] = {
    "submit": ScriptSpec(
        "submit",
        keys=("policy", "scopes", "state", "delayed", "wake", "work", "active", "throttled"),
        argv=(*_QUEUE_ARGV, "count", "jobs"),
        variadic=True,
    ),
    "fetch": ScriptSpec(
        "fetch",
        keys=(*_DUE_KEYS, "groups", "stream", "fetch_log"),
        argv=(*_QUEUE_ARGV, "group", "consumer", "count", "fetch_id", "max_steps"),
    ),
    "step": ScriptSpec(
        "step",
        keys=_DUE_KEYS,
        argv=(*_QUEUE_ARGV, "max_steps", "timer_ms"),
    ),
    "pause": ScriptSpec(
        "pause",
        keys=("policy", "state", "throttled", "wake", "work"),
        argv=("scope_enc", "scope", "for_ms", "now_us"),
    ),
    "delete": ScriptSpec(
        "delete",
        keys=_DUE_KEYS,
        argv=(*_QUEUE_ARGV, "drop", "max_steps"),
    ),
    "heartbeat": ScriptSpec(
        "heartbeat",
        keys=("policy", "inflight"),
        argv=("job_prefix", "now_us", "count", "leases"),
        variadic=True,
    ),
    "report": ScriptSpec(
        "report",
        keys=(
            "policy",
            "scopes",
            "state",
            "delayed",
            "inflight",
            "dead",
            "active",
            "throttled",
            "wake",
            "work",
        ),
        argv=(*_QUEUE_ARGV, "count", "outcomes"),
        variadic=True,
    ),
    "replay": ScriptSpec(
        "replay",
        keys=("policy", "scopes", "state", "delayed", "dead", "replayed", "wake", "work"),
        argv=("job_prefix", "scope_prefix", "now_us", "count", "entries"),
        variadic=True,
    ),
    "apply_policy": ScriptSpec(
        "apply_policy",
        keys=("policy", "scopes"),
        argv=("digest", "field_count", "pairs"),
        variadic=True,
    ),
}


@cache
def source(name: str) -> str:
    """The full text of script ``name`` with its includes expanded.

    ``--- @include "x"`` is replaced by ``lua/include/x.lua``, whose own includes are
    expanded first; each file is included once per script (the first time it is reached),
    so helpers are defined before they are used and never twice.
    """
    root = lua_dir()
    done: set[str] = set()

    def expand(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            inc = match.group(1)
            if inc in done:
                return ""
            done.add(inc)
            return expand((root / "include" / f"{inc}.lua").read_text(encoding="utf-8"))

        return _INCLUDE.sub(one, text)

    return expand((root / f"{name}.lua").read_text(encoding="utf-8"))


def header(name: str) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """(KEYS names, ARGV names, variadic) as declared in the header of ``lua/<name>.lua``."""
    text = (lua_dir() / f"{name}.lua").read_text(encoding="utf-8")
    keys: list[str] = []
    argv: list[str] = []
    variadic = False
    for kind, index, dots, ident in _HEADER_ITEM.findall(text):
        target = keys if kind == "KEYS" else argv
        if int(index) != len(target) + 1:
            raise ValueError(f"{name}.lua header: {kind}[{index}] out of order")
        target.append(ident)
        if dots:
            variadic = True
    return tuple(keys), tuple(argv), variadic


def _includes_in_order(names: Sequence[str]) -> list[str]:
    """Every helper file the given scripts need, each once, dependencies first."""
    root = lua_dir()
    order: list[str] = []

    def visit(text: str) -> None:
        for inc in _INCLUDE.findall(text):
            if inc not in order:
                visit((root / "include" / f"{inc}.lua").read_text(encoding="utf-8"))
                if inc not in order:
                    order.append(inc)

    for name in names:
        visit((root / f"{name}.lua").read_text(encoding="utf-8"))
    return order


def _body(text: str) -> str:
    """A file's code without its ``#!lua`` line and include lines."""
    lines = text.splitlines()
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    return "\n".join(line for line in lines if not _INCLUDE.match(line))


@cache
def library() -> tuple[str, str]:
    """(source, digest) of the Functions library (see the module docstring)."""
    root = lua_dir()
    names = sorted(SPECS)
    parts = [f"#!lua name={LIBRARY}", f"-- Janus: protocol {PROTOCOL}, revision {REVISION}."]
    for inc in _includes_in_order(names):
        parts.append(f"-- == include/{inc}.lua ==")
        parts.append(_body((root / "include" / f"{inc}.lua").read_text(encoding="utf-8")))
    for name in names:
        parts.append(f"-- == {name}.lua ==")
        parts.append(f"local function fn_{name}(KEYS, ARGV)")
        parts.append(_body((root / f"{name}.lua").read_text(encoding="utf-8")))
        parts.append("end")
        parts.append(
            f"redis.register_function{{function_name='{function_name(name)}', callback=fn_{name}}}"
        )
    code = "\n".join(parts)
    digest = hashlib.sha1(code.encode(), usedforsecurity=False).hexdigest()
    info = (
        f"redis.register_function{{function_name='{function_name('info')}', "
        f"callback=function() return {{{PROTOCOL}, {REVISION}, '{digest}'}} end, "
        "flags={'no-writes'}}"
    )
    return f"{code}\n{info}\n", digest


def library_action(loaded: tuple[int, int, str] | None, digest: str) -> str:
    """What a client does about the library a node has loaded ((protocol, revision, digest)
    or None): ``load`` it, ``replace`` a lower revision (or the same revision with other
    code), or keep it (``present``; ``newer``: a higher revision, never downgraded)."""
    if loaded is None:
        return "load"
    _, revision, loaded_digest = loaded
    if revision < REVISION or (revision == REVISION and loaded_digest != digest):
        return "replace"
    return "present" if revision == REVISION else "newer"


def parse_info(reply: object) -> tuple[int, int, str]:
    """``janus_p<N>_info``'s reply as (protocol, revision, digest)."""
    if not isinstance(reply, list | tuple) or len(reply) != 3:
        raise ValueError(f"unexpected library info {reply!r:.80}")
    protocol, revision, digest = reply
    text = digest.decode() if isinstance(digest, bytes) else str(digest)
    return int(protocol), int(revision), text
