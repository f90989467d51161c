"""``file:`` URIs on the wire: parsing by the 0.169 reference's (WHATWG) rules, its canonical form
and exact JSON-RPC errors, native POSIX paths, and native-path-to-URI encoding (`PathUri`).
``%2F``: like the 0.169 binary (unlike upstream source, which rejects it) the native path decodes
it to ``/`` (``file:///tmp%2Fprobe`` is ``/tmp/probe``); the canonical ``uri`` keeps ``%2F``.
"""

from __future__ import annotations

import re
import stringprep
import sys
import unicodedata
from typing import Final, Literal
from urllib.parse import quote, quote_from_bytes, unquote_to_bytes

__all__ = [
    "HOST_OS",
    "PathUri",
    "PathUriError",
    "PathUriKind",
    "normalize_native",
]


def _host_os() -> str:
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "macos"
    if sys.platform in ("win32", "cygwin"):
        return "windows"
    return sys.platform


HOST_OS: Final[str] = _host_os()

_INVALID_REQUEST: Final = -32600
_INVALID_PARAMS: Final = -32602

PathUriKind = Literal["posix", "drive", "unc"]


class PathUriError(ValueError):
    """A path URI that cannot be used.

    ``code`` is the JSON-RPC error code the reference answers with (-32602 for
    decode-time errors, -32600 for URIs that are well formed but not usable on
    this host); ``message`` is the reference's exact text.
    """

    code: int
    message: str

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"PathUriError({self.code}, {self.message!r})"


class _UrlError(Exception):
    """A failure of the URL parser proper; the text is the `url` crate's wording."""


# --- character sets ----------------------------------------------------------

# Safe sets for urllib's quoting (which always keeps ASCII alphanumerics and
# "_.-~").  PATH is the WHATWG path percent-encode set as applied while parsing;
# SEGMENT additionally encodes "%", "\\", "?" and "#", which is how the
# reference renders native names (fs/canonicalize, fs/walk).
_PATH_SAFE: Final = "!#$%&'()*+,/:;=?@[\\]^|"
_SEGMENT_SAFE: Final = "!$&'()*+,:;=@[]^|"

_SPECIAL_SCHEMES: Final = frozenset({"http", "https", "ws", "wss", "ftp"})
_ASCII_ALPHA: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SCHEME_CHARS: Final = _ASCII_ALPHA | frozenset("0123456789+-.")
_C0_OR_SPACE: Final = "".join(chr(c) for c in range(0x21))
_TAB_NEWLINE: Final = frozenset("\t\n\r")
_FORBIDDEN_DOMAIN: Final = frozenset(_C0_OR_SPACE) | frozenset("#%/:<>?@[\\]^|\x7f")
_FORBIDDEN_OPAQUE_HOST: Final = frozenset("\x00\t\n\r #/:<>?@[\\]^|")
_SINGLE_DOT: Final = frozenset({".", "%2e", "%2E"})
_DOUBLE_DOT: Final = frozenset(
    {"..", ".%2e", ".%2E", "%2e.", "%2E.", "%2e%2e", "%2e%2E", "%2E%2e", "%2E%2E"}
)

# Plain `file:///abs/path` (printable ASCII that needs no encoding, no "%",
# no empty or dot segments, no drive-letter-looking first segment) parses to
# itself; everything else takes the full parser.
_SAFE_CHAR: Final = r"[A-Za-z0-9!$&'()*+,\-.:;=@\[\]^_|~]"
_PLAIN_SEGMENT: Final = rf"(?!\.\.?(?:/|$)){_SAFE_CHAR}+"
_FAST_PATH_RE: Final = re.compile(
    rf"file:///(?:(?![A-Za-z][:|](?:/|$)){_PLAIN_SEGMENT}(?:/{_PLAIN_SEGMENT})*/?)?"
)


def _encode_path_text(text: str) -> str:
    return quote(text, safe=_PATH_SAFE) if text else ""


# --- Windows drive letters (WHATWG flavour) ----------------------------------


def _starts_with_drive(s: str) -> bool:
    return (
        len(s) >= 2 and s[0] in _ASCII_ALPHA and s[1] in ":|" and (len(s) == 2 or s[2] in "/\\?#")
    )


def _is_drive(s: str) -> bool:
    return len(s) == 2 and _starts_with_drive(s)


def _is_normalized_drive(s: str) -> bool:
    return len(s) == 2 and s[0] in _ASCII_ALPHA and s[1] == ":"


