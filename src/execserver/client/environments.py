"""The ``$CODEX_HOME/environments.toml`` registry of codex 0.169.0 (PROTOCOL.md §13.1).

The file names the exec-servers the orchestrator may run a thread in::

    default = "devbox"          # optional; "none" disables a default; omitted: "local" if included
    include_local = true        # optional, default true

    [[environments]]
    id = "devbox"               # 1..64 bytes of [A-Za-z0-9_-]; "local"/"none" reserved; unique
    url = "ws://127.0.0.1:8765" # a WebSocket exec-server ...
    auth_bearer_token = "tok"   # optional, url only; needs wss:// or a loopback destination
    connect_timeout_sec = 10    # optional, url only (float seconds)
    initialize_timeout_sec = 10 # optional
    skills = { required = ["name"] }  # optional

    [[environments]]
    id = "ssh-dev"
    program = "ssh"             # ... or a stdio command
    args = ["dev", "codex exec-server --listen stdio"]
    env = { CODEX_LOG = "debug" }
    cwd = "relative/or/absolute"  # relative to CODEX_HOME

`parse_environments` accepts and rejects what the reference does, with its messages.  It works
in the reference's two phases:

1. *Decoding* (serde over the ``toml`` crate): the whole document is checked, in document order,
   for unknown keys, missing ``id`` and wrong types; the first problem is reported as
   ``failed to parse environment config `<path>`: <serde message>`` followed by
   ``\\nin `<key path>``` (map keys only, joined with "."; array indices never appear) when the
   problem is below the top level, and always by a final newline (the ``toml`` crate's errors end
   with one).  Timeouts become durations here too, so a negative or NaN timeout is a decoding
   error.
2. *Validation*: each environment in order (its id, which keys it combines, its URL or program),
   then duplicates, then ``default``.

`EnvironmentsError` carries the message; ``str(err)`` is the message as the reference builds it,
``err.display`` what codex prints (``exec-server protocol error: <message>``).

Known differences (TOML syntax errors aside, whose wording comes from `tomllib`, not the ``toml``
crate): `tomllib` does not keep the spelling of a datetime's UTC offset (``Z`` and ``+00:00``) or
digits past microseconds, which only shows when a datetime is (oddly) used as an ``env`` table.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, NoReturn, TypeAlias

from execserver.errors import ExecServerError
from execserver.protocol.rust import rust_debug_str
from execserver.protocol.weburl import UrlError, parse_url

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_INITIALIZE_TIMEOUT_S",
    "ENVIRONMENTS_TOML_FILE",
    "ERROR_PREFIX",
    "LOCAL_ENVIRONMENT_ID",
    "MAX_ENVIRONMENT_ID_LEN",
    "EnvironmentSpec",
    "EnvironmentsConfig",
    "EnvironmentsError",
    "StdioEnvironment",
    "UrlEnvironment",
    "default_codex_home",
    "environments_path",
    "load_environments",
    "parse_environments",
]

ENVIRONMENTS_TOML_FILE: Final = "environments.toml"
LOCAL_ENVIRONMENT_ID: Final = "local"
MAX_ENVIRONMENT_ID_LEN: Final = 64  # bytes of UTF-8, as Rust's str::len
DEFAULT_CONNECT_TIMEOUT_S: Final = 10.0
DEFAULT_INITIALIZE_TIMEOUT_S: Final = 10.0
ERROR_PREFIX: Final = "exec-server protocol error: "


class EnvironmentsError(ExecServerError, ValueError):
    """A rejected ``environments.toml`` (or selection); ``str()`` is the reference's message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @property
    def display(self) -> str:
        """The error as codex prints it (``codex exec`` shows ``Error: <display>``)."""
        return ERROR_PREFIX + self.message


# --- the model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UrlEnvironment:
    """An exec-server reached over a WebSocket URL (trimmed, as the reference stores it)."""

    id: str
    url: str
    auth_bearer_token: str | None = field(default=None, repr=False)
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    initialize_timeout_s: float = DEFAULT_INITIALIZE_TIMEOUT_S
    required_skills: tuple[str, ...] = ()

    def http_headers(self) -> dict[str, str]:
        """Headers for the WebSocket upgrade: ``Authorization: Bearer <token>`` when configured."""
        if self.auth_bearer_token is None:
            return {}
        return {"Authorization": f"Bearer {self.auth_bearer_token}"}


