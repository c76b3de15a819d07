"""The architecture stays visible: Lua headers match the Python call sites; layers hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from janus import scripts

SRC = Path(__file__).resolve().parents[2] / "src" / "janus"
LUA = scripts.lua_dir()

#: Pure core: no Redis client, no clock, no threads.
PURE = {"keys", "policy", "decisions", "calls", "scripts", "errors", "doctor", "measure"}
#: The only modules allowed to import redis-py: the sync store and the asyncio store
#: (testing builds clients through the stores' front-ends).
REDIS_FACING = {"store", "aio/store"}
#: The one exception, not on the product's path: the throwaway servers of janus.testing
#: (and the demo) administer their own redis-server processes through redis-py (PING, INFO,
#: CLUSTER INFO, SHUTDOWN). It may import redis for that and nothing of Janus but its errors.
SERVER_ADMIN = "_servers"
SERVER_ADMIN_JANUS_IMPORTS = {"janus.errors"}
#: What the server module must never do: run Janus's functions or scripts, or load them.
SERVER_ADMIN_NEVER = {"fcall", "fcall_ro", "evalsha", "eval", "register_script", "function_load"}
FORBIDDEN_IN_PURE = {"redis", "time", "threading", "datetime", "socket", "subprocess"}


def _imports(module: str) -> set[str]:
    """The modules ``module`` ("store", "aio/store") imports."""
    tree = ast.parse((SRC / f"{module}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_every_lua_script_has_a_spec_and_every_spec_a_script() -> None:
    """One Lua file per decision, each known to the Python side."""
    files = {p.stem for p in LUA.glob("*.lua")}
    assert files == set(scripts.SPECS)


@pytest.mark.parametrize("name", sorted(scripts.SPECS))
def test_lua_header_matches_python_spec(name: str) -> None:
    """The KEYS/ARGV a header declares are exactly what the store passes, in order."""
    keys, argv, variadic = scripts.header(name)
    spec = scripts.SPECS[name]
    assert keys == spec.keys
    assert argv == spec.argv
    assert variadic == spec.variadic


@pytest.mark.parametrize("name", sorted(scripts.SPECS))
def test_lua_header_documents_returns_and_writes(name: str) -> None:
    """Each header says what the script returns and what it writes."""
    head = (LUA / f"{name}.lua").read_text().split("\n\n")[0:3]
    text = "\n".join(head)
    assert "Returns" in text and "Writes" in text


def test_every_script_key_is_built_by_the_keys_module() -> None:
    """Scripts receive keys by name from janus.keys.Keys: each KEYS name is a Keys attribute
    (a method for the per-group keys), and prefix ARGV (job_prefix, scope_prefix) too."""
    from janus.keys import Keys

    k = Keys("p", "dep")
    for spec in scripts.SPECS.values():
        for name in spec.keys:
            value = getattr(k, name)
            if name == "stream":
                value = value("g")
            elif name == "fetch_log":
                value = value("g", "c")
            assert isinstance(value, str) and value.startswith("p:{dep}:"), (spec.name, name)
        for name in spec.argv:
            if name.endswith("_prefix"):
                assert isinstance(getattr(k, name), str), (spec.name, name)


def test_spec_refuses_missing_or_unexpected_names() -> None:
    """A call site cannot pass a key or argument the script does not declare."""
    spec = scripts.SPECS["step"]
    good = dict.fromkeys(spec.keys, "k")
    assert spec.keys_of(good) == ["k"] * len(spec.keys)
    with pytest.raises(TypeError, match="unexpected"):
        spec.keys_of({**good, "extra": "k"})
    with pytest.raises(TypeError, match="missing"):
        spec.argv_of({"now_us": 1})


def test_includes_are_expanded_and_scripts_use_only_declared_key_slots() -> None:
    """Assembled scripts contain no include markers; KEYS[i] indices stay within the header."""
    for name, spec in scripts.SPECS.items():
        text = scripts.source(name)
        assert "@include" not in text
        used = {int(i) for i in __import__("re").findall(r"KEYS\[(\d+)\]", text)}
        assert used <= set(range(1, len(spec.keys) + 1)), name


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_core_imports_no_io(module: str) -> None:
    """Policy, keys, decisions, script specs, doctor and measure import no redis/clock/io."""
    roots = {name.split(".")[0] for name in _imports(module)}
    assert not roots & FORBIDDEN_IN_PURE


def test_only_the_stores_import_redis() -> None:
    """One Redis-facing module per I/O model: front-ends go through janus.store or
    janus.aio.store. The throwaway servers' module is the one, separately checked, exception."""
    seen = set()
    for path in SRC.rglob("*.py"):
        module = path.relative_to(SRC).with_suffix("").as_posix()
        roots = {name.split(".")[0] for name in _imports(module)}
        if "redis" in roots and module not in (SERVER_ADMIN, PEER):
            assert module in REDIS_FACING, module
            seen.add(module)
    assert seen == REDIS_FACING