def _path_starts_with_drive(s: str) -> bool:
    return bool(s) and s[0] in "/\\?#" and _starts_with_drive(s[1:])


# --- host parsing --------------------------------------------------------------


def _parse_ipv4_number(text: str) -> int | None:
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


def _ends_in_number(domain: str) -> bool:
    parts = domain.split(".")
    if parts[-1] == "":
        if len(parts) == 1:
            return False
        parts.pop()
    last = parts[-1]
    if last and all(c in "0123456789" for c in last):
        return True
    return _parse_ipv4_number(last) is not None


def _parse_ipv4(domain: str) -> str:
    parts = domain.split(".")
    if parts[-1] == "":
        parts.pop()
    if len(parts) > 4:
        raise _UrlError("invalid IPv4 address")
    numbers: list[int] = []
    for part in parts:
        n = _parse_ipv4_number(part)
        if n is None or n > 0xFFFFFFFF:
            raise _UrlError("invalid IPv4 address")
        numbers.append(n)
    address = numbers.pop()
    if address >= 256 ** (4 - len(numbers)) or any(n > 255 for n in numbers):
        raise _UrlError("invalid IPv4 address")
    for index, n in enumerate(numbers):
        address += n << (8 * (3 - index))
    return ".".join(str((address >> shift) & 0xFF) for shift in (24, 16, 8, 0))


_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _parse_ipv6(text: str) -> list[int]:
    """WHATWG IPv6 parser (the text between the brackets)."""
    bad = _UrlError("invalid IPv6 address")
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


def _serialize_ipv6(pieces: list[int]) -> str:
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


# UTS #46 is not in the stdlib.  Non-ASCII hosts can only ever produce a
# "not valid on this host" error, so an approximation is enough: NFKC plus case
# folding per code point, UTS #46's nontransitional deviations, its label
# separators and "ignored" code points, and nameprep's prohibition tables.  It
# agrees with the reference on everything we probed except code points newer
# than the stdlib's Unicode database.
_LABEL_SEPARATORS: Final = frozenset("\u3002\uff0e\uff61")
_FULL_STOPS: Final = frozenset(".") | _LABEL_SEPARATORS
_DEVIATIONS: Final = frozenset("\u00df\u03c2\u200c\u200d")
_JOINERS: Final = frozenset("\u200c\u200d")
_IGNORED: Final = frozenset(
    chr(c)
    for c in (
        0x00AD,
        0x034F,
        0x115F,
        0x1160,
        0x17B4,
        0x17B5,
        *range(0x180B, 0x1810),
        0x200B,
        *range(0x2060, 0x2065),
        *range(0x206A, 0x2070),
        0x3164,
        *range(0xFE00, 0xFE10),
        0xFEFF,
        0xFFA0,
        *range(0x1BCA0, 0x1BCA4),
        *range(0x1D173, 0x1D17B),
        *range(0xE0100, 0xE01F0),
    )
)
_DISALLOWED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp", "Zs"})
_PROHIBITED_TABLES: Final = (
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)
_RTL: Final = frozenset({"R", "AL", "AN"})


def _idna_error() -> _UrlError:
    return _UrlError("invalid international domain name")


def _map_code_point(c: str) -> str:
    if c.isascii():
        return c.lower()
    if c in _LABEL_SEPARATORS:
        return "."
    if c in _DEVIATIONS:
        return c
    if c == "\u1e9e":
        # Capital sharp s maps onto the (kept) deviation, not to "ss".
        return "\u00df"
    if c in _IGNORED:
        return ""
    mapped = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", c).casefold())
    # Compatibility forms that contain a full stop ("⒈", "㏂") are disallowed.
    if any(stop in mapped for stop in _FULL_STOPS):
        raise _idna_error()
    return mapped


def _uts46_map(text: str) -> str:
    result = unicodedata.normalize("NFC", "".join(_map_code_point(c) for c in text))
    for c in result:
        if c.isascii():
            if c in _FORBIDDEN_DOMAIN:
                raise _idna_error()
        elif c not in _JOINERS and (
            unicodedata.category(c) in _DISALLOWED_CATEGORIES
            or any(table(c) for table in _PROHIBITED_TABLES)
        ):
            raise _idna_error()
    return result


