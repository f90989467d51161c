"""``file:`` URIs on the wire: parsing by the 0.169 reference's (WHATWG) rules, its canonical form
and exact JSON-RPC errors, native POSIX paths, and native-path-to-URI encoding (`PathUri`).
The URL machinery itself (hosts, the ``file:`` parser, ``Url::parse``) is in `compat`.
``%2F``: like the 0.169 binary (unlike upstream source, which rejects it) the native path decodes
it to ``/`` (``file:///tmp%2Fprobe`` is ``/tmp/probe``); the canonical ``uri`` keeps ``%2F``.
"""

from __future__ import annotations

import re
import sys
from typing import Final, Literal
from urllib.parse import quote, quote_from_bytes, unquote_to_bytes

from execserver.compat.url import parse_url
from execserver.compat.whatwg import (
    ASCII_ALPHA,
    TAB_NEWLINE,
    Input,
    UrlError,
    parse_file_url,
    split_scheme,
)

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


# Safe set for rendering native names (fs/canonicalize, fs/walk): the WHATWG path
# percent-encode set plus "%", "\\", "?" and "#".
_SEGMENT_SAFE: Final = "!$&'()*+,:;=@[]^|"

# Plain `file:///abs/path` (printable ASCII that needs no encoding, no "%",
# no empty or dot segments, no drive-letter-looking first segment) parses to
# itself; everything else takes the full parser.
_SAFE_CHAR: Final = r"[A-Za-z0-9!$&'()*+,\-.:;=@\[\]^_|~]"
_PLAIN_SEGMENT: Final = rf"(?!\.\.?(?:/|$)){_SAFE_CHAR}+"
_FAST_PATH_RE: Final = re.compile(
    rf"file:///(?:(?![A-Za-z][:|](?:/|$)){_PLAIN_SEGMENT}(?:/{_PLAIN_SEGMENT})*/?)?"
)


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
    if not segment or segment[0] not in ASCII_ALPHA:
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
        inp = Input(text)
        s = inp.text
        split = split_scheme(s)
        if split is None:
            raise PathUriError(_INVALID_PARAMS, "invalid URI: relative URL without a base")
        scheme, after = split
        try:
            if scheme != "file":
                parse_url(text)  # only whether the url crate accepts it matters
                raise PathUriError(_INVALID_PARAMS, f"unsupported path URI scheme `{scheme}`")
            url = parse_file_url(inp, after)
        except UrlError as exc:
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
        if any(c in text for c in TAB_NEWLINE):
            text = "".join(c for c in text if c not in TAB_NEWLINE)
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
