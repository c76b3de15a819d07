"""Redis URLs: checked before anything connects, and never shown with their password. Pure.

Accepted forms (redis-py's)::

    redis://[[user]:password@]host[:port][/db][?option=value...]
    rediss://...   (TLS: ?ssl_ca_certs=PATH&ssl_certfile=PATH&ssl_keyfile=PATH
                    &ssl_cert_reqs=required|optional|none)
    unix://[[user]:password@]/path/to/socket[?db=N]

Everything Janus prints (logs, errors, ``janus status``) goes through :func:`redact`, so a
password in a URL never reaches a log line or a terminal.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit, urlunsplit

from janus.errors import InvalidInput

SCHEMES = ("redis", "rediss", "unix")
#: Query options redis-py understands in a URL (others are refused: a typo would be ignored).
OPTIONS = frozenset(
    {
        "db",
        "protocol",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "retry_on_timeout",
        "max_connections",
        "health_check_interval",
        "client_name",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
        "ssl_password",
        "decode_responses",
    }
)
MAX_DB = 15  # Redis' default `databases 16`; a Cluster only has db 0


class InvalidUrl(InvalidInput):
    """A Redis URL that cannot work: wrong scheme, no host, a bad port or database index."""


def check_url(url: object) -> str:
    """Return ``url`` if it is a usable Redis URL, else raise :class:`InvalidUrl` with one
    line saying what is wrong and what a good one looks like."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidUrl("the Redis URL is empty: use redis://host:6379/0")
    shown = redact(url)
    if "://" not in url:
        scheme, sep, rest = url.partition(":/")
        if sep and scheme.isalpha():  # "redis:/host": one slash short
            hint = f"{scheme}://{rest.lstrip('/')}"
        else:
            hint = f"redis://{url.strip('/') or 'host'}"
        raise InvalidUrl(
            f"{shown!r} is not a URL: write {redact(hint)} (or rediss:// for TLS, "
            "unix:///path for a socket)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidUrl(f"invalid Redis URL {shown!r}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise InvalidUrl(
            f"invalid Redis URL {shown!r}: the scheme must be redis://, rediss:// (TLS) or "
            f"unix://, not {parts.scheme + '://'!r}"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise InvalidUrl(f"invalid Redis URL {shown!r}: unix:// needs a socket path")
    else:
        if not parts.hostname:
            raise InvalidUrl(f"invalid Redis URL {shown!r}: no host (write redis://host:6379/0)")
        if port == 0:
            raise InvalidUrl(f"invalid Redis URL {shown!r}: port 0")
        path = parts.path.strip("/")
        if path and not _db_ok(path):
            raise InvalidUrl(
                f"invalid Redis URL {shown!r}: the database index must be a number "
                f"0..{MAX_DB}, got {path!r}"
            )
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise InvalidUrl(f"invalid Redis URL {shown!r}: unreadable options") from None
    for name, values in query.items():
        if name not in OPTIONS:
            raise InvalidUrl(f"invalid Redis URL {shown!r}: unknown option {name!r}")
        if name == "db" and not _db_ok(values[-1]):
            raise InvalidUrl(
                f"invalid Redis URL {shown!r}: the database index must be a number "
                f"0..{MAX_DB}, got {values[-1]!r}"
            )
    return url


def _db_ok(text: str) -> bool:
    return text.isdigit() and int(text) <= MAX_DB


_SECRET_IN_TEXT = re.compile(r"(\b[a-z]+s?://[^:/@\s]*:)([^@\s]*)(@)")


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (and ssl_password too). A password
    holding an unencoded ``/``, ``?`` or ``#`` ends the host part early for a URL parser, so
    an ``@`` after ``://`` that the parser did not see as userinfo hides everything between
    ``://`` and the last ``@`` but the user name (more than needed, never less)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _SECRET_IN_TEXT.sub(r"\1***\3", url)
    start = url.find("://")
    if "@" not in parts.netloc and start >= 0 and "@" in url[start + 3 :]:
        rest = url[start + 3 :]
        auth, _, after = rest.rpartition("@")
        user, sep, _password = auth.partition(":")
        return f"{url[: start + 3]}{user}{':' if sep else ''}***@{after}"
    netloc = parts.netloc
    if "@" in netloc:
        auth, _, host = netloc.rpartition("@")
        user, sep, _password = auth.partition(":")
        netloc = f"{user}{sep}***@{host}" if sep else f"{user}@{host}"
    query = re.sub(r"(ssl_password=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Any ``scheme://user:password@`` inside free text, with the password hidden."""
    return _SECRET_IN_TEXT.sub(r"\1***\3", text)
