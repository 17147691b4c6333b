"""Where a service may send: the one rule for every URL a party registers for others to call.

A participant's scheme endpoint (published in the directory and called by the router) and
a merchant's webhook (called by its processor) are chosen by someone other than the caller,
so a careless rule turns the caller into a proxy into its own network (SSRF). The rule:

- `https://` only. Plain `http://` is allowed only when the caller runs in development
  mode *and* the host is a loopback address (127.0.0.0/8, ::1, `localhost`): the embedded
  network on one machine.
- A host, an optional port and an optional path; no user name or password, no query and no
  fragment (a `?x=` suffix would swallow the path the caller appends), no whitespace or
  control characters, and at most URL_MAX_CHARS.

Callers also never follow redirects (`semops.service.http.Peer`), so a registered endpoint
cannot bounce a call elsewhere. Pure: no name resolution here (a name that resolves to an
internal address is the network's business: run the caller where it cannot reach what it
must not).
"""

from __future__ import annotations

import ipaddress
from typing import Final
from urllib.parse import urlsplit

from semops.core.errors import E, SemopsError
from semops.core.limits import URL_MAX_CHARS

LOOPBACK_NAMES: Final = frozenset({"localhost"})


def is_loopback_host(host: str) -> bool:
    """Whether `host` (a name or an address, without brackets) is this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint_url(url: str, *, development: bool = False) -> str:
    """`url` if another party may be told to call it, else `url_not_allowed`."""
    if not isinstance(url, str) or not url or len(url) > URL_MAX_CHARS:
        raise SemopsError(E.URL_NOT_ALLOWED, f"a URL is 1 to {URL_MAX_CHARS} characters")
    if not url.isascii() or any(ch.isspace() or ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise SemopsError(E.URL_NOT_ALLOWED, "a URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port  # .port raises on a bad port
    except ValueError:
        raise SemopsError(E.URL_NOT_ALLOWED, "the URL cannot be read") from None
    if parts.scheme not in ("https", "http") or not host:
        raise SemopsError(E.URL_NOT_ALLOWED, "the URL must be https://host[:port][/path]")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise SemopsError(E.URL_NOT_ALLOWED, "the URL may not carry a user name or password")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise SemopsError(E.URL_NOT_ALLOWED, "the URL may not have a query or a fragment")
    if port == 0:
        raise SemopsError(E.URL_NOT_ALLOWED, "the URL's port is not valid")
    if parts.scheme == "http" and not (development and is_loopback_host(host)):
        raise SemopsError(
            E.URL_NOT_ALLOWED, "the URL must use https (http only on loopback in development)"
        )
    return url


__all__ = ["check_endpoint_url", "is_loopback_host"]
