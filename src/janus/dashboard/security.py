"""The dashboard's safety checks, kept apart from the app so each is small and tested.

* **Where it listens.** Loopback by default. Any other address needs an auth token, or the
  dashboard refuses to start (:func:`bind_problem`): it can pause a dependency and replay or
  purge dead letters, so it is never open to a network by accident.
* **Who may use it.** With a token, every request but ``/healthz``, ``/login`` and the static
  files must carry it: ``Authorization: Bearer <token>`` (scripts) or the session cookie
  ``/login`` sets (browsers). The cookie holds an HMAC of the token, never the token.
* **Which sites may drive it.** Every POST carries a CSRF token: a random nonce with its HMAC
  under a key only this process knows, sent both as a cookie (SameSite=Strict, HttpOnly) and
  as a form field. A POST whose field is missing, or differs from the cookie, or whose
  signature is wrong, is refused (a signed double-submit cookie: a sibling site that can set
  cookies still cannot make a valid one). A POST whose ``Origin`` is another site is refused.
* **Which names it answers to.** On loopback the ``Host`` header must name loopback (or an
  ``--allowed-host``), so a page on another site cannot reach it through DNS rebinding.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

#: Names that mean this machine only.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
#: Shortest auth token accepted (a guessable token on a network is no protection).
MIN_TOKEN = 16
#: Cookie names.
CSRF_COOKIE = "janus_csrf"
AUTH_COOKIE = "janus_session"
FLASH_COOKIE = "janus_flash"
CSRF_FIELD = "csrf"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost (the default 127.0.0.1)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def bind_problem(host: str, auth_token: str | None) -> str | None:
    """Why the dashboard must not start on ``host`` with this token; None when it may."""
    if auth_token is not None and len(auth_token) < MIN_TOKEN:
        return (
            f"--auth-token must be at least {MIN_TOKEN} characters (got {len(auth_token)}); "
            "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    if auth_token is None and not is_loopback(host):
        return (
            f"--host {host} is not a loopback address: anyone who can reach it could pause "
            "dependencies and purge dead letters. Pass --auth-token (or JANUS_DASHBOARD_TOKEN), "
            "or listen on 127.0.0.1 and reach it through an SSH tunnel."
        )
    return None


def loopback_hosts(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The Host names a loopback dashboard answers to."""
    return ("127.0.0.1", "localhost", "::1", *extra)


def host_allowed(header: str, allowed: Iterable[str] | None) -> bool:
    """Does the ``Host`` header (``name[:port]``, ``[v6]:port``) name an allowed host?
    ``allowed`` None: any (a dashboard behind a token on a network address)."""
    if allowed is None:
        return True
    try:
        name = urlsplit(f"//{header}").hostname or ""
    except ValueError:
        return False
    return name.lower() in {a.strip("[]").lower() for a in allowed}


def same_origin(origin: str | None, host: str) -> bool:
    """A POST's ``Origin`` (when the browser sends one) names this dashboard's host."""
    if origin is None:
        return True  # not a browser, or an old one: the CSRF token still decides
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.netloc.lower() == host.lower()


class Signer:
    """CSRF tokens and session cookies: HMAC-SHA256 under a key of this process."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:32]

    def new_csrf(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign('csrf:' + nonce)}"

    def csrf_valid(self, token: str | None) -> bool:
        if not token or token.count(".") != 1:
            return False
        nonce, sig = token.split(".")
        return _same(sig, self._sign("csrf:" + nonce))

    def csrf_ok(self, cookie: str | None, field: str | None) -> bool:
        """The form's token is the cookie's, and ours."""
        if not cookie or not field:
            return False
        return _same(cookie, field) and self.csrf_valid(cookie)


def session_value(auth_token: str) -> str:
    """What the session cookie holds for ``auth_token``: an HMAC of it (so the cookie never
    carries the token, and changing the token ends every session)."""
    return hmac.new(auth_token.encode(), b"janus-dashboard-session", hashlib.sha256).hexdigest()


def authorized(auth_token: str | None, header: str | None, cookie: str | None) -> bool:
    """Does the request carry the token (bearer header) or a session cookie for it?"""
    if auth_token is None:
        return True
    if header is not None:
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and _same(given.strip(), auth_token):
            return True
    return cookie is not None and _same(cookie, session_value(auth_token))


def _same(a: str, b: str) -> bool:
    """Constant-time comparison of any two strings (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))
