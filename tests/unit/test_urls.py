"""Redis URLs in messages: the password never shows, however it is written."""

from __future__ import annotations

import pytest

from janus.urls import redact, redact_text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:secret@h:6379/0", "redis://u:***@h:6379/0"),
        ("rediss://:secret@h/0", "rediss://:***@h/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://u:pw@h:1/0?ssl_password=secret", "redis://u:***@h:1/0?ssl_password=***"),
        # Unencoded '/', '?' or '#' in the password end the parser's host part early.
        ("redis://u:se/cret@h:6379/0", "redis://u:***@h:6379/0"),
        ("redis://:se?cret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://:se#cret@h:6379/0", "redis://:***@h:6379/0"),
    ],
)
def test_redact_hides_every_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "secret" not in redact(url) and "cret" not in redact(url)


def test_redact_text_hides_passwords_inside_messages() -> None:
    text = "connecting to redis://u:se/cr#et@h:1/0 failed"
    assert "se/cr#et" not in redact_text(text) and "h:1/0" in redact_text(text)
