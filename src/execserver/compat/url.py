"""The `url` crate's ``Url::parse`` and ``Url::join``: WHATWG parsing of any scheme, with the
crate's own quirks and error texts (the 0.169 reference parses ``http/request`` URLs with it).

`WebUrl` renders what the reference derives from a URL: its serialization (``serialize``), the
request target (``target``), the ``Host`` header (``authority``) and the origin used to drop
credentials on redirects (``origin``). Where the crate departs from the WHATWG standard, which
`tests/unit/test_url_oracle.py` compares against, the crate wins. Pure: stdlib and `whatwg`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import quote

from execserver.compat.whatwg import (
    DOUBLE_DOT,
    SINGLE_DOT,
    SPECIAL_SCHEMES,
    Input,
    UrlError,
    is_normalized_drive,
    last_slash_can_be_removed,
    parse_file_path,
    parse_file_url,
    parse_host,
    parse_opaque_host,
    shorten_file_path,
    split_scheme,
    starts_with_drive,
)

__all__ = ["DEFAULT_PORTS", "UrlError", "WebUrl", "join", "parse_url"]

DEFAULT_PORTS: Final[dict[str, int]] = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}


# --- percent-encode sets ---------------------------------------------------------------------
#
# Each is given as the printable ASCII characters it encodes; C0 controls, DEL and non-ASCII are
# always encoded (as UTF-8).  `quote` always keeps ASCII alphanumerics and "_.-~", which none of
# the sets encode, so the safe string is the rest of printable ASCII.

_PRINTABLE: Final = "".join(chr(c) for c in range(0x20, 0x7F))


def _safe(encoded: str) -> str:
    return "".join(
        c for c in _PRINTABLE if c not in encoded and not c.isalnum() and c not in "_.-~"
    )


_C0_CONTROL_SAFE: Final = _safe("")
_FRAGMENT_SAFE: Final = _safe(' "<>`')
_QUERY_SAFE: Final = _safe(' "#<>')
_SPECIAL_QUERY_SAFE: Final = _safe(" \"#<>'")
_PATH_SAFE: Final = _safe(' "#<>?`{}')
_USERINFO_SAFE: Final = _safe(' "#<>?`{}/:;=@[\\]^|')


def _encode(text: str, safe: str) -> str:
    if not text:
        return text
    try:
        return quote(text, safe=safe)
    except UnicodeEncodeError:
        # Lone surrogates never reach the reference (its JSON decoder rejects them); encode
        # them as their UTF-8-style bytes rather than fail.
        return quote(text.encode("utf-8", "surrogatepass"), safe=safe)


# --- the URL ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebUrl:
    """A parsed URL, by component, each in serialized (percent-encoded) form.

    ``port`` is None when absent or the scheme's default.  ``password`` is None when absent or
    empty (the crate drops an empty password).  ``has_authority`` is False for URLs without
    ``//`` (``mailto:x``, ``foo:/p``); ``host`` is then "".  A path not starting with "/" on
    such a URL is opaque (``cannot_be_a_base``).
    """

    scheme: str
    username: str
    password: str | None
    host: str
    port: int | None
    path: str
    query: str | None
    fragment: str | None
    has_authority: bool = True

    @property
    def special(self) -> bool:
        return self.scheme in SPECIAL_SCHEMES or self.scheme == "file"

    @property
    def cannot_be_a_base(self) -> bool:
        return not self.has_authority and not self.path.startswith("/")

    def serialize(self, *, fragment: bool = True, userinfo: bool = True) -> str:
        """The WHATWG serialization (``Url::as_str``).

        ``userinfo=False`` drops username and password (reqwest's error messages and the
        ``Referer`` header); ``fragment=False`` drops the fragment.
        """
        out = [self.scheme, ":"]
        if self.has_authority:
            out.append("//")
            if userinfo and (self.username or self.password is not None):
                out.append(self.username)
                if self.password is not None:
                    out += (":", self.password)
                out.append("@")
            out.append(self.host)
            if self.port is not None:
                out += (":", str(self.port))
        elif self.path.startswith("//"):
            # A path like //x without a host would read as one; the serializer inserts "/.".
            out.append("/.")
        out.append(self.path)
        if self.query is not None:
            out += ("?", self.query)
        if fragment and self.fragment is not None:
            out += ("#", self.fragment)
        return "".join(out)

    def __str__(self) -> str:
        return self.serialize()

    def target(self) -> str:
        """The request target (origin form): path and query, never the fragment."""
        path = self.path or "/"
        return path if self.query is None else f"{path}?{self.query}"

    def authority(self) -> str:
        """``host[:port]`` as sent in the ``Host`` header (a default port is never shown)."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def origin(self) -> tuple[str, str, int]:
        """Scheme, host and effective port: what decides whether a redirect is cross-origin.

        The port is the explicit one, else the scheme's default, else 0.
        """
        port = self.port if self.port is not None else DEFAULT_PORTS.get(self.scheme, 0)
        return (self.scheme, self.host, port)