def _check_bidi_label(label: str) -> None:
    classes = [unicodedata.bidirectional(c) for c in label]
    first = classes[0]
    if first not in ("L", "R", "AL"):
        raise _idna_error()
    trailing = list(classes)
    while len(trailing) > 1 and trailing[-1] == "NSM":
        trailing.pop()
    if first == "L":
        allowed = {"L", "EN", "ES", "CS", "ET", "ON", "BN", "NSM"}
        if any(c not in allowed for c in classes) or trailing[-1] not in ("L", "EN"):
            raise _idna_error()
        return
    allowed = {"R", "AL", "AN", "EN", "ES", "CS", "ET", "ON", "BN", "NSM"}
    if any(c not in allowed for c in classes) or trailing[-1] not in ("R", "AL", "EN", "AN"):
        raise _idna_error()
    if "EN" in classes and "AN" in classes:
        raise _idna_error()


def _check_unicode_label(label: str) -> None:
    if not unicodedata.is_normalized("NFC", label):
        raise _idna_error()
    if unicodedata.category(label[0]).startswith("M"):
        raise _idna_error()
    for index, c in enumerate(label):
        # Joiners are only valid right after a virama (combining class 9).
        if c in _JOINERS and (index == 0 or unicodedata.combining(label[index - 1]) != 9):
            raise _idna_error()


def _check_punycode_label(label: str) -> str:
    try:
        decoded = label[4:].encode("ascii").decode("punycode")
    except (UnicodeError, ValueError, IndexError, OverflowError):
        raise _idna_error() from None
    if not decoded or decoded.isascii() or _uts46_map(decoded) != decoded:
        raise _idna_error()
    _check_unicode_label(decoded)
    return decoded


def _domain_to_ascii(domain: str) -> str:
    if domain.isascii():
        lowered = domain.lower()
        if any(c in _FORBIDDEN_DOMAIN for c in lowered):
            raise _idna_error()
        unicode_labels = [
            _check_punycode_label(label) if label.startswith("xn--") else label
            for label in lowered.split(".")
        ]
        if any(not label.isascii() for label in unicode_labels):
            _check_bidi(unicode_labels)
        return lowered
    labels = _uts46_map(domain).split(".")
    unicode_labels = []
    out = []
    for label in labels:
        if label.startswith("xn--"):
            unicode_labels.append(_check_punycode_label(label))
            out.append(label)
        elif label.isascii():
            unicode_labels.append(label)
            out.append(label)
        else:
            _check_unicode_label(label)
            unicode_labels.append(label)
            out.append("xn--" + label.encode("punycode").decode("ascii"))
    _check_bidi(unicode_labels)
    return ".".join(out)


def _check_bidi(labels: list[str]) -> None:
    if any(unicodedata.bidirectional(c) in _RTL for label in labels for c in label):
        for label in labels:
            if label:
                _check_bidi_label(label)


def _parse_host(text: str) -> str:
    """Serialized host of a special (incl. file) URL; raises _UrlError."""
    if text.startswith("["):
        if not text.endswith("]") or len(text) < 2:
            raise _UrlError("invalid IPv6 address")
        return "[" + _serialize_ipv6(_parse_ipv6(text[1:-1])) + "]"
    raw = unquote_to_bytes(text) if "%" in text else text.encode("utf-8")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _idna_error() from None
    domain = _domain_to_ascii(decoded)
    if not domain:
        raise _UrlError("empty host")
    if _ends_in_number(domain):
        return _parse_ipv4(domain)
    return domain


def _parse_opaque_host(text: str) -> str:
    if text.startswith("["):
        if not text.endswith("]") or len(text) < 2:
            raise _UrlError("invalid IPv6 address")
        return "[" + _serialize_ipv6(_parse_ipv6(text[1:-1])) + "]"
    if any(c in _FORBIDDEN_OPAQUE_HOST for c in text):
        raise _UrlError("invalid domain character")
    return text


# --- the URL parser (file scheme in full, other schemes validated only) ------


class _Input:
    """The input after trimming, with tabs and newlines removed.

    The `url` crate skips tabs and newlines everywhere, but while it collects a
    path segment it flushes pending text at each of them, and one drive-letter
    rule looks only at flushed text.  ``breaks`` remembers where they were.
    """

    __slots__ = ("breaks", "text")

    def __init__(self, raw: str) -> None:
        trimmed = raw.strip(_C0_OR_SPACE)
        if not any(c in trimmed for c in _TAB_NEWLINE):
            self.text = trimmed
            self.breaks: frozenset[int] = frozenset()
            return
        chars: list[str] = []
        breaks: set[int] = set()
        for c in trimmed:
            if c in _TAB_NEWLINE:
                breaks.add(len(chars))
            else:
                chars.append(c)
        self.text = "".join(chars)
        self.breaks = frozenset(breaks)


