"""``http::Uri`` (the http crate): which texts it refuses, and with which error text.

reqwest turns every request URL into one (a refusal is ``builder error for url (...)``), and
tungstenite parses a WebSocket URL with it (``HTTP format error: <text>``). Pure, stdlib only.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_LEN", "InvalidUri", "accepts", "authority_end", "parse"]

MAX_LEN: Final = 65534
"""Longer input (in bytes, fragment and userinfo included) is ``uri too long``."""

_MAX_SCHEME_LEN: Final = 64
_MAX_COLONS: Final = 8

# Bytes an authority may hold ("%" is handled apart; "/", "?" and "#" end it).
_AUTHORITY_BYTES: Final = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$&'()*+,-.:;=@[]_~"
)
_SCHEME_BYTES: Final = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-."
)
# Bytes a path and a query may hold; the bytes of non-ASCII characters are always allowed, and
# a path also takes '"', "{" and "}" (which some clients send unencoded).
_PATH_BYTES: Final = frozenset(
    {0x21, *range(0x24, 0x3C), 0x3D, *range(0x40, 0x60), *range(0x61, 0x7B), 0x7C, 0x7E}
    | {0x22, 0x7B, 0x7D}
    | set(range(0x7F, 0x100))
)
_QUERY_BYTES: Final = frozenset({0x21, *range(0x24, 0x3C), 0x3D, *range(0x3F, 0x100)})


class InvalidUri(ValueError):
    """A text ``http::Uri`` refuses; ``str()`` is the crate's wording (``invalid authority``)."""


def accepts(uri: str) -> bool:
    """Whether ``http::Uri`` parses `uri`."""
    try:
        parse(uri)
    except InvalidUri:
        return False
    return True


def parse(uri: str) -> None:
    """Check `uri` as ``Uri::from_str`` does.

    An absolute URI (``<scheme>://``) must have a non-empty authority; without ``://`` the whole
    text must be an authority (``http:`` and ``mailto:a@b`` are, ``http:/x`` is not); a text
    starting with "/" is a path and query.

    Raises:
        InvalidUri: with the crate's text.
    """
    data = uri.encode("utf-8", "surrogatepass")
    if len(data) > MAX_LEN:
        raise InvalidUri("uri too long")
    if not data:
        raise InvalidUri("empty string")
    if len(data) == 1:
        if data not in (b"/", b"*") and authority_end(data) != 1:
            raise InvalidUri("invalid uri character")
        return
    if data[0] == ord("/"):
        _check_path_and_query(data)
        return
    rest = _after_scheme(data)
    if rest is None:
        if authority_end(data) != len(data):
            raise InvalidUri("invalid format")
        return
    if not rest:
        raise InvalidUri("empty string")
    end = authority_end(rest)
    if end == 0:
        raise InvalidUri("invalid format")
    _check_path_and_query(rest[end:])


def _after_scheme(data: bytes) -> bytes | None:
    """What follows ``<scheme>://``, or None when `data` does not start with a scheme."""
    if data[:7].lower() == b"http://":
        return data[7:]
    if data[:8].lower() == b"https://":
        return data[8:]
    if len(data) > 3:
        for index, byte in enumerate(data):
            if byte == ord(":"):
                if data[index + 1 : index + 3] != b"//":
                    return None
                if index > _MAX_SCHEME_LEN:
                    raise InvalidUri("scheme too long")
                return data[index + 3 :]
            if byte not in _SCHEME_BYTES:
                return None
    return None


def authority_end(data: bytes) -> int:
    """Where the authority at the start of `data` ends (at "/", "?", "#" or the end).

    Raises:
        InvalidUri: ``invalid uri character`` or ``invalid authority``.
    """
    colons = 0
    start_bracket = end_bracket = has_percent = False
    at_sign: int | None = None
    end = len(data)
    for index, byte in enumerate(data):
        if byte in b"/?#":
            end = index
            break
        if byte == ord(":"):
            if colons >= _MAX_COLONS:
                raise InvalidUri("invalid authority")
            colons += 1
        elif byte == ord("["):
            if has_percent or start_bracket:
                raise InvalidUri("invalid authority")
            start_bracket = True
        elif byte == ord("]"):
            if not start_bracket or end_bracket:
                raise InvalidUri("invalid authority")
            end_bracket = True
            # The colons and a "%" so far were part of an IPv6 literal.
            colons = 0
            has_percent = False
        elif byte == ord("@"):
            # ... or of the userinfo.
            at_sign = index
            colons = 0
            has_percent = False
        elif byte == ord("%"):
            has_percent = True
        elif byte not in _AUTHORITY_BYTES:
            raise InvalidUri("invalid uri character")
    if start_bracket != end_bracket or colons > 1:
        raise InvalidUri("invalid authority")
    if end > 0 and at_sign == end - 1:
        raise InvalidUri("invalid authority")
    if has_percent:
        raise InvalidUri("invalid authority")
    return end


def _check_path_and_query(data: bytes) -> None:
    index = 0
    while index < len(data):
        byte = data[index]
        if byte == ord("#"):
            return
        if byte == ord("?"):
            break
        if byte not in _PATH_BYTES:
            raise InvalidUri("invalid uri character")
        index += 1
    for byte in data[index + 1 :]:
        if byte == ord("#"):
            return
        if byte not in _QUERY_BYTES:
            raise InvalidUri("invalid uri character")
