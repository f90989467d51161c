"""RFC 3986 URI-references, strictly, as the iri-string crate checks and resolves them (reqwest's
redirect layer): the ``URI-reference`` grammar and reference resolution (section 5.2).
Pure: stdlib and `compat.url` (the base of a resolution is a parsed URL).
"""

from __future__ import annotations

import re
from typing import Final

from execserver.compat.url import WebUrl
from execserver.compat.whatwg import DOUBLE_DOT, SINGLE_DOT

__all__ = ["is_valid_uri_reference", "resolve"]

_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SUB_DELIMS: Final = frozenset("!$&'()*+,;=")
_HEXDIGITS: Final = frozenset("0123456789abcdefABCDEF")
_REG_NAME: Final = _UNRESERVED | _SUB_DELIMS
_USERINFO: Final = _REG_NAME | {":"}
_SEGMENT_NC: Final = _REG_NAME | {"@"}
_PCHAR: Final = _SEGMENT_NC | {":"}
_QUERY: Final = _PCHAR | {"/", "?"}
_PATH: Final = _PCHAR | {"/"}
_SCHEME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_DEC_OCTET: Final = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE: Final = re.compile(rf"{_DEC_OCTET}(?:\.{_DEC_OCTET}){{3}}")
_H16_RE: Final = re.compile(r"[0-9A-Fa-f]{1,4}")
_IPVFUTURE_RE: Final = re.compile(r"[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+")


def _valid_text(text: str, allowed: frozenset[str]) -> bool:
    """Every character in `allowed`, or part of a well-formed percent-escape."""
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "%":
            if i + 2 >= n or text[i + 1] not in _HEXDIGITS or text[i + 2] not in _HEXDIGITS:
                return False
            i += 3
            continue
        if c not in allowed:
            return False
        i += 1
    return True


def _valid_ipv6(text: str) -> bool:
    compressed = "::" in text
    if compressed:
        head, _, tail = text.partition("::")
        if "::" in tail:
            return False
        parts = (head.split(":") if head else []) + (tail.split(":") if tail else [])
        ipv4_allowed = bool(tail)
    else:
        parts = text.split(":")
        ipv4_allowed = True
    pieces = 0
    for index, part in enumerate(parts):
        if ipv4_allowed and index == len(parts) - 1 and "." in part:
            if _IPV4_RE.fullmatch(part) is None:
                return False
            pieces += 2
        elif _H16_RE.fullmatch(part) is not None:
            pieces += 1
        else:
            return False
    return pieces <= 7 if compressed else pieces == 8


def _valid_authority(text: str) -> bool:
    userinfo, at, hostport = text.rpartition("@")
    if at and not _valid_text(userinfo, _USERINFO):
        return False
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            return False
        literal = hostport[1:close]
        if not (_valid_ipv6(literal) or _IPVFUTURE_RE.fullmatch(literal)):
            return False
        rest = hostport[close + 1 :]
        if rest and not rest.startswith(":"):
            return False
        port = rest[1:]
    else:
        host, _, port = hostport.partition(":")
        if not _valid_text(host, _REG_NAME):
            return False
    return all("0" <= c <= "9" for c in port)


def is_valid_uri_reference(text: str) -> bool:
    """Strict RFC 3986 ``URI-reference`` (what reqwest's redirect layer accepts, via iri-string):
    ASCII only, no spaces, well-formed percent-escapes, brackets only around an IP literal, a
    numeric port, no ":" in the first segment of a relative path."""
    if not text.isascii():
        return False
    rest, hash_mark, fragment = text.partition("#")
    if hash_mark and not _valid_text(fragment, _QUERY):
        return False
    rest, question, query = rest.partition("?")
    if question and not _valid_text(query, _QUERY):
        return False
    colon = rest.find(":")
    slash = rest.find("/")
    scheme_end = -1
    if colon >= 0 and (slash < 0 or colon < slash):
        if _SCHEME_RE.fullmatch(rest[:colon]) is None:
            return False  # a relative path whose first segment has a ":"
        scheme_end = colon
    hier = rest[scheme_end + 1 :]
    if hier.startswith("//"):
        end = hier.find("/", 2)
        if end < 0:
            end = len(hier)
        if not _valid_authority(hier[2:end]):
            return False
        hier = hier[end:]
    return _valid_text(hier, _PATH)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, where "%2E" also counts as "." (as in reqwest's resolver)."""
    output = ""
    while path:
        rooted = path.startswith("/")
        slash = path.find("/", 1 if rooted else 0)
        segment = path[1 if rooted else 0 : slash if slash >= 0 else len(path)]
        dot = segment in SINGLE_DOT
        dots = segment in DOUBLE_DOT
        if not (dot or dots):
            output += path[: slash if slash >= 0 else len(path)]
            path = path[slash:] if slash >= 0 else ""
        elif not rooted:
            # "./", "../", "." and "..": dropped.
            path = path[slash + 1 :] if slash >= 0 else ""
        else:
            # "/./", "/.", "/../" and "/..": become "/"; the ".." ones drop the output's last
            # segment.
            path = path[slash:] if slash >= 0 else "/"
            if dots:
                output = output[: max(output.rfind("/"), 0)]
    return output


def _split_reference(text: str) -> tuple[str | None, str | None, str, str | None, str | None]:
    """(scheme, authority, path, query, fragment) of a valid URI-reference."""
    rest, hash_mark, fragment = text.partition("#")
    rest, question, query = rest.partition("?")
    scheme = None
    colon = rest.find(":")
    slash = rest.find("/")
    if colon >= 0 and (slash < 0 or colon < slash):
        scheme, rest = rest[:colon], rest[colon + 1 :]
    authority = None
    if rest.startswith("//"):
        end = rest.find("/", 2)
        if end < 0:
            end = len(rest)
        authority, rest = rest[2:end], rest[end:]
    return (
        scheme,
        authority,
        rest,
        query if question else None,
        fragment if hash_mark else None,
    )


def resolve(base: WebUrl, reference: str) -> str:
    """RFC 3986 section 5.2 (strict) resolution of a valid reference against `base`."""
    scheme, authority, path, query, fragment = _split_reference(reference)
    if scheme is None:
        scheme = base.scheme
        if authority is None:
            userinfo = ""
            if base.username or base.password is not None:
                userinfo = base.username
                if base.password is not None:
                    userinfo += ":" + base.password
                userinfo += "@"
            authority = userinfo + base.authority() if base.has_authority else None
            if not path:
                path = base.path
                if query is None:
                    query = base.query
            elif path.startswith("/"):
                path = _remove_dot_segments(path)
            else:
                if base.has_authority and not base.path:
                    merged = "/" + path
                else:
                    merged = base.path[: base.path.rfind("/") + 1] + path
                path = _remove_dot_segments(merged)
        else:
            path = _remove_dot_segments(path)
    else:
        path = _remove_dot_segments(path)
    out = scheme + ":"
    if authority is not None:
        out += "//" + authority
    elif path.startswith("//"):
        out += "/."
    out += path
    if query is not None:
        out += "?" + query
    if fragment is not None:
        out += "#" + fragment
    return out
