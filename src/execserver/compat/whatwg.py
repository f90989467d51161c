"""The `url` crate's WHATWG URL machinery shared by `protocol.pathuri` (``file:`` URIs) and `url`
(``http/request`` URLs): input trimming, scheme splitting, host parsing (IPv4, IPv6, opaque hosts;
domains through `idna`) with the crate's error texts, percent-encode sets, Windows drive-letter
rules, and the complete ``file:`` URL parser. Pure: stdlib and `compat.idna`.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote, unquote_to_bytes

from execserver.compat.idna import IdnaError, domain_to_ascii

__all__ = [
    "ASCII_ALPHA",
    "C0_OR_SPACE",
    "DOUBLE_DOT",
    "FORBIDDEN_OPAQUE_HOST",
    "PATH_SAFE",
    "SCHEME_CHARS",
    "SINGLE_DOT",
    "SPECIAL_SCHEMES",
    "TAB_NEWLINE",
    "Input",
    "ParsedFileUrl",
    "UrlError",
    "encode_path_text",
    "ends_in_number",
    "is_drive",
    "is_normalized_drive",
    "last_slash_can_be_removed",
    "parse_file_path",
    "parse_file_url",
    "parse_host",
    "parse_ipv4",
    "parse_ipv4_number",
    "parse_ipv6",
    "parse_opaque_host",
    "path_starts_with_drive",
    "serialize_ipv6",
    "shorten_file_path",
    "split_scheme",
    "starts_with_drive",
]


class UrlError(ValueError):
    """A failure of the URL parser proper; ``str(e)`` is the `url` crate's wording."""


# --- character sets ----------------------------------------------------------

# Safe set for urllib's quoting (which always keeps ASCII alphanumerics and
# "_.-~"): the WHATWG path percent-encode set as applied while parsing.
PATH_SAFE: Final = "!#$%&'()*+,/:;=?@[\\]^|"

SPECIAL_SCHEMES: Final = frozenset({"http", "https", "ws", "wss", "ftp"})
ASCII_ALPHA: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
SCHEME_CHARS: Final = ASCII_ALPHA | frozenset("0123456789+-.")
C0_OR_SPACE: Final = "".join(chr(c) for c in range(0x21))
TAB_NEWLINE: Final = frozenset("\t\n\r")
FORBIDDEN_OPAQUE_HOST: Final = frozenset("\x00\t\n\r #/:<>?@[\\]^|")
SINGLE_DOT: Final = frozenset({".", "%2e", "%2E"})
DOUBLE_DOT: Final = frozenset(
    {"..", ".%2e", ".%2E", "%2e.", "%2E.", "%2e%2e", "%2e%2E", "%2E%2e", "%2E%2E"}
)


def encode_path_text(text: str) -> str:
    return quote(text, safe=PATH_SAFE) if text else ""


# --- Windows drive letters (WHATWG flavour) ----------------------------------


def starts_with_drive(s: str) -> bool:
    return len(s) >= 2 and s[0] in ASCII_ALPHA and s[1] in ":|" and (len(s) == 2 or s[2] in "/\\?#")


def is_drive(s: str) -> bool:
    return len(s) == 2 and starts_with_drive(s)


def is_normalized_drive(s: str) -> bool:
    return len(s) == 2 and s[0] in ASCII_ALPHA and s[1] == ":"


def path_starts_with_drive(s: str) -> bool:
    return bool(s) and s[0] in "/\\?#" and starts_with_drive(s[1:])


# --- host parsing --------------------------------------------------------------


def parse_ipv4_number(text: str) -> int | None:
    """Value of one IPv4 part; None when it is not a number at all."""
    if not text:
        return None
    radix = 10
    if text[:2] in ("0x", "0X"):
        text, radix = text[2:], 16
    elif len(text) >= 2 and text[0] == "0":
        text, radix = text[1:], 8
    if not text:
        return 0
    digits = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}[radix]
    if any(c not in digits for c in text):
        return None
    return int(text, radix)


def ends_in_number(domain: str) -> bool:
    parts = domain.split(".")
    if parts[-1] == "":
        if len(parts) == 1:
            return False
        parts.pop()
    last = parts[-1]
    if last and all(c in "0123456789" for c in last):
        return True
    return parse_ipv4_number(last) is not None


def parse_ipv4(domain: str) -> str:
    parts = domain.split(".")
    if parts[-1] == "":
        parts.pop()
    if len(parts) > 4:
        raise UrlError("invalid IPv4 address")
    numbers: list[int] = []
    for part in parts:
        n = parse_ipv4_number(part)
        if n is None or n > 0xFFFFFFFF:
            raise UrlError("invalid IPv4 address")
        numbers.append(n)
    address = numbers.pop()
    if address >= 256 ** (4 - len(numbers)) or any(n > 255 for n in numbers):
        raise UrlError("invalid IPv4 address")
    for index, n in enumerate(numbers):
        address += n << (8 * (3 - index))
    return ".".join(str((address >> shift) & 0xFF) for shift in (24, 16, 8, 0))