#: The load benchmark's peer (what a team builds without Janus): talks to Redis itself.
PEER = "loadtest/peers"


def test_the_benchmark_peer_is_not_janus() -> None:
    """janus.loadtest.peers simulates software that is not Janus (limits + a plain list):
    it imports nothing of Janus's Redis layer (store, calls, scripts, keys) and runs no
    function or script."""
    imported = {m for m in _imports(PEER) if m.split(".")[0] == "janus"}
    assert imported <= {"janus.loadtest.agents"}, imported
    tree = ast.parse((SRC / f"{PEER}.py").read_text())
    names = {n.attr.lower() for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not names & SERVER_ADMIN_NEVER


def test_the_server_module_uses_redis_only_to_administer_its_servers() -> None:
    """janus._servers imports nothing of Janus but janus.errors (no calls, scripts, keys or
    store), and no name in it runs or loads a function or script (FCALL, EVALSHA, ...): it
    reaches Redis only to start, probe and stop the servers it owns."""
    imported = _imports(SERVER_ADMIN)
    assert {m for m in imported if m.split(".")[0] == "janus"} <= SERVER_ADMIN_JANUS_IMPORTS
    tree = ast.parse((SRC / f"{SERVER_ADMIN}.py").read_text())
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    words = {
        word.lower()
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
        for word in n.value.split()
    }
    assert not {name.lower() for name in names} & SERVER_ADMIN_NEVER
    assert not words & SERVER_ADMIN_NEVER


def _code_lines(path: Path) -> int:
    """Lines holding code: not blank, not a comment, not a docstring."""
    import io
    import tokenize

    text = path.read_text()
    docs: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            docs |= set(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in skip and tok.type != tokenize.ENDMARKER:
            lines |= set(range(tok.start[0], tok.end[0] + 1)) - docs
    return len(lines)


def test_the_asyncio_store_only_sends() -> None:
    """The asyncio store holds no decision logic: it is small (at most 160 lines of code),
    builds no call (no janus.calls builder, no key string) and parses no reply itself (it
    hands each reply to the call's own parser, as the sync store does)."""
    path = SRC / "aio" / "store.py"
    assert _code_lines(path) <= 160, _code_lines(path)
    text = path.read_text()
    assert ":{" not in text and "Keys(" not in text
    builders = {"submit", "submit_many", "fetch", "report", "heartbeat", "step", "apply"}
    tree = ast.parse(text)
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not used & {f"calls.{b}" for b in builders}
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not imported & builders
    for module in ("aio/client", "aio/worker"):
        assert "redis" not in {m.split(".")[0] for m in _imports(module)}, module


def test_front_ends_build_no_key_strings() -> None:
    """Keys are built in janus.keys only: no front-end uses the Keys class or key formats."""
    for module in ("client", "worker", "coordinator", "cli", "demo", "aio/client", "aio/worker"):
        text = (SRC / f"{module}.py").read_text()
        assert "Keys(" not in text and ":{" not in text, module


#: Variadic ARGV and replies whose positional layout janus.calls defines: (script, the
#: header line's name, the calls constant).
_LAYOUTS = [
    ("submit", "jobs", "SUBMIT_JOB"),
    ("heartbeat", "leases", "LEASE"),
    ("report", "outcomes", "OUTCOME"),
    ("replay", "entries", "REPLAY_ENTRY"),
]


@pytest.mark.parametrize(("script", "arg", "layout"), _LAYOUTS)
def test_positional_argv_layouts_match_the_lua_headers(script: str, arg: str, layout: str) -> None:
    """A job / lease / outcome is laid out by position once, in janus.calls; the Lua header
    names the same fields in the same order ("N values per x: a, b, c")."""
    from janus import calls

    text = (LUA / f"{script}.lua").read_text()
    fields = _per_item(text, rf"^-- ARGV\[\d+\.\.\.\] {arg}\s+")
    assert fields == getattr(calls, layout)


_REPLIES = [
    ("submit", "SUBMIT_REPLY"),
    ("heartbeat", "HEARTBEAT_REPLY"),
    ("report", "REPORT_REPLY"),
]


@pytest.mark.parametrize(("script", "layout"), _REPLIES)
def test_reply_layouts_match_the_lua_headers(script: str, layout: str) -> None:
    """Each reply's values per item are named in the header's Returns paragraph, in order."""
    from janus import calls

    text = (LUA / f"{script}.lua").read_text()
    fields = _per_item(text, r"^-- Returns ")
    assert fields == getattr(calls, layout)


def test_fetch_and_step_replies_match_the_lua_headers() -> None:
    """fetch.lua: a header then values per job; step.lua: a fixed list."""
    import re

    from janus import calls

    fetch = _paragraph((LUA / "fetch.lua").read_text(), r"^-- Returns ")
    header = re.search(r"Header: (.*?)\. Per job: (.*?)\.$", fetch)
    assert header is not None
    assert _names(header.group(1)) == calls.FETCH_HEADER
    assert _names(header.group(2)) == calls.FETCH_JOB
    step = _paragraph((LUA / "step.lua").read_text(), r"^-- Returns ")
    listed = re.search(r"integers: (.*?)\.$", step)
    assert listed is not None
    assert _names(listed.group(1)) == calls.STEP_REPLY


def _paragraph(text: str, start: str) -> str:
    """The header paragraph that starts with ``start``, as one line."""
    import re

    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(start, line):
            out = [line[3:]]
            for more in lines[i + 1 :]:
                if not more.startswith("-- ") or re.match(r"^-- (Writes|Raises|KEYS|ARGV)", more):
                    break
                out.append(more[3:])
            return " ".join(out)
    raise AssertionError(f"no header line matching {start!r}")


def _names(listing: str) -> tuple[str, ...]:
    """Field names of "a (explained, with commas), b, c": the first word of each item."""
    import re

    depth, items, cur = 0, [], ""
    for ch in listing:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    out = []
    for item in items:
        m = re.match(r"\s*(\w+)", item)
        assert m is not None, item
        out.append(m.group(1))
    return tuple(out)


def _per_item(text: str, start: str) -> tuple[str, ...]:
    import re

    para = _paragraph(text, start)
    m = re.search(r"\d+ values per \w+: (.*?)(\.|$)", para)
    assert m is not None, para
    return _names(m.group(1).split(". ")[0])


def test_the_store_only_sends_calls() -> None:
    """No script layout is known outside janus.calls: the store, the client and the worker
    never name a script's arguments by position or parse a reply themselves."""
    for module in ("store", "client", "worker", "coordinator"):
        text = (SRC / f"{module}.py").read_text()
        assert "argv_of(" not in text and "keys_of(" not in text, module
        assert "reply[" not in text, module


@pytest.mark.parametrize(
    ("script", "layout"), [("pause", "PAUSE_REPLY"), ("delete", "DELETE_REPLY")]
)
def test_admin_replies_match_the_lua_headers(script: str, layout: str) -> None:
    """pause.lua and delete.lua reply with a fixed list, named in their headers in order."""
    import re

    from janus import calls

    text = _paragraph((LUA / f"{script}.lua").read_text(), r"^-- Returns ")
    listed = re.search(r"\d+ (?:values|integers): (.*?)\.$", text)
    assert listed is not None, text
    assert _names(listed.group(1)) == getattr(calls, layout)