@dataclass(frozen=True)
class StdioEnvironment:
    """An exec-server started as a child process speaking JSON-RPC on its stdio.

    ``program`` is trimmed; ``cwd`` is absolute (a relative one was joined to CODEX_HOME) or None.
    """

    id: str
    program: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    cwd: Path | None = None
    initialize_timeout_s: float = DEFAULT_INITIALIZE_TIMEOUT_S
    required_skills: tuple[str, ...] = ()


EnvironmentSpec: TypeAlias = UrlEnvironment | StdioEnvironment


@dataclass(frozen=True)
class EnvironmentsConfig:
    """The registry: configured environments (file order), the default and whether the local
    environment exists.  ``default`` is None when there is no default (``default = "none"``, or
    omitted with ``include_local = false``), else ``"local"`` or a configured id."""

    environments: tuple[EnvironmentSpec, ...] = ()
    default: str | None = LOCAL_ENVIRONMENT_ID
    include_local: bool = True

    @property
    def ids(self) -> tuple[str, ...]:
        """Every selectable id: ``local`` first when included, then the configured ones."""
        local = (LOCAL_ENVIRONMENT_ID,) if self.include_local else ()
        return local + tuple(env.id for env in self.environments)

    def get(self, environment_id: str) -> EnvironmentSpec | None:
        for env in self.environments:
            if env.id == environment_id:
                return env
        return None

    def select(self, name: str | None) -> EnvironmentSpec | Literal["local"] | None:
        """The environment a thread runs in.

        With a name: that environment (ids are case-sensitive; ``local`` only when included),
        else `EnvironmentsError` ``unknown turn environment id `<name>``` (what the app-server
        answers to ``thread/start`` with an unknown ``environmentId``).  Without one: the
        default, or None when defaults are disabled.
        """
        if name is None:
            if self.default is None:
                return None
            name = self.default
        if name == LOCAL_ENVIRONMENT_ID and self.include_local:
            return LOCAL_ENVIRONMENT_ID
        env = self.get(name)
        if env is None:
            raise EnvironmentsError(f"unknown turn environment id `{name}`")
        return env


# --- entry points --------------------------------------------------------------------------


def environments_path(codex_home: Path) -> str:
    """Where the registry lives, spelled as the reference's messages show it."""
    return os.path.join(os.fspath(codex_home), ENVIRONMENTS_TOML_FILE)


def default_codex_home() -> Path:
    """``$CODEX_HOME`` when set and non-empty, else ``~/.codex``."""
    configured = os.environ.get("CODEX_HOME")
    return Path(configured) if configured else Path.home() / ".codex"


