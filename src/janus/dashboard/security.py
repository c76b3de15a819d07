"""The dashboard's safety checks, kept apart from the app so each is small and tested.

* **Where it listens.** Loopback by default. Any other address needs an auth token, or the
  dashboard refuses to start (:func:`bind_problem`): it can pause a dependency and replay or
  purge dead letters, so it is never open to a network by accident.
* **Who may use it.** With a token, every request but ``/healthz``, ``/login`` and the static
  files must carry it: ``Authorization: Bearer <token>`` (scripts) or the session cookie
  ``/login`` sets (browsers). The cookie holds a random session id (:class:`Sessions`), one
  per sign-in, never the token: it expires (:data:`SESSION_S`), ``/logout`` ends it, and a
  restart of the dashboard ends every session (they live in the process only).
* **Which sites may drive it.** Every POST carries a CSRF token. A signed-in browser's is an
  HMAC of its session id under a key only this process knows (:meth:`Signer.session_csrf`):
  a token minted by anyone else (an anonymous visitor of ``/login``, another browser) does
  not act for it. Without a session (the sign-in form; a loopback dashboard without a token)
  it is a signed double-submit cookie: a random nonce with its HMAC, sent both as a cookie
  (SameSite=Strict, HttpOnly) and as a form field. Over https the cookies carry the
  ``__Host-`` prefix (Secure, this host only: a sibling sub-domain cannot set them). A POST
  whose ``Origin`` (or, without one, ``Referer``) is another site or scheme is refused
  (:func:`from_here`); with neither (not a browser: browsers send ``Origin`` on every form
  POST) the CSRF token decides.
* **Which names it answers to.** On loopback the ``Host`` header must name loopback (or an
  ``--allowed-host``), so a page on another site cannot reach it through DNS rebinding.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable, Iterable
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
#: How long a sign-in lasts (the cookie's Max-Age, and the server's own expiry).
SESSION_S = 12 * 3600
#: Sessions kept at most (the oldest is dropped first: a flood of sign-ins cannot grow it).
MAX_SESSIONS = 10_000
#: The cookie prefix used over https: Secure, Path=/, no Domain (a sibling cannot set it).
HOST_PREFIX = "__Host-"


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
    make = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
    if auth_token is not None and len(auth_token) < MIN_TOKEN:
        return (
            f"--auth-token must be at least {MIN_TOKEN} characters (got {len(auth_token)}); " + make
        )
    if auth_token is not None and not all(c.isprintable() and not c.isspace() for c in auth_token):
        return "--auth-token must be printable characters without spaces; " + make
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


def same_origin(origin: str | None, host: str, scheme: str) -> bool:
    """A POST's ``Origin`` (when the browser sends one) names this dashboard: its scheme
    (``http``/``https``, as the request came) and its host."""
    if origin is None:
        return True  # not a browser, or an old one: the CSRF token still decides
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme.lower() == scheme.lower() and parts.netloc.lower() == host.lower()


def from_here(origin: str | None, referer: str | None, host: str, scheme: str) -> bool:
    """Does a POST come from this dashboard's own pages? ``Origin`` decides when sent (every
    current browser sends it on a form POST); else ``Referer`` (its scheme and host);
    with neither (a script: curl, an old browser) True, and the CSRF token decides."""
    if origin is not None:
        return same_origin(origin, host, scheme)
    if referer:
        try:
            parts = urlsplit(referer)
        except ValueError:
            return False
        return same_origin(f"{parts.scheme}://{parts.netloc}", host, scheme)
    return True


def cookie_name(name: str, https: bool) -> str:
    """A cookie's name: with the ``__Host-`` prefix over https (which requires Secure, so a
    plain-http loopback dashboard uses the bare name)."""
    return HOST_PREFIX + name if https else name


class Sessions:
    """Signed-in browsers: random session ids, each with an expiry, in this process only
    (a restart signs everyone out). ``clock``: seconds, monotonic (the app passes
    ``time.monotonic``). Not locked: the app uses it from its event loop only."""

    def __init__(
        self, clock: Callable[[], float], ttl_s: float = SESSION_S, limit: int = MAX_SESSIONS
    ) -> None:
        self.ttl_s, self._limit, self._clock = ttl_s, limit, clock
        self._ends: dict[str, float] = {}  # id -> when it ends (oldest first)

    def new(self) -> str:
        """A new session (a sign-in): its id, for the cookie."""
        sid = secrets.token_urlsafe(32)
        now = self._clock()
        for old in [s for s, end in self._ends.items() if end <= now]:
            del self._ends[old]
        while len(self._ends) >= self._limit:
            del self._ends[next(iter(self._ends))]
        self._ends[sid] = now + self.ttl_s
        return sid

    def valid(self, sid: str | None) -> bool:
        end = self._ends.get(sid) if sid else None
        if end is None or sid is None:
            return False
        if end <= self._clock():
            del self._ends[sid]
            return False
        return True

    def end(self, sid: str | None) -> None:
        """Sign out: the id is no longer valid (wherever a copy of the cookie is)."""
        if sid:
            self._ends.pop(sid, None)


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
        """The form's token is the cookie's, and ours (a browser without a session)."""
        if not cookie or not field:
            return False
        return _same(cookie, field) and self.csrf_valid(cookie)

    def session_csrf(self, session_id: str) -> str:
        """The CSRF token of a signed-in browser: bound to its session id."""
        return self._sign("session-csrf:" + session_id)

    def session_csrf_ok(self, session_id: str, field: str | None) -> bool:
        return bool(field) and _same(field or "", self.session_csrf(session_id))

    def seal(self, text: str) -> str:
        """``text`` with its signature (a cookie only this process can have written)."""
        return f"{text}.{self._sign('seal:' + text)}"

    def unseal(self, value: str | None) -> str | None:
        """The text of a :meth:`seal`-ed value; None when it is not ours."""
        text, dot, sig = (value or "").rpartition(".")
        return text if dot and _same(sig, self._sign("seal:" + text)) else None


def bearer_ok(auth_token: str, header: str | None) -> bool:
    """Does an ``Authorization`` header carry the token (``Bearer <token>``)?"""
    if header is None:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and _same(given.strip(), auth_token)


def authorized(auth_token: str | None, header: str | None, session: bool) -> bool:
    """May the request in? No token configured; the token as a bearer header; or (``session``)
    a valid session cookie."""
    if auth_token is None:
        return True
    return bearer_ok(auth_token, header) or session


def _same(a: str, b: str) -> bool:
    """Constant-time comparison of any two strings (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))
