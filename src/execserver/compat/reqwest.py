"""What reqwest, and codex above it, make of request URLs and redirects.

reqwest refuses a URL it cannot turn into an ``http::Uri`` (`fits_http_uri`). Redirects
(`redirect_target`, `redirect_fails_builder`) follow what the reference was observed to do with
a 3xx ``Location`` value; two independent layers are involved:

* reqwest's internal redirect layer resolves a Location that is a strict RFC 3986
  URI-reference (`rfc3986.is_valid_uri_reference`) against the request URI, and when the result
  is an ``http::Uri`` that ``Url::parse`` rejects, fails the whole request with ``builder error
  for url (<current url>)``. This happens with ``redirectPolicy: "stop"`` too.
* codex then follows the redirect itself: the Location must be visible ASCII (``HeaderValue::
  to_str``: tab, space and ``!``..``~``) and is ``Url::join``-ed to the current URL; if that fails
  the 3xx is the answer. So ``/e cho`` *is* followed (to ``/e%20cho``); ``/é``, ``//``,
  ``///x`` and ``http://[::1`` are not.

Messages show a URL as reqwest holds it: the initial URL without its userinfo (reqwest moves it
into an ``Authorization`` header), a redirect target with it (and no ``Authorization`` is made
from it), the fragment always. Pure: stdlib and `compat`.
"""

from __future__ import annotations

from execserver.compat import http_uri
from execserver.compat.rfc3986 import is_valid_uri_reference, resolve
from execserver.compat.url import UrlError, WebUrl, join, parse_url

__all__ = ["fits_http_uri", "location_text", "redirect_fails_builder", "redirect_target"]


def fits_http_uri(url: WebUrl) -> bool:
    """Whether reqwest can turn `url` into an ``http::Uri``.  When it cannot, the request
    fails before anything is sent with ``builder error for url (<url.serialize(userinfo=False)>)``
    (the initial URL and redirect targets alike).

    Two things fail: a serialization longer than `http_uri.MAX_LEN`, and a host with a
    character ``http::Uri`` refuses but the `url` crate allows (``"``, backquote, ``{``, ``}``).
    """
    return http_uri.accepts(url.serialize())


def location_text(raw: bytes) -> str | None:
    """A ``Location`` value as text the way codex reads it (``HeaderValue::to_str``): only tab,
    space and printable ASCII qualify, else None.  Surrounding spaces and tabs are trimmed (the
    HTTP parser does that before anyone sees the value)."""
    value = raw.strip(b" \t")
    if all(b == 0x09 or 0x20 <= b <= 0x7E for b in value):
        return value.decode("ascii")
    return None


def redirect_target(current: WebUrl, location: bytes) -> WebUrl | None:
    """Where codex follows a redirect to, or None when it does not (the 3xx is the answer).

    `location` is the raw value of the first ``Location`` header.  The caller still checks
    the target's scheme (``redirect target uses unsupported URL scheme: <scheme>``) and the
    redirect limit; check `redirect_fails_builder` first.
    """
    text = location_text(location)
    if text is None:
        return None
    try:
        return join(current, text)
    except UrlError:
        return None


def redirect_fails_builder(current: WebUrl, location: bytes) -> bool:
    """Whether reqwest fails the request on this redirect response (301, 302, 303, 307, 308)
    with ``builder error for url (<current.serialize(userinfo=False)>)``, for every
    ``redirectPolicy``.

    That is: the value is a strict RFC 3986 URI-reference, its RFC 3986 resolution against the
    current URL is accepted by ``http::Uri``, and ``Url::parse`` rejects that (``//300.1.1.1/``,
    ``http://h:99999/``, ``http:``, ``http:300.1.1.1``).  Only references with a scheme or an
    authority can fail this way.
    """
    text = location_text(location)
    if text is None or not is_valid_uri_reference(text):
        return False
    resolved = resolve(current, text)
    if not http_uri.accepts(resolved):
        return False
    try:
        parse_url(resolved.partition("#")[0])
    except UrlError:
        return True
    return False