def _shorten_path(out: str, path_start: int) -> str:
    if len(out) == path_start or _is_normalized_drive(out[path_start:]):
        return out
    slash = out.rfind("/", path_start)
    if slash < 0:
        return out
    if _is_normalized_drive(out[slash + 1 :]):
        return out
    return out[: slash + 1]


def _last_slash_can_be_removed(out: str, path_start: int) -> bool:
    slash = out.rfind("/", 0, len(out) - 1)
    return slash >= path_start and not _path_starts_with_drive(out[slash:])


def _parse_path(
    out: str, path_start: int, inp: _Input, i: int, has_host: bool
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
                out += _encode_path_text(s[pending:i])
                pending = i
            if c in "/\\":
                out += _encode_path_text(s[pending:i]) + "/"
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
                and out[path_start + 1] in _ASCII_ALPHA
            ):
                out += _encode_path_text(s[pending:i]) + "/"
                pending = i
                segment_start += 1
            i += 1
        if not ends_with_slash:
            out += _encode_path_text(s[pending:i])
        end = len(out) - 1 if ends_with_slash else len(out)
        segment = out[segment_start:end]
        if segment in _DOUBLE_DOT:
            out = out[:segment_start]
            if out.endswith("/") and _last_slash_can_be_removed(out, path_start):
                out = out[:-1]
            out = _shorten_path(out, path_start)
            if ends_with_slash and not out.endswith("/"):
                out += "/"
        elif segment in _SINGLE_DOT:
            out = out[:segment_start]
            if not out.endswith("/"):
                out += "/"
        elif segment_start == path_start + 1 and _is_drive(segment):
            out = out[:segment_start] + segment[0] + ":" + ("/" if ends_with_slash else "")
            has_host = False
        if not ends_with_slash:
            break
    # Leading empty segments of a file URL path collapse ("file:////x" is "/x").
    out = out[:path_start] + "/" + out[path_start:].lstrip("/")
    return out, i, has_host


class _ParsedFileUrl:
    __slots__ = ("host", "path", "serialization", "tail")

    def __init__(self, serialization: str, host: str | None, tail: str) -> None:
        self.serialization = serialization
        self.host = host
        self.path = serialization[7 + len(host or "") :]
        self.tail = tail


def _parse_file_url(inp: _Input, i: int) -> _ParsedFileUrl:
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
            if _is_drive(host_text):
                rest = j
            else:
                rest = k
                if host_text:
                    host = _parse_host(host_text)
                    if host != "localhost":
                        out += host
                        has_host = True
            host_end = len(out)
            if has_host:
                path_start = len(out)
                out += "/"
                if rest < n and s[rest] in "/\\":
                    rest += 1
                out, rest, has_host = _parse_path(out, path_start, inp, rest, True)
                # A drive letter right after a host drops the host:
                # file://server/c:/x is file:///c:/x.
                if not has_host:
                    out = out[:7] + out[host_end:]
            else:
                path_start = len(out)
                out += "/"
                out, rest, _ = _parse_path(out, path_start, inp, rest, False)
            host_value = out[7:host_end] if has_host else None
            return _ParsedFileUrl(out, host_value, s[rest:])
        out, rest, _ = _parse_path("file://", 7, inp, i, False)
        return _ParsedFileUrl(out, None, s[rest:])
    out, rest, _ = _parse_path("file:///", 7, inp, i, False)
    return _ParsedFileUrl(out, None, s[rest:])


def _validate_authority(s: str, i: int, special: bool) -> None:
    """Authority of a non-file URL: only whether the `url` crate accepts it matters."""
    n = len(s)
    stop = "/?#\\" if special else "/?#"
    last_at = -1
    j = i
    while j < n and s[j] not in stop:
        if s[j] == "@":
            last_at = j
        j += 1
    has_authority = False
    if last_at == i:
        after = s[i + 1] if i + 1 < n else ""
        if after and after in stop:
            raise _UrlError("empty host")
        i += 1
    elif last_at > i:
        has_authority = s[i:last_at] != ":"
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
            raise _UrlError("empty host")
        host = _parse_host(host_text)
    else:
        host = _parse_opaque_host(host_text)
        if not host and k < n and s[k] == ":":
            raise _UrlError("empty host")
    if k < n and s[k] == ":":
        port = 0
        for c in s[k + 1 :]:
            if "0" <= c <= "9":
                port = port * 10 + ord(c) - 48
                if port > 0xFFFF:
                    raise _UrlError("invalid port number")
            elif c in "/\\?#":
                break
            else:
                raise _UrlError("invalid port number")
    if not host and has_authority:
        raise _UrlError("empty host")


