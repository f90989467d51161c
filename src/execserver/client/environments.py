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
    id = "behind-nat"           # an execserver extension: reached through a relay (docs/relay.md)
    url = "relay+https://relay.example.com/ENVIRONMENT_ID"
    auth_bearer_token = "harness-token"   # required; https:// or a loopback registry

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
   error.  msgspec structs mirror the reference's serde structs; `compat.serde` words the errors.
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Final, Literal, TypeAlias

import msgspec

from execserver.compat import http_uri, serde
from execserver.compat.rust import rust_trim
from execserver.compat.url import UrlError, parse_url
from execserver.errors import ExecServerError
from execserver.relay.harness import (
    RelayTarget,
    is_relay_url,
    parse_relay_url,
    relay_target_from_env,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_INITIALIZE_TIMEOUT_S",
    "ENVIRONMENTS_TOML_FILE",
    "ERROR_PREFIX",
    "LOCAL_ENVIRONMENT_ID",
    "MAX_ENVIRONMENT_ID_LEN",
    "NOISE_ENVIRONMENT_ID",
    "EnvironmentSpec",
    "EnvironmentsConfig",
    "EnvironmentsError",
    "RelayEnvironment",
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


@dataclass(frozen=True)
class RelayEnvironment:
    """An executor reached through a relay (registry + rendezvous, end-to-end encrypted).

    An execserver extension: codex 0.169/0.171 configure such an environment only through the
    `CODEX_EXEC_SERVER_NOISE_*` variables, and refuse a `relay+` URL in this file.
    """

    id: str
    target: RelayTarget = field(repr=False)
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    initialize_timeout_s: float = DEFAULT_INITIALIZE_TIMEOUT_S
    required_skills: tuple[str, ...] = ()


EnvironmentSpec: TypeAlias = UrlEnvironment | StdioEnvironment | RelayEnvironment

NOISE_ENVIRONMENT_ID: Final = "remote"
"""The id codex gives the one environment the `CODEX_EXEC_SERVER_NOISE_*` variables make."""


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


def load_environments(
    codex_home: Path | None = None, environ: Mapping[str, str] | None = None
) -> EnvironmentsConfig:
    """Read ``$CODEX_HOME/environments.toml``; a missing file gives the default registry (only
    ``local``, which is the default). `codex_home` defaults to `default_codex_home()`.

    As in codex, the `CODEX_EXEC_SERVER_NOISE_*` variables (all three, from `environ`, default
    `os.environ`) take precedence: they make one relay environment, `remote`, the default and
    only one (no `local`).
    """
    try:
        target = relay_target_from_env(os.environ if environ is None else environ)
    except ValueError as err:
        raise EnvironmentsError(str(err)) from None
    if target is not None:
        relay = RelayEnvironment(NOISE_ENVIRONMENT_ID, target)
        return EnvironmentsConfig((relay,), NOISE_ENVIRONMENT_ID, include_local=False)
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
    return _validate(_decode(document, path), codex_home)


def _io_error(err: OSError) -> str:
    """Rust's rendering of an OS error."""
    if err.errno is None:
        return str(err)
    return f"{err.strerror} (os error {err.errno})"


# --- phase 1: decoding, as serde over the toml crate -----------------------------------------

# How the toml crate presents a datetime to serde: a one-entry map.
_DATETIME_KEY: Final = "$__toml_private_datetime"
_TWO_POW_64: Final = 2.0**64


class _Seconds(float):
    """A timeout: an f64 of seconds that ``Duration::try_from_secs_f64`` accepts."""

    @classmethod
    def decode(cls, value: Any) -> _Seconds:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"invalid type: {serde.toml_unexpected(value)}, expected f64")
        secs = float(value)
        if secs < 0:
            raise ValueError("cannot convert float seconds to Duration: value is negative")
        if math.isnan(secs) or secs >= _TWO_POW_64:
            raise ValueError(
                "cannot convert float seconds to Duration: value is either too big or NaN"
            )
        return cls(secs)


def _dec_hook(tp: type, obj: Any) -> Any:
    if tp is _Seconds:
        return _Seconds.decode(obj)
    raise NotImplementedError(f"no decoder for {tp!r}")


_PathString: TypeAlias = Annotated[str, msgspec.Meta(extra={"rust": "path string"})]


