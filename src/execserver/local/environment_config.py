"""`environmentConfig/read` on this host: the executor's own configuration layers, reduced to
the key paths the orchestrator asks for.

Config layers, lowest precedence first (the reference's order and source names):
`system (/etc/codex/config.toml)`, `user ($CODEX_HOME/config.toml)`, one `project (...)` layer
per `.codex/config.toml` from the project root down to `cwd` (only for trusted directories),
and `legacy managed_config.toml (/etc/codex/managed_config.toml)`. Requirements:
`/etc/codex/requirements.toml`. A layer that holds none of the paths is left out.

Project root: the nearest ancestor of `cwd` (itself included, existing or not) with a `.git`
file or a `.git/HEAD`, else `cwd`. A directory is trusted when the user config's
`[projects."<dir>"]` or `[projects."<project root>"]` says `trust_level = "trusted"`.

Blocking (file reads): the caller runs it on a thread.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from execserver.errors import (
    ConfigLoadFailed,
    ConfigPathsInvalid,
    InvalidParams,
    RpcError,
    os_error_text,
)
from execserver.local.fs_ops import read_capped
from execserver.local.toml_writer import dumps
from execserver.protocol.discovery import (
    EnvironmentConfigLayer,
    EnvironmentConfigLayerStack,
    EnvironmentConfigReadResponse,
)
from execserver.protocol.pathuri import PathUri, PathUriError

SYSTEM_CONFIG_DIR = b"/etc/codex"
CONFIG_FILE = b"config.toml"
REQUIREMENTS_FILE = b"requirements.toml"
MANAGED_CONFIG_FILE = b"managed_config.toml"
PROJECT_CONFIG = os.path.join(b".codex", b"config.toml")
MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""A config or requirements file larger than this fails the read (memory, docs/protocol.md)."""

_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_AT_END = re.compile(r"\(at end of document\)")

Table = Mapping[str, Any]


def check_paths(
    config_paths: Sequence[Sequence[str]], requirements: Sequence[Sequence[str]]
) -> None:
    """The reference's checks of the requested key paths (-32602)."""
    if not config_paths and not requirements:
        raise ConfigPathsInvalid("none")
    if any(not path for path in (*config_paths, *requirements)):
        raise ConfigPathsInvalid("empty")