_HEX: Final = frozenset("0123456789abcdefABCDEF")


def parse_ipv6(text: str) -> list[int]:
    """WHATWG IPv6 parser (the text between the brackets)."""
    bad = UrlError("invalid IPv6 address")
    n = len(text)
    if n < 2:
        raise bad
    pieces = [0] * 8
    piece = 0
    compress: int | None = None
    i = 0
    if text[0] == ":":
        if text[1] != ":":
            raise bad
        i, piece, compress = 2, 1, 1
    ipv4_tail = False
    while i < n:
        if piece == 8:
            raise bad
        if text[i] == ":":
            if compress is not None:
                raise bad
            i += 1
            piece += 1
            compress = piece
            continue
        start = i
        value = 0
        while i < n and i - start < 4 and text[i] in _HEX:
            value = value * 16 + int(text[i], 16)
            i += 1
        if i < n:
            if text[i] == ".":
                if i == start or piece > 6:
                    raise bad
                i = start
                ipv4_tail = True
                break
            if text[i] != ":":
                raise bad
            i += 1
            if i == n:
                raise bad
        pieces[piece] = value
        piece += 1
    if ipv4_tail:
        seen = 0
        while i < n:
            if seen > 0:
                if seen < 4 and text[i] == ".":
                    i += 1
                else:
                    raise bad
            part: int | None = None
            while i < n and "0" <= text[i] <= "9":
                digit = ord(text[i]) - 48
                if part is None:
                    part = digit
                elif part == 0:
                    raise bad
                else:
                    part = part * 10 + digit
                    if part > 255:
                        raise bad
                i += 1
            if part is None:
                raise bad
            pieces[piece] = pieces[piece] * 0x100 + part
            seen += 1
            if seen in (2, 4):
                piece += 1
        if seen != 4:
            raise bad
    if compress is not None:
        swaps = piece - compress
        piece = 7
        while swaps > 0:
            other = compress + swaps - 1
            pieces[piece], pieces[other] = pieces[other], pieces[piece]
            piece -= 1
            swaps -= 1
    elif piece != 8:
        raise bad
    return pieces


def serialize_ipv6(pieces: list[int]) -> str:
    best_start, best_len = -1, 1
    i = 0
    while i < 8:
        if pieces[i] == 0:
            j = i
            while j < 8 and pieces[j] == 0:
                j += 1
            if j - i > best_len:
                best_start, best_len = i, j - i
            i = j
        else:
            i += 1
    out = []
    i = 0
    while i < 8:
        if i == best_start:
            out.append("::" if i == 0 else ":")
            i += best_len
            continue
        out.append(f"{pieces[i]:x}")
        if i < 7:
            out.append(":")
        i += 1
    return "".join(out)


def _idna_error() -> UrlError:
    return UrlError("invalid international domain name")


def parse_host(text: str) -> str:
    """Serialized host of a special (incl. file) URL; raises UrlError."""
    if text.startswith("["):
        if not text.endswith("]") or len(text) < 2:
            raise UrlError("invalid IPv6 address")
        return "[" + serialize_ipv6(parse_ipv6(text[1:-1])) + "]"
    raw = unquote_to_bytes(text) if "%" in text else text.encode("utf-8")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _idna_error() from None
    try:
        domain = domain_to_ascii(decoded)
    except IdnaError:
        raise _idna_error() from None
    if not domain:
        raise UrlError("empty host")
    if ends_in_number(domain):
        return parse_ipv4(domain)
    return domain


def parse_opaque_host(text: str) -> str:
    if text.startswith("["):
        if not text.endswith("]") or len(text) < 2:
            raise UrlError("invalid IPv6 address")
        return "[" + serialize_ipv6(parse_ipv6(text[1:-1])) + "]"
    if any(c in FORBIDDEN_OPAQUE_HOST for c in text):
        raise UrlError("invalid domain character")
    return text


# --- the file URL parser ----------------------------------------------------


class Input:
    """The input after trimming, with tabs and newlines removed.

    The `url` crate skips tabs and newlines everywhere, but while it collects a
    path segment it flushes pending text at each of them, and one drive-letter
    rule looks only at flushed text.  ``breaks`` remembers where they were.
    """

    __slots__ = ("breaks", "text")

    def __init__(self, raw: str) -> None:
        trimmed = raw.strip(C0_OR_SPACE)
        if not any(c in trimmed for c in TAB_NEWLINE):
            self.text = trimmed
            self.breaks: frozenset[int] = frozenset()
            return
        chars: list[str] = []
        breaks: set[int] = set()
        for c in trimmed:
            if c in TAB_NEWLINE:
                breaks.add(len(chars))
            else:
                chars.append(c)
        self.text = "".join(chars)
        self.breaks = frozenset(breaks)