# The reference's serde structs, all `deny_unknown_fields`, members in declaration order.
class _SkillsToml(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    rust_name: ClassVar[str] = "ScopedSkillsConfig"
    rust_defaults: ClassVar[frozenset[str]] = frozenset({"required"})

    required: list[str] = msgspec.field(default_factory=list)


class _EnvironmentToml(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    rust_name: ClassVar[str] = "EnvironmentToml"
    rust_defaults: ClassVar[frozenset[str]] = frozenset(
        {"skills", "connect_timeout_sec", "initialize_timeout_sec"}
    )

    id: str
    skills: _SkillsToml | None = None
    url: str | None = None
    auth_bearer_token: str | None = None
    program: str | None = None
    args: list[str] | None = None
    env: dict[str, str] | None = None
    cwd: _PathString | None = None
    connect_timeout_sec: _Seconds | None = None
    initialize_timeout_sec: _Seconds | None = None


class _EnvironmentsToml(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    rust_name: ClassVar[str] = "EnvironmentsToml"

    default: str | None = None
    include_local: bool | None = None
    environments: list[_EnvironmentToml] | None = None


def _decode(document: dict[str, Any], path: str) -> _EnvironmentsToml:
    """serde over the toml crate: the whole document is checked, in document order."""
    try:
        return serde.from_value(
            _datetimes_as_maps(document), _EnvironmentsToml, serde.TOML, dec_hook=_dec_hook
        )
    except serde.SerdeError as err:
        suffix = f"\nin `{'.'.join(err.path)}`" if err.path else ""
        raise EnvironmentsError(
            f"failed to parse environment config `{path}`: {err.message}{suffix}\n"
        ) from None


def _datetimes_as_maps(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _datetimes_as_maps(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_datetimes_as_maps(item) for item in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return {_DATETIME_KEY: _toml_datetime_text(value)}
    return value


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


# --- phase 2: validation -------------------------------------------------------------------

_ID_CHARS: Final = re.compile(r"[A-Za-z0-9_-]*")


def _validate(raw: _EnvironmentsToml, codex_home: Path) -> EnvironmentsConfig:
    include_local = True if raw.include_local is None else raw.include_local
    ids: set[str] = {LOCAL_ENVIRONMENT_ID} if include_local else set()
    environments: list[EnvironmentSpec] = []
    for item in raw.environments or ():
        env = _environment(item, codex_home)
        if env.id in ids:
            raise EnvironmentsError(f"environment id `{env.id}` is duplicated")
        ids.add(env.id)
        environments.append(env)
    default = _default(raw.default, include_local, ids)
    return EnvironmentsConfig(tuple(environments), default, include_local)


def _is_none(text: str) -> bool:
    """Rust's ``eq_ignore_ascii_case("none")``."""
    return text.isascii() and text.lower() == "none"


def _default(default: str | None, include_local: bool, ids: set[str]) -> str | None:
    if default is None:
        return LOCAL_ENVIRONMENT_ID if include_local else None
    default = rust_trim(default)
    if not default:
        raise EnvironmentsError("default environment id cannot be empty")
    if _is_none(default):
        return None
    if default not in ids:
        raise EnvironmentsError(f"default environment `{default}` is not configured")
    return default


def _validate_id(env_id: str) -> None:
    trimmed = rust_trim(env_id)
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


def _environment(item: _EnvironmentToml, codex_home: Path) -> EnvironmentSpec:
    env_id, url, token, program = item.id, item.url, item.auth_bearer_token, item.program
    args, env, cwd, connect = item.args, item.env, item.cwd, item.connect_timeout_sec
    initialize = (
        DEFAULT_INITIALIZE_TIMEOUT_S
        if item.initialize_timeout_sec is None
        else float(item.initialize_timeout_sec)
    )
    required_skills = () if item.skills is None else tuple(item.skills.required)

    _validate_id(env_id)
    if program is None and (args is not None or env is not None or cwd is not None):
        raise EnvironmentsError(f"environment `{env_id}` args, env, and cwd require program")
    if url is None and token is not None:
        raise EnvironmentsError(f"environment `{env_id}` auth_bearer_token requires url")
    if url is None and connect is not None:
        raise EnvironmentsError(f"environment `{env_id}` connect_timeout_sec requires url")

    if url is not None and program is None and is_relay_url(rust_trim(url)):
        return _relay_environment(item, rust_trim(url), initialize, required_skills)
    if url is not None and program is None:
        url = _validate_websocket_url(url)
        if token is not None:
            _check_bearer(url, token)
        return UrlEnvironment(
            id=env_id,
            url=url,
            auth_bearer_token=token,
            connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S if connect is None else float(connect),
            initialize_timeout_s=initialize,
            required_skills=required_skills,
        )
    if program is not None and url is None:
        program = rust_trim(program)
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


def _relay_environment(
    item: _EnvironmentToml, url: str, initialize: float, required_skills: tuple[str, ...]
) -> RelayEnvironment:
    env_id = item.id
    if item.auth_bearer_token is None:
        raise EnvironmentsError(f"environment `{env_id}` relay url requires auth_bearer_token")
    try:
        target = parse_relay_url(url, item.auth_bearer_token)
        registry = parse_url(target.registry_url)
    except (ValueError, UrlError) as err:
        raise EnvironmentsError(f"environment `{env_id}` url is invalid: {err}") from None
    if registry.scheme != "https" and not _is_loopback_host(registry.host):
        raise EnvironmentsError(
            f"environment `{env_id}`: a relay token needs https:// or a loopback registry"
        )
    connect = item.connect_timeout_sec
    return RelayEnvironment(
        id=env_id,
        target=target,
        connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S if connect is None else float(connect),
        initialize_timeout_s=initialize,
        required_skills=required_skills,
    )


# --- URLs ----------------------------------------------------------------------------------


def _validate_websocket_url(url: str) -> str:
    url = rust_trim(url)
    if not url:
        raise EnvironmentsError("environment url cannot be empty")
    if not url.startswith(("ws://", "wss://")):
        raise EnvironmentsError(f"environment url `{url}` must use ws:// or wss://")
    try:
        http_uri.parse(url)  # tungstenite's into_client_request
    except http_uri.InvalidUri as err:
        raise EnvironmentsError(
            f"environment url `{url}` is invalid: HTTP format error: {err}"
        ) from None
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