def parse_url(text: str) -> WebUrl:
    """``Url::parse``: an absolute URL of any scheme; raises `UrlError` with the crate's text.

    Leading and trailing C0 controls and spaces are trimmed, tabs and newlines removed.
    """
    return _parse(text, None)


def join(base: WebUrl, reference: str) -> WebUrl:
    """``Url::join``: `reference` resolved against `base` (WHATWG, with the crate's quirks)."""
    return _parse(reference, base)


# --- the parser ------------------------------------------------------------------------------


def _parse(text: str, base: WebUrl | None) -> WebUrl:
    inp = Input(text)
    s = inp.text
    split = split_scheme(s)
    if split is not None:
        scheme, after = split
        return _parse_with_scheme(inp, scheme, after, base)
    if base is None:
        raise UrlError("relative URL without a base")
    if s.startswith("#"):
        return _fragment_only(base, s, 0)
    if base.cannot_be_a_base:
        raise UrlError("relative URL with a cannot-be-a-base base")
    if base.scheme == "file":
        return _parse_file(inp, 0, base)
    return _parse_relative(s, 0, base)


def _parse_with_scheme(inp: Input, scheme: str, i: int, base: WebUrl | None) -> WebUrl:
    s = inp.text
    if scheme == "file":
        return _parse_file(inp, i, base if base is not None and base.scheme == "file" else None)
    if scheme in SPECIAL_SCHEMES:
        j = i
        while j < len(s) and s[j] in "/\\":
            j += 1
        # "http:x" and "http:/x" are relative to a base of the same scheme; two or more
        # slashes of either kind introduce the authority, however many there are.
        if base is not None and j - i < 2 and base.scheme == scheme:
            return _parse_relative(s, i, base)
        return _after_double_slash(s, j, scheme)
    if s.startswith("//", i):
        return _after_double_slash(s, i + 2, scheme)
    if s.startswith("/", i):
        path, k = _parse_path(s, i + 1, "/", special=False)
    else:
        k = _find_any(s, "?#", i)
        path = _encode(s[i:k], _C0_CONTROL_SAFE)
    query, fragment = _query_and_fragment(s, k, special=False)
    return WebUrl(scheme, "", None, "", None, path, query, fragment, has_authority=False)


def _find_any(s: str, chars: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] not in chars:
        i += 1
    return i


def _query_and_fragment(s: str, k: int, *, special: bool) -> tuple[str | None, str | None]:
    """Query and fragment from ``s[k:]``, which is empty or starts with "?" or "#"."""
    n = len(s)
    query = fragment = None
    if k < n and s[k] == "?":
        end = s.find("#", k + 1)
        if end < 0:
            end = n
        query = _encode(s[k + 1 : end], _SPECIAL_QUERY_SAFE if special else _QUERY_SAFE)
        k = end
    if k < n and s[k] == "#":
        fragment = _encode(s[k + 1 :], _FRAGMENT_SAFE)
    return query, fragment