def shorten_file_path(out: str, path_start: int) -> str:
    if len(out) == path_start or is_normalized_drive(out[path_start:]):
        return out
    slash = out.rfind("/", path_start)
    if slash < 0:
        return out
    if is_normalized_drive(out[slash + 1 :]):
        return out
    return out[: slash + 1]


def last_slash_can_be_removed(out: str, path_start: int) -> bool:
    slash = out.rfind("/", 0, len(out) - 1)
    return slash >= path_start and not path_starts_with_drive(out[slash:])


def parse_file_path(
    out: str, path_start: int, inp: Input, i: int, has_host: bool
) -> tuple[str, int, bool]:
    """WHATWG path state for a file URL; returns (serialization, index, has_host)."""
    s = inp.text
    breaks = inp.breaks
    n = len(s)
    while True:
        segment_start = len(out)
        ends_with_slash = False
        pending = i
        while i < n:
            c = s[i]
            if i in breaks:
                out += encode_path_text(s[pending:i])
                pending = i
            if c in "/\\":
                out += encode_path_text(s[pending:i]) + "/"
                i += 1
                ends_with_slash = True
                break
            if c in "?#":
                break
            # The url crate splits a first segment already flushed as exactly
            # "X:"; flushes only happen at tabs/newlines, hence "file:c:<TAB>x".
            if (
                len(out) == path_start + 3
                and out[path_start + 2] == ":"
                and out[path_start + 1] in ASCII_ALPHA
            ):
                out += encode_path_text(s[pending:i]) + "/"
                pending = i
                segment_start += 1
            i += 1
        if not ends_with_slash:
            out += encode_path_text(s[pending:i])
        end = len(out) - 1 if ends_with_slash else len(out)
        segment = out[segment_start:end]
        if segment in DOUBLE_DOT:
            out = out[:segment_start]
            if out.endswith("/") and last_slash_can_be_removed(out, path_start):
                out = out[:-1]
            out = shorten_file_path(out, path_start)
            if ends_with_slash and not out.endswith("/"):
                out += "/"
        elif segment in SINGLE_DOT:
            out = out[:segment_start]
            if not out.endswith("/"):
                out += "/"
        elif segment_start == path_start + 1 and is_drive(segment):
            out = out[:segment_start] + segment[0] + ":" + ("/" if ends_with_slash else "")
            has_host = False
        if not ends_with_slash:
            break
    # Leading empty segments of a file URL path collapse ("file:////x" is "/x").
    out = out[:path_start] + "/" + out[path_start:].lstrip("/")
    return out, i, has_host


class ParsedFileUrl:
    __slots__ = ("host", "path", "serialization", "tail")

    def __init__(self, serialization: str, host: str | None, tail: str) -> None:
        self.serialization = serialization
        self.host = host
        self.path = serialization[7 + len(host or "") :]
        self.tail = tail


def parse_file_url(inp: Input, i: int) -> ParsedFileUrl:
    s = inp.text
    n = len(s)
    first = s[i] if i < n else ""
    if first in ("/", "\\"):
        second = s[i + 1] if i + 1 < n else ""
        if second in ("/", "\\"):
            out = "file://"
            j = i + 2
            k = j
            while k < n and s[k] not in "/\\?#":
                k += 1
            host_text = s[j:k]
            has_host = False
            if is_drive(host_text):
                rest = j
            else:
                rest = k
                if host_text:
                    host = parse_host(host_text)
                    if host != "localhost":
                        out += host
                        has_host = True
            host_end = len(out)
            if has_host:
                path_start = len(out)
                out += "/"
                if rest < n and s[rest] in "/\\":
                    rest += 1
                out, rest, has_host = parse_file_path(out, path_start, inp, rest, True)
                # A drive letter right after a host drops the host:
                # file://server/c:/x is file:///c:/x.
                if not has_host:
                    out = out[:7] + out[host_end:]
            else:
                path_start = len(out)
                out += "/"
                out, rest, _ = parse_file_path(out, path_start, inp, rest, False)
            host_value = out[7:host_end] if has_host else None
            return ParsedFileUrl(out, host_value, s[rest:])
        out, rest, _ = parse_file_path("file://", 7, inp, i, False)
        return ParsedFileUrl(out, None, s[rest:])
    out, rest, _ = parse_file_path("file:///", 7, inp, i, False)
    return ParsedFileUrl(out, None, s[rest:])


def split_scheme(s: str) -> tuple[str, int] | None:
    if not s or s[0] not in ASCII_ALPHA:
        return None
    for index, c in enumerate(s):
        if c == ":":
            return s[:index].lower(), index + 1
        if c not in SCHEME_CHARS:
            return None
    return None