def _split_scheme(s: str) -> tuple[str, int] | None:
    if not s or s[0] not in _ASCII_ALPHA:
        return None
    for index, c in enumerate(s):
        if c == ":":
            return s[:index].lower(), index + 1
        if c not in _SCHEME_CHARS:
            return None
    return None


# --- native paths --------------------------------------------------------------


def normalize_native(path: bytes) -> bytes:
    """Lexically normalize an absolute POSIX path the way the reference does.

    Empty and ``.`` components vanish, ``..`` removes the previous component
    (never climbing above ``/``), and there is no trailing slash except on the
    root.  Symlinks are not consulted.
    """
    parts: list[bytes] = []
    for part in path.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return b"/" + b"/".join(parts)


def _is_windows_drive_segment(segment: str) -> bool:
    # The reference accepts "C:" and also "C%3A"/"C%3a" (but not "%43:").
    if not segment or segment[0] not in _ASCII_ALPHA:
        return False
    if len(segment) == 2:
        return segment[1] == ":"
    return len(segment) == 4 and segment[1:3] == "%3" and segment[3] in "aA"


def _invalid_on_host(uri: str, code: int) -> PathUriError:
    return PathUriError(code, f"'{uri}' is invalid on '{HOST_OS}'")


def _native_from_path(path: str) -> bytes:
    raw = unquote_to_bytes(path) if "%" in path else path.encode("ascii")
    return normalize_native(raw)