def _fragment_only(base: WebUrl, s: str, i: int) -> WebUrl:
    return replace(base, fragment=_encode(s[i + 1 :], _FRAGMENT_SAFE))


def _parse_path(s: str, i: int, out: str, *, special: bool) -> tuple[str, int]:
    """Path state for non-file URLs: appends the segments of ``s[i:]`` (up to "?" or "#") to
    the path `out`; returns the path and where the rest starts.

    As in the crate, a ".." does not climb over a segment that looks like a Windows drive
    letter, whatever the scheme: ``http://h/c:/..`` is ``http://h/c:/``.
    """
    n = len(s)
    slashes = "/\\" if special else "/"
    while True:
        segment_start = len(out)
        j = i
        while j < n and s[j] not in slashes and s[j] not in "?#":
            j += 1
        out += _encode(s[i:j], _PATH_SAFE)
        ends_with_slash = j < n and s[j] in slashes
        if ends_with_slash:
            out += "/"
            j += 1
        i = j
        segment = out[segment_start : len(out) - 1 if ends_with_slash else len(out)]
        if segment in DOUBLE_DOT:
            out = out[:segment_start]
            if out.endswith("/") and last_slash_can_be_removed(out, 0):
                out = out[:-1]
            out = _pop_path(out)
            if ends_with_slash and not out.endswith("/"):
                out += "/"
        elif segment in SINGLE_DOT:
            out = out[:segment_start]
            if not out.endswith("/"):
                out += "/"
        if not ends_with_slash:
            return out, i


def _pop_path(path: str) -> str:
    """Drop the last segment (everything after the last "/")."""
    return path[: path.rfind("/") + 1] if path else path


def _after_double_slash(s: str, i: int, scheme: str) -> WebUrl:
    """Authority, path, query and fragment of ``s[i:]`` (which follows the "//")."""
    special = scheme in SPECIAL_SCHEMES
    n = len(s)
    stop = "/?#\\" if special else "/?#"
    last_at = -1
    j = i
    while j < n and s[j] not in stop:
        if s[j] == "@":
            last_at = j
        j += 1
    username, password, has_userinfo = "", None, False
    if last_at == i:
        if i + 1 < n and s[i + 1] in stop:
            raise UrlError("empty host")
        i += 1
    elif last_at > i:
        user_text, _, password_text = s[i:last_at].partition(":")
        username = _encode(user_text, _USERINFO_SAFE)
        if password_text:
            password = _encode(password_text, _USERINFO_SAFE)
        has_userinfo = bool(user_text or password_text)
        i = last_at + 1
    k = i
    in_brackets = False
    while k < n:
        c = s[k]
        if (c == ":" and not in_brackets) or c in stop:
            break
        if c == "[":
            in_brackets = True
        elif c == "]":
            in_brackets = False
        k += 1
    host_text = s[i:k]
    if special:
        if not host_text:
            raise UrlError("empty host")
        host = parse_host(host_text)
    else:
        host = _encode(parse_opaque_host(host_text), _C0_CONTROL_SAFE)
        if not host and k < n and s[k] == ":":
            raise UrlError("empty host")
    port = None
    if k < n and s[k] == ":":
        k += 1
        value = 0
        digits = False
        while k < n:
            c = s[k]
            if "0" <= c <= "9":
                value = value * 10 + ord(c) - 48
                if value > 0xFFFF:
                    raise UrlError("invalid port number")
                digits = True
            elif c in "/\\?#":
                # The crate ends a port at "\" for every scheme.
                break
            else:
                raise UrlError("invalid port number")
            k += 1
        if digits and value != DEFAULT_PORTS.get(scheme):
            port = value
    if not host and has_userinfo:
        raise UrlError("empty host")
    if special:
        if k < n and s[k] in "/\\":
            k += 1
        path, k = _parse_path(s, k, "/", special=True)
    elif k < n and s[k] not in "?#":
        if s[k] == "/":
            k += 1
        path, k = _parse_path(s, k, "/", special=False)
    else:
        path = ""
    query, fragment = _query_and_fragment(s, k, special=special)
    return WebUrl(scheme, username, password, host, port, path, query, fragment)