def select(table: Table, paths: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The parts of `table` the key paths name, in document order.

    A path ending at a value, or reaching a value that is not a table before its end, keeps
    that whole value; a path through a table keeps the table (empty if nothing below it
    matched); a path whose first key is absent keeps nothing.
    """
    selected: dict[str, Any] = {}
    for key, value in table.items():
        tails = [path[1:] for path in paths if path and path[0] == key]
        if not tails:
            continue
        if any(not tail for tail in tails) or not isinstance(value, Mapping):
            selected[key] = value
        else:
            selected[key] = select(value, tails)
    return selected


def _read(path: bytes, *, project: bool) -> Table | None:
    """The parsed file, None when it does not exist. Raises `InternalError` as the reference
    words load failures: anything but a regular file (a directory, a FIFO, a device through a
    symlink) is `path ... is not a file`, at once; past `MAX_CONFIG_BYTES`, a clear error."""
    name = os.fsdecode(path)
    failed = f"Failed to read {'project ' if project else ''}config file {name}"
    try:
        data = read_capped(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        reason = os_error_text(exc.errno) if exc.errno else str(exc)
        raise ConfigLoadFailed(f"{failed}: {reason}") from None
    except RpcError as exc:
        raise ConfigLoadFailed(f"{failed}: {exc.message}") from None
    try:
        text = data.decode()
        return tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigLoadFailed(f"{name}: invalid UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigLoadFailed(_parse_error(name, text, str(exc), project)) from None


def _parse_error(name: str, text: str, message: str, project: bool) -> str:
    """Approximates the reference's TOML error layout around tomllib's own message."""
    match = _POSITION.search(message)
    reason = _POSITION.sub("", _AT_END.sub("", message)).strip()
    lines = text.split("\n")
    line, column = (int(match.group(1)), int(match.group(2))) if match else (len(lines), 1)
    if not project:
        return f"{name}:{line}:{column}: {reason}"
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    gutter = " " * len(str(line))
    return (
        f"Error parsing project config file {name}: TOML parse error at line {line}, column "
        f"{column}\n{gutter} |\n{line} | {source}\n{gutter} | {' ' * (column - 1)}^\n{reason}\n"
    )


def _is_project_root(directory: bytes) -> bool:
    marker = os.path.join(directory, b".git")
    return os.path.isfile(marker) or os.path.lexists(os.path.join(marker, b"HEAD"))


def project_directories(cwd: bytes) -> list[bytes]:
    """The directories from the project root down to `cwd`."""
    chain = [cwd]
    while (parent := os.path.dirname(chain[-1])) != chain[-1]:
        chain.append(parent)
    for index, directory in enumerate(chain):
        if _is_project_root(directory):
            return list(reversed(chain[: index + 1]))
    return [cwd]


def _trusted(projects: Any, directory: bytes, root: bytes) -> bool:
    if not isinstance(projects, Mapping):
        return False
    for key in (os.fsdecode(directory), os.fsdecode(root)):
        entry = projects.get(key)
        if isinstance(entry, Mapping) and "trust_level" in entry:
            return bool(entry.get("trust_level") == "trusted")
    return False


def _layer(
    source: str, base_dir: bytes, table: Table | None, paths: Sequence[Sequence[str]]
) -> EnvironmentConfigLayer | None:
    if table is None or not paths:
        return None
    selected = select(table, paths)
    if not selected:
        return None
    return EnvironmentConfigLayer(
        source=source, base_dir=PathUri.from_native(base_dir), toml=dumps(selected)
    )


def read_environment_config(
    cwd: PathUri,
    config_paths: Sequence[Sequence[str]],
    requirements_paths: Sequence[Sequence[str]],
    *,
    codex_home: bytes,
    home: bytes,
    system_dir: bytes = SYSTEM_CONFIG_DIR,
) -> EnvironmentConfigReadResponse:
    """The layered answer (see the module docstring). Raises `InvalidParams` for bad
    paths or a `cwd` that is not a path of this host, `InternalError` for a config file that
    cannot be loaded."""
    check_paths(config_paths, requirements_paths)
    try:
        cwd_path = cwd.native_path()
    except PathUriError as exc:
        raise InvalidParams(exc.message) from None

    system_path = os.path.join(system_dir, CONFIG_FILE)
    user_path = os.path.join(codex_home, CONFIG_FILE)
    managed_path = os.path.join(system_dir, MANAGED_CONFIG_FILE)
    requirements_path = os.path.join(system_dir, REQUIREMENTS_FILE)

    system = _read(system_path, project=False)
    user = _read(user_path, project=False)
    layers: list[EnvironmentConfigLayer | None] = [
        _layer(f"system ({os.fsdecode(system_path)})", system_dir, system, config_paths)
    ]
    cloud_index = sum(layer is not None for layer in layers)
    layers.append(_layer(f"user ({os.fsdecode(user_path)})", codex_home, user, config_paths))
    directories = project_directories(cwd_path)
    projects = (user or {}).get("projects")
    for directory in directories:
        if not _trusted(projects, directory, directories[0]):
            continue
        path = os.path.join(directory, PROJECT_CONFIG)
        table = _read(path, project=True)
        base = os.path.dirname(path)
        layers.append(_layer(f"project ({os.fsdecode(path)})", base, table, config_paths))
    managed = _read(managed_path, project=False)
    layers.append(
        _layer(
            f"legacy managed_config.toml ({os.fsdecode(managed_path)})",
            system_dir,
            managed,
            config_paths,
        )
    )
    requirements = _layer(
        os.fsdecode(requirements_path),
        system_dir,
        _read(requirements_path, project=False),
        requirements_paths,
    )
    requirement_layers = [requirements] if requirements is not None else []
    return EnvironmentConfigReadResponse(
        user_home_dir=PathUri.from_native(home),
        codex_home_dir=PathUri.from_native(codex_home),
        hostname=socket.gethostname(),
        config=EnvironmentConfigLayerStack(
            layers=[layer for layer in layers if layer is not None],
            cloud_insertion_index=cloud_index,
        ),
        requirements=EnvironmentConfigLayerStack(
            layers=requirement_layers, cloud_insertion_index=len(requirement_layers)
        ),
    )