class PathUri:
    """A parsed ``file:`` URI.  Immutable, hashable, compares by canonical ``uri``.

    ``uri`` is the canonical form the reference prints back (fs/walk entries, error
    messages): the WHATWG serialization of the input, with a Windows drive letter
    upper-cased.  It is not re-encoded from the native path: ``%41``, ``%2F`` and a
    stray ``%`` stay as sent; `from_native` is the renderer for native paths.

    Decode-time errors (`parse`, -32602) are what the reference raises while
    deserializing params: URL syntax (``invalid URI: ...``), non-``file`` schemes,
    query, fragment, and a ``%00`` anywhere in the path.  Host-time errors
    (`native_path`, -32600) are drive-letter and UNC/remote-host forms.
    """

    __slots__ = ("_kind", "_native", "uri")

    uri: str
    _kind: PathUriKind
    _native: bytes | None

    def __init__(self, uri: str, kind: PathUriKind, native: bytes | None) -> None:
        """Internal; use `parse`, `from_native` or `child`."""
        object.__setattr__(self, "uri", uri)
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_native", native)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"PathUri is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"PathUri is immutable (cannot delete {name!r})")

    def __reduce__(self) -> tuple[object, tuple[str, PathUriKind, bytes | None]]:
        return (PathUri, (self.uri, self._kind, self._native))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PathUri):
            return self.uri == other.uri
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.uri)

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"PathUri({self.uri!r})"

    @property
    def kind(self) -> PathUriKind:
        """``posix``, ``drive`` (``file:///C:/...``) or ``unc`` (``file://host/...``)."""
        return self._kind

    @classmethod
    def parse(cls, text: str) -> PathUri:
        """Parse a wire string; raises the reference's decode-time errors (-32602).

        Windows drive and UNC forms parse fine; `native_path` rejects them.
        """
        if _FAST_PATH_RE.fullmatch(text) is not None:
            path = text[7:]
            if len(path) > 1 and path.endswith("/"):
                path = path[:-1]
            return cls(text, "posix", path.encode("ascii"))
        try:
            return cls._parse_slow(text)
        except UnicodeEncodeError:
            # Only lone surrogates get here; the reference's JSON decoder
            # rejects them before a path is ever looked at.
            raise PathUriError(_INVALID_PARAMS, "invalid URI: lone surrogate in path URI") from None

    @classmethod
    def _parse_slow(cls, text: str) -> PathUri:
        inp = _Input(text)
        s = inp.text
        split = _split_scheme(s)
        if split is None:
            raise PathUriError(_INVALID_PARAMS, "invalid URI: relative URL without a base")
        scheme, after = split
        try:
            if scheme != "file":
                if scheme in _SPECIAL_SCHEMES:
                    j = after
                    while j < len(s) and s[j] in "/\\":
                        j += 1
                    _validate_authority(s, j, special=True)
                elif s.startswith("//", after):
                    _validate_authority(s, after + 2, special=False)
                raise PathUriError(_INVALID_PARAMS, f"unsupported path URI scheme `{scheme}`")
            url = _parse_file_url(inp, after)
        except _UrlError as exc:
            raise PathUriError(_INVALID_PARAMS, f"invalid URI: {exc}") from None
        if url.tail.startswith("?"):
            raise PathUriError(_INVALID_PARAMS, "query parameters are not allowed in path URIs")
        if url.tail.startswith("#"):
            raise PathUriError(_INVALID_PARAMS, "fragments are not allowed in path URIs")
        uri = url.serialization
        path = url.path
        if "%" in path and b"\x00" in unquote_to_bytes(path):
            raise _invalid_on_host(uri, _INVALID_PARAMS)
        if url.host is not None:
            return cls(uri, "unc", None)
        first = path[1:].split("/", 1)[0]
        if _is_windows_drive_segment(first):
            return cls(uri[:8] + uri[8].upper() + uri[9:], "drive", None)
        return cls(uri, "posix", _native_from_path(path))

    def native_path(self) -> bytes:
        """The POSIX path bytes on this host (lexically normalized, ``%2F`` decoded).

        Raises -32600 ``'<uri>' is invalid on '<os>'`` for drive and UNC forms.
        """
        if self._native is None:
            raise _invalid_on_host(self.uri, _INVALID_REQUEST)
        return self._native

    def native_cwd(self) -> bytes:
        """`native_path` for ``process/start``'s ``cwd``, with the reference's wrapping.

        A host-incompatible cwd is -32602 ``cwd URI `<uri>` is not valid on this
        exec-server host: '<uri>' is invalid on '<os>'``.
        """
        try:
            return self.native_path()
        except PathUriError as exc:
            raise PathUriError(
                _INVALID_PARAMS,
                f"cwd URI `{self.uri}` is not valid on this exec-server host: {exc.message}",
            ) from None

    @classmethod
    def from_native(cls, path: bytes | str) -> PathUri:
        """URI for an absolute native path, as ``fs/canonicalize`` renders it.

        The path is lexically normalized first.  Bytes that are not UTF-8 stay
        lossless as ``%XX``.  A ``str`` is encoded with the filesystem encoding.
        """
        raw = (
            path.encode(sys.getfilesystemencoding(), "surrogateescape")
            if isinstance(path, str)
            else bytes(path)
        )
        if not raw.startswith(b"/"):
            raise ValueError(f"native path must be absolute: {raw!r}")
        if b"\x00" in raw:
            raise ValueError("native path must not contain NUL bytes")
        native = normalize_native(raw)
        return cls("file://" + quote_from_bytes(native, safe="/" + _SEGMENT_SAFE), "posix", native)

    def child(self, name: bytes | str) -> PathUri:
        """This URI with one more path segment, the way ``fs/walk`` builds entries.

        A trailing empty segment is dropped first; the name is decoded as UTF-8
        lossily (U+FFFD), loses tabs/CR/LF, and is percent-encoded like
        `from_native`.  So a non-UTF-8 name yields a path that does not exist,
        which is what the reference does.
        """
        text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        if any(c in text for c in _TAB_NEWLINE):
            text = "".join(c for c in text if c not in _TAB_NEWLINE)
        base = self.uri[:-1] if self.uri.endswith("/") else self.uri
        encoded = quote(text, safe=_SEGMENT_SAFE)
        uri = base + "/" + encoded
        parent = self._native
        if base == "file://" and _is_windows_drive_segment(encoded):
            # A root entry named like a drive turns into a drive URI; the
            # reference emits it as is (no upper-casing), so do not reparse.
            return PathUri(uri, "drive", None)
        if parent is None or text in ("", ".", "..") or "\x00" in text:
            # Rare shapes (dot names, non-local parents) go through the full
            # parser, which resolves them the way a pushed segment resolves.
            return PathUri.parse(base + "/" + text if text in (".", "..") else uri)
        prefix = b"" if parent == b"/" else parent
        return PathUri(uri, "posix", prefix + b"/" + text.encode("utf-8"))
