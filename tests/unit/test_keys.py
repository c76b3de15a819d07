"""Key building: one hash tag per dependency; user strings cannot move slots or collide."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from janus.errors import InvalidName
from janus.keys import Keys, check_user_name, encode_part, registry

ODD = ["{", "}", "a}b{c", ":", "a:b", " ", "tenant 42", "ünïcødé", "🙂", "x" * 10_000, "{x}:{y}"]


def test_every_key_of_a_dependency_shares_one_slot() -> None:
    """All fixed keys and per-job/per-scope keys hash to the dependency's slot."""
    k = Keys("janus", "payments")
    slots = {key_slot(key.encode()) for key in k.all_fixed()}
    slots |= {key_slot(k.job(s).encode()) for s in ODD}
    slots |= {key_slot(k.scope(s).encode()) for s in ODD}
    assert slots == {key_slot(b"{payments}")}


@given(st.text(min_size=1, max_size=300))
def test_user_strings_never_change_the_slot(value: str) -> None:
    """Property: whatever the scope name or job id, the key lands in the dependency's slot."""
    k = Keys("p", "dep-1")
    assert key_slot(k.scope(value).encode()) == key_slot(b"{dep-1}")
    assert key_slot(k.job(value).encode()) == key_slot(b"{dep-1}")


@given(st.text(min_size=1, max_size=100), st.text(min_size=1, max_size=100))
def test_distinct_user_strings_never_share_a_key(a: str, b: str) -> None:
    """Property: encode_part is injective (verbatim names vs '~'-prefixed digests)."""
    if a != b:
        assert encode_part(a) != encode_part(b)


@pytest.mark.parametrize("value", ODD)
def test_encoded_parts_contain_no_braces_colons_or_spaces(value: str) -> None:
    """Encoded user strings are plain [A-Za-z0-9_.~-] and bounded in length."""
    enc = encode_part(value)
    assert set(enc) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-~")
    assert len(enc) <= 64


def test_safe_short_names_stay_readable() -> None:
    """Short safe names are kept verbatim so keys stay readable in redis-cli."""
    assert Keys("janus", "payments").scope("tenant-42") == "janus:{payments}:s:tenant-42"


def test_invalid_prefix_and_names_are_refused() -> None:
    """Prefixes and dependency names cannot carry braces; user names have limits."""
    with pytest.raises(InvalidName, match="invalid key prefix"):
        Keys("a{b}", "dep")
    with pytest.raises(InvalidName, match="invalid key prefix"):
        registry("")
    with pytest.raises(InvalidName, match="invalid dependency name"):
        Keys("janus", "a}b")
    with pytest.raises(InvalidName, match="limit is 16384 bytes"):
        check_user_name("scope", "é" * 8193)
    assert check_user_name("scope", "é" * 8192)


@pytest.mark.parametrize(
    ("kind", "value", "index"),
    [
        ("scope", "\ud800", 0),
        ("scope", "tenant-\udfff", 7),
        ("job_id", "ok\ud83d\ude42", 2),  # a surrogate pair in a str is still two lone halves
        ("job_id", "caf\udce9", 3),  # what surrogateescape makes of a stray Latin-1 byte
    ],
)
def test_text_utf8_cannot_encode_is_an_invalid_name(kind: str, value: str, index: int) -> None:
    """A scope name or job id with a lone surrogate is InvalidName, naming where it is
    (before, encode() with surrogatepass hid it until redis-py raised UnicodeEncodeError)."""
    with pytest.raises(InvalidName) as caught:
        check_user_name(kind, value)
    assert (
        str(caught.value) == f"{kind} must be valid Unicode text: lone surrogate at index {index}"
    )


def test_valid_non_ascii_names_are_accepted() -> None:
    """Any text UTF-8 can encode stays a valid name, astral characters included."""
    for value in ("ünïcødé", "🙂", "\U0010ffff", "a\u200bb"):
        assert check_user_name("scope", value) == value