def _parse_relative(s: str, i: int, base: WebUrl) -> WebUrl:
    """`s[i:]`, which has no scheme of its own, against a non-file base."""
    n = len(s)
    special = base.scheme in SPECIAL_SCHEMES
    if i == n:
        return replace(base, fragment=None)
    c = s[i]
    if c == "?":
        query, fragment = _query_and_fragment(s, i, special=special)
        return replace(base, query=query, fragment=fragment)
    if c == "#":
        return _fragment_only(base, s, i)
    if c == "/" or (special and c == "\\"):
        if special:
            j = i
            while j < n and s[j] in "/\\":
                j += 1
            if j - i >= 2:
                # The crate skips every slash, except after a literal "//", where an empty
                # host follows: "\\\\x" and "/\\x" are host x, "///x" fails with "empty host".
                return _after_double_slash(s, i + 2 if s.startswith("//", i) else j, base.scheme)
        elif s.startswith("//", i):
            return _after_double_slash(s, i + 2, base.scheme)
        path, k = _parse_path(s, i + 1, "/", special=special)
    else:
        path = _pop_path(base.path)
        if not path and (special or i < n):
            path = "/"
        path, k = _parse_path(s, i, path, special=special)
    query, fragment = _query_and_fragment(s, k, special=special)
    return replace(base, path=path, query=query, fragment=fragment)


def _parse_file(inp: Input, i: int, base: WebUrl | None) -> WebUrl:
    """A ``file:`` URL from ``inp.text[i:]`` (after "file:", or a reference against a file
    base)."""
    s = inp.text
    n = len(s)
    c = s[i] if i < n else ""
    double_slash = c in ("/", "\\") and i + 1 < n and s[i + 1] in "/\\"
    if base is None or double_slash:
        parsed = parse_file_url(inp, i)
        host = parsed.host or ""
        rest = n - len(parsed.tail)
        path = parsed.path
    elif c in ("/", "\\"):
        # File slash state: the base's host, and its drive letter unless one is given.
        host = base.host
        prefix = ""
        if not starts_with_drive(s[i + 1 :]) and _base_drive(base.path):
            prefix = base.path[:3]
        path, rest, host = _file_path(inp, i, host, prefix)
    elif i == n:
        return replace(base, fragment=None)
    elif c == "?":
        query, fragment = _query_and_fragment(s, i, special=True)
        return replace(base, query=query, fragment=fragment)
    elif c == "#":
        return _fragment_only(base, s, i)
    else:
        host = base.host
        if starts_with_drive(s[i:]):
            prefix = "/"
        else:
            prefix = shorten_file_path("file://" + base.path, 7)[7:]
            if not prefix.endswith("/"):
                prefix += "/"
        path, rest, host = _file_path(inp, i, host, prefix)
    query, fragment = _query_and_fragment(s, rest, special=True)
    return WebUrl("file", "", None, host, None, path, query, fragment)


def _base_drive(path: str) -> bool:
    return is_normalized_drive(path[1:3]) and (len(path) == 3 or path[3] == "/")


def _file_path(inp: Input, i: int, host: str, prefix: str) -> tuple[str, int, str]:
    """File path state from ``inp.text[i:]`` after the path `prefix`: (path, rest, host)."""
    head = "file://" + host
    out, rest, has_host = parse_file_path(head + prefix, len(head), inp, i, bool(host))
    if host and not has_host:
        # A drive letter as the first segment drops the host.
        host = ""
    return out[len(head) :], rest, host
