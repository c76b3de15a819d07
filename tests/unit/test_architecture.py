"""The architecture stays visible: Lua headers match the Python call sites; layers hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from janus import scripts

SRC = Path(__file__).resolve().parents[2] / "src" / "janus"
LUA = scripts.lua_dir()

#: Pure core: no Redis client, no clock, no threads.
PURE = {"keys", "policy", "decisions", "scripts", "errors", "doctor", "measure"}
#: The only module allowed to import redis-py (embedded only starts binaries).
REDIS_FACING = {"store"}
FORBIDDEN_IN_PURE = {"redis", "time", "threading", "datetime", "socket", "subprocess"}


def _imports(module: str) -> set[str]:
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
    """Scripts receive keys by name from janus.keys.Keys: each KEYS name is a Keys attribute,
    and prefix ARGV (job_prefix, scope_prefix) too."""
    from janus.keys import Keys

    k = Keys("p", "dep")
    for spec in scripts.SPECS.values():
        for name in spec.keys:
            assert isinstance(getattr(k, name), str), (spec.name, name)
        for name in spec.argv:
            if name.endswith("_prefix"):
                assert isinstance(getattr(k, name), str), (spec.name, name)


def test_spec_refuses_missing_or_unexpected_names() -> None:
    """A call site cannot pass a key or argument the script does not declare."""
    spec = scripts.SPECS["release"]
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


def test_only_the_store_imports_redis() -> None:
    """One Redis-facing module: front-ends go through janus.store."""
    for path in SRC.glob("*.py"):
        roots = {name.split(".")[0] for name in _imports(path.stem)}
        if "redis" in roots:
            assert path.stem in REDIS_FACING, path.name


def test_front_ends_build_no_key_strings() -> None:
    """Keys are built in janus.keys only: no front-end uses the Keys class or key formats."""
    for module in ("client", "coordinator", "cli", "demo"):
        text = (SRC / f"{module}.py").read_text()
        assert "Keys(" not in text and ":{" not in text, module


def test_submit_fast_path_argv_order_matches_the_header() -> None:
    """store.submit builds submit.lua's ARGV by position (its hot path): pin that order."""
    assert scripts.SPECS["submit"].argv == (
        "job_prefix",
        "scope_prefix",
        "ready_prefix",
        "quota_prefix",
        "now_us",
        "count",
        "jobs",
    )