def load_environments(codex_home: Path | None = None) -> EnvironmentsConfig:
    """Read ``$CODEX_HOME/environments.toml``; a missing file gives the default registry (only
    ``local``, which is the default). `codex_home` defaults to `default_codex_home()`."""
    if codex_home is None:
        codex_home = default_codex_home()
    path = environments_path(codex_home)
    try:
        os.stat(path)
    except FileNotFoundError:
        return EnvironmentsConfig()
    except OSError as err:
        raise EnvironmentsError(
            f"failed to inspect environment config `{path}`: {_io_error(err)}"
        ) from None
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise EnvironmentsError(
            f"failed to read environment config `{path}`: {_io_error(err)}"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EnvironmentsError(
            f"failed to read environment config `{path}`: stream did not contain valid UTF-8"
        ) from None
    return parse_environments(text, codex_home=codex_home)


def parse_environments(text: str, *, codex_home: Path) -> EnvironmentsConfig:
    """Parse and validate the text of ``environments.toml`` found in `codex_home`."""
    path = environments_path(codex_home)
    try:
        document = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as err:
        raise EnvironmentsError(f"failed to parse environment config `{path}`: {err}\n") from None
    try:
        raw = _decode_struct(document, _TOP, ())
    except _DecodeError as err:
        suffix = f"\nin `{'.'.join(err.path)}`" if err.path else ""
        raise EnvironmentsError(
            f"failed to parse environment config `{path}`: {err.message}{suffix}\n"
        ) from None
    return _validate(raw, codex_home)


def _io_error(err: OSError) -> str:
    """Rust's rendering of an OS error."""
    if err.errno is None:
        return str(err)
    return f"{err.strerror} (os error {err.errno})"


# --- phase 1: decoding, as serde over the toml crate -----------------------------------------


class _DecodeError(Exception):
    def __init__(self, message: str, path: tuple[str, ...]) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


# How the toml crate presents a datetime to serde: a one-entry map.
_DATETIME_KEY: Final = "$__toml_private_datetime"

_Decoder: TypeAlias = Callable[[Any, tuple[str, ...]], Any]


@dataclass(frozen=True)
class _Field:
    name: str
    decode: _Decoder
    required: bool = False  # missing from a table: "missing field"
    seq_default: bool = False  # missing from the array form of the struct: defaulted


@dataclass(frozen=True)
class _Struct:
    name: str
    fields: tuple[_Field, ...]

    def field(self, name: str) -> _Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


def _fail(message: str, path: tuple[str, ...]) -> NoReturn:
    raise _DecodeError(message, path)


def _rust_float(value: float) -> str:
    """Rust's ``Display`` for f64 (shortest round-trip digits, never an exponent)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "-0" if repr(value).startswith("-") else "0"
    return format(Decimal(repr(value)), "f")


def _unexpected(value: Any) -> str:
    """serde's ``Unexpected`` for a value the toml crate hands over."""
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        text = _rust_float(value)
        if math.isfinite(value) and "." not in text:
            text += ".0"  # serde's WithDecimalPoint
        return f"floating point `{text}`"
    if isinstance(value, str):
        return f"string {rust_debug_str(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"  # tables and datetimes


def _invalid_type(value: Any, expected: str, path: tuple[str, ...]) -> NoReturn:
    _fail(f"invalid type: {_unexpected(value)}, expected {expected}", path)


def _toml_datetime_text(value: dt.datetime | dt.date | dt.time) -> str:
    """``toml_datetime::Datetime``'s Display."""

    def time_text(t: dt.time | dt.datetime) -> str:
        text = f"{t.hour:02}:{t.minute:02}:{t.second:02}"
        if t.microsecond:
            text += "." + f"{t.microsecond:06}".rstrip("0")
        return text

    if isinstance(value, dt.datetime):
        text = f"{value.date().isoformat()}T{time_text(value)}"
        offset = value.utcoffset()
        if offset is not None:
            minutes = int(offset.total_seconds()) // 60
            if minutes == 0:
                text += "Z"
            else:
                sign = "+" if minutes > 0 else "-"
                text += f"{sign}{abs(minutes) // 60:02}:{abs(minutes) % 60:02}"
        return text
    if isinstance(value, dt.date):
        return value.isoformat()
    return time_text(value)


def _as_map(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return {_DATETIME_KEY: _toml_datetime_text(value)}
    return None


def _string(value: Any, path: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        _invalid_type(value, "a string", path)
    return value


def _path_string(value: Any, path: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        _invalid_type(value, "path string", path)
    return value


def _boolean(value: Any, path: tuple[str, ...]) -> bool:
    if not isinstance(value, bool):
        _invalid_type(value, "a boolean", path)
    return value


def _string_list(value: Any, path: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(value, list):
        _invalid_type(value, "a sequence", path)
    return tuple(_string(item, path) for item in value)


def _string_map(value: Any, path: tuple[str, ...]) -> dict[str, str]:
    table = _as_map(value)
    if table is None:
        _invalid_type(value, "a map", path)
    return {key: _string(item, (*path, key)) for key, item in table.items()}


_TWO_POW_64: Final = 2.0**64


def _seconds(value: Any, path: tuple[str, ...]) -> float:
    """``Duration::try_from_secs_f64`` over a TOML number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        _invalid_type(value, "f64", path)
    secs = float(value)
    if secs < 0:
        _fail("cannot convert float seconds to Duration: value is negative", path)
    if math.isnan(secs) or secs >= _TWO_POW_64:
        _fail("cannot convert float seconds to Duration: value is either too big or NaN", path)
    return secs


def _struct_decoder(spec: _Struct) -> _Decoder:
    def decode(value: Any, path: tuple[str, ...]) -> dict[str, Any]:
        return _decode_struct(value, spec, path)

    return decode


def _decode_struct(value: Any, spec: _Struct, path: tuple[str, ...]) -> dict[str, Any]:
    """A ``#[serde(deny_unknown_fields)]`` struct: from a table (keys in document order, then
    missing fields) or, as serde allows, from an array of its fields in declaration order."""
    if isinstance(value, list):
        return _decode_struct_seq(value, spec, path)
    table = _as_map(value)
    if table is None:
        _invalid_type(value, f"struct {spec.name}", path)
    out: dict[str, Any] = {}
    for key, item in table.items():
        f = spec.field(key)
        if f is None:
            _fail(f"unknown field `{key}`, expected {_expected_fields(spec)}", path)
        out[key] = f.decode(item, (*path, key))
    for f in spec.fields:
        if f.required and f.name not in out:
            _fail(f"missing field `{f.name}`", path)
    return out


def _decode_struct_seq(items: list[Any], spec: _Struct, path: tuple[str, ...]) -> dict[str, Any]:
    """serde's ``visit_seq``: fields in declaration order, extra items ignored; a missing field
    without a default fails with its index (not the array's length)."""
    out: dict[str, Any] = {}
    count = len(spec.fields)
    for index, f in enumerate(spec.fields):
        if index < len(items):
            out[f.name] = f.decode(items[index], path)
        elif not f.seq_default:
            noun = "element" if count == 1 else "elements"
            _fail(f"invalid length {index}, expected struct {spec.name} with {count} {noun}", path)
    return out


def _expected_fields(spec: _Struct) -> str:
    names = [f"`{f.name}`" for f in spec.fields]
    if not names:
        return "there are no fields"
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} or {names[1]}"
    return "one of " + ", ".join(names)


_SKILLS: Final = _Struct(
    "ScopedSkillsConfig", (_Field("required", _string_list, seq_default=True),)
)

_ENVIRONMENT: Final = _Struct(
    "EnvironmentToml",
    (
        _Field("id", _string, required=True),
        _Field("skills", _struct_decoder(_SKILLS), seq_default=True),
        _Field("url", _string),
        _Field("auth_bearer_token", _string),
        _Field("program", _string),
        _Field("args", _string_list),
        _Field("env", _string_map),
        _Field("cwd", _path_string),
        _Field("connect_timeout_sec", _seconds, seq_default=True),
        _Field("initialize_timeout_sec", _seconds, seq_default=True),
    ),
)


def _environment_list(value: Any, path: tuple[str, ...]) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        _invalid_type(value, "a sequence", path)
    return [_decode_struct(item, _ENVIRONMENT, path) for item in value]


_TOP: Final = _Struct(
    "EnvironmentsToml",
    (
        _Field("default", _string),
        _Field("include_local", _boolean),
        _Field("environments", _environment_list),
    ),
)


# --- phase 2: validation -------------------------------------------------------------------

# Rust's char::is_whitespace (Unicode White_Space), which str::trim strips.  Python's
# str.strip() also strips U+001C..U+001F, which Rust keeps.
_RUST_WHITESPACE: Final = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_ID_CHARS: Final = re.compile(r"[A-Za-z0-9_-]*")


def _rust_trim(text: str) -> str:
    return text.strip(_RUST_WHITESPACE)


def _validate(raw: Mapping[str, Any], codex_home: Path) -> EnvironmentsConfig:
    include_local: bool = raw.get("include_local", True)
    ids: set[str] = {LOCAL_ENVIRONMENT_ID} if include_local else set()
    environments: list[EnvironmentSpec] = []
    for item in raw.get("environments", ()):
        env = _environment(item, codex_home)
        if env.id in ids:
            raise EnvironmentsError(f"environment id `{env.id}` is duplicated")
        ids.add(env.id)
        environments.append(env)
    default = _default(raw.get("default"), include_local, ids)
    return EnvironmentsConfig(tuple(environments), default, include_local)


def _is_none(text: str) -> bool:
    """Rust's ``eq_ignore_ascii_case("none")``."""
    return text.isascii() and text.lower() == "none"


def _default(default: str | None, include_local: bool, ids: set[str]) -> str | None:
    if default is None:
        return LOCAL_ENVIRONMENT_ID if include_local else None
    default = _rust_trim(default)
    if not default:
        raise EnvironmentsError("default environment id cannot be empty")
    if _is_none(default):
        return None
    if default not in ids:
        raise EnvironmentsError(f"default environment `{default}` is not configured")
    return default


def _validate_id(env_id: str) -> None:
    trimmed = _rust_trim(env_id)
    if not trimmed:
        raise EnvironmentsError("environment id cannot be empty")
    if trimmed != env_id:
        raise EnvironmentsError(
            f"environment id `{env_id}` must not contain surrounding whitespace"
        )
    if env_id == LOCAL_ENVIRONMENT_ID or _is_none(env_id):
        raise EnvironmentsError(f"environment id `{env_id}` is reserved")
    if len(env_id.encode("utf-8", "surrogatepass")) > MAX_ENVIRONMENT_ID_LEN:
        raise EnvironmentsError(
            f"environment id `{env_id}` cannot be longer than {MAX_ENVIRONMENT_ID_LEN} characters"
        )
    if not _ID_CHARS.fullmatch(env_id):
        raise EnvironmentsError(
            f"environment id `{env_id}` must contain only ASCII letters, numbers, '-' or '_'"
        )


def _environment(item: Mapping[str, Any], codex_home: Path) -> EnvironmentSpec:
    env_id: str = item["id"]
    url: str | None = item.get("url")
    token: str | None = item.get("auth_bearer_token")
    program: str | None = item.get("program")
    args: Sequence[str] | None = item.get("args")
    env: Mapping[str, str] | None = item.get("env")
    cwd: str | None = item.get("cwd")
    connect: float | None = item.get("connect_timeout_sec")
    initialize: float = item.get("initialize_timeout_sec", DEFAULT_INITIALIZE_TIMEOUT_S)
    skills: Mapping[str, Any] = item.get("skills", {})
    required_skills: tuple[str, ...] = skills.get("required", ())

    _validate_id(env_id)
    if program is None and (args is not None or env is not None or cwd is not None):
        raise EnvironmentsError(f"environment `{env_id}` args, env, and cwd require program")
    if url is None and token is not None:
        raise EnvironmentsError(f"environment `{env_id}` auth_bearer_token requires url")
    if url is None and connect is not None:
        raise EnvironmentsError(f"environment `{env_id}` connect_timeout_sec requires url")

    if url is not None and program is None:
        url = _validate_websocket_url(url)
        if token is not None:
            _check_bearer(url, token)
        return UrlEnvironment(
            id=env_id,
            url=url,
            auth_bearer_token=token,
            connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S if connect is None else connect,
            initialize_timeout_s=initialize,
            required_skills=required_skills,
        )
    if program is not None and url is None:
        program = _rust_trim(program)
        if not program:
            raise EnvironmentsError(f"environment `{env_id}` program cannot be empty")
        return StdioEnvironment(
            id=env_id,
            program=program,
            args=tuple(args or ()),
            env=MappingProxyType(dict(env or {})),
            cwd=None if cwd is None else Path(codex_home) / cwd,
            initialize_timeout_s=initialize,
            required_skills=required_skills,
        )
    raise EnvironmentsError(f"environment `{env_id}` must set exactly one of url or program")


# --- URLs ----------------------------------------------------------------------------------


def _validate_websocket_url(url: str) -> str:
    url = _rust_trim(url)
    if not url:
        raise EnvironmentsError("environment url cannot be empty")
    if not url.startswith(("ws://", "wss://")):
        raise EnvironmentsError(f"environment url `{url}` must use ws:// or wss://")
    problem = _http_uri_problem(url)
    if problem is not None:
        raise EnvironmentsError(f"environment url `{url}` is invalid: HTTP format error: {problem}")
    return url


def _check_bearer(url: str, token: str) -> None:
    """The reference's rules for WebSocket upgrade headers, here only ``Authorization``."""
    try:
        parsed = parse_url(url)
    except UrlError as err:
        raise EnvironmentsError(f"invalid exec-server WebSocket URL: {err}") from None
    if parsed.scheme != "wss" and not _is_loopback_host(parsed.host):
        raise EnvironmentsError(
            "exec-server WebSocket headers require wss:// or a loopback destination"
        )
    # http::HeaderValue::from_str: tab and bytes 0x20..=0xFF except DEL.
    value = f"Bearer {token}".encode("utf-8", "surrogatepass")
    if any((b < 0x20 and b != 0x09) or b == 0x7F for b in value):
        raise EnvironmentsError("invalid value for exec-server WebSocket header `authorization`")


_DOTTED_QUAD: Final = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")


def _is_loopback_host(host: str) -> bool:
    """The `url` crate's host (serialized): ``localhost`` (any case), 127.0.0.0/8 or ``[::1]``
    (not an IPv4-mapped loopback, unlike Python 3.13's ``is_loopback``)."""
    if host.startswith("[") and host.endswith("]"):
        try:
            return int(ipaddress.IPv6Address(host[1:-1])) == 1
        except ValueError:
            return False
    if _DOTTED_QUAD.fullmatch(host):
        return host.split(".", 1)[0] == "127"
    return host.isascii() and host.lower() == "localhost"


# http::Uri: the bytes an authority may hold ("%" is handled apart), and those a path and a
# query may hold (ASCII; bytes of non-ASCII characters are always allowed there).
_AUTHORITY_CHARS: Final = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&'()*+,-./:;=?@[]_~"
)
_PATH_BYTES: Final = frozenset(
    {0x21, *range(0x24, 0x3C), 0x3D, *range(0x40, 0x60), *range(0x61, 0x7B), 0x7C, 0x7E}
    | {0x22, 0x7B, 0x7D}
    | set(range(0x7F, 0x100))
)
_QUERY_BYTES: Final = frozenset({0x21, *range(0x24, 0x3C), 0x3D, *range(0x3F, 0x100)})
_HTTP_URI_MAX_LEN: Final = 65534
_MAX_COLONS: Final = 8


def _http_uri_problem(url: str) -> str | None:
    """Why ``http::Uri`` refuses `url` (which starts with ws:// or wss://), or None.

    This is what tungstenite's ``into_client_request`` checks; its own host checks cannot fail
    once ``http`` accepted the URL.
    """
    data = url.encode("utf-8", "surrogatepass")
    if len(data) > _HTTP_URI_MAX_LEN:
        return "uri too long"
    rest = data[data.index(b"://") + 3 :]
    if not rest:
        return "empty string"
    end, problem = _authority_end(rest)
    if problem is not None:
        return problem
    if end == 0:
        return "invalid format"
    return _path_and_query_problem(rest[end:])


def _authority_end(data: bytes) -> tuple[int, str | None]:
    colons = 0
    start_bracket = end_bracket = has_percent = False
    at_sign: int | None = None
    end = len(data)
    for i, b in enumerate(data):
        if b in b"/?#":
            end = i
            break
        if b == ord(":"):
            if colons >= _MAX_COLONS:
                return 0, "invalid authority"
            colons += 1
        elif b == ord("["):
            if has_percent or start_bracket:
                return 0, "invalid authority"
            start_bracket = True
        elif b == ord("]"):
            if not start_bracket or end_bracket:
                return 0, "invalid authority"
            end_bracket = True
            colons = 0
            has_percent = False
        elif b == ord("@"):
            at_sign = i
            colons = 0
            has_percent = False
        elif b == ord("%"):
            has_percent = True
        elif b not in _AUTHORITY_CHARS:
            return 0, "invalid uri character"
    if start_bracket != end_bracket or colons > 1:
        return 0, "invalid authority"
    if end > 0 and at_sign == end - 1:
        return 0, "invalid authority"
    if has_percent:
        return 0, "invalid authority"
    return end, None


def _path_and_query_problem(data: bytes) -> str | None:
    i = 0
    while i < len(data):
        b = data[i]
        if b == ord("#"):
            return None
        if b == ord("?"):
            break
        if b not in _PATH_BYTES:
            return "invalid uri character"
        i += 1
    for b in data[i + 1 :]:
        if b == ord("#"):
            return None
        if b not in _QUERY_BYTES:
            return "invalid uri character"
    return None
