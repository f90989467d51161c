"""Executor capability discovery on this host: installed plugins and global skills
(`capabilities/discoverV2`) and the raw files of capability roots (`capabilityRoots/discoverV1`).

Blocking, pure filesystem work: the caller runs it on a thread, or inside the filesystem
sandbox helper when the request's sandbox restricts reads (so the kernel decides what the
discovery sees). Layout and rules are the reference's (docs/protocol.md, "Executor discovery"):

* plugins: `$CODEX_HOME/plugins/cache/<marketplace>/<plugin>/<version>/` with
  `.codex-plugin/plugin.json` (the highest version directory of each plugin), optional
  `.mcp.json` and `.app.json`; skills under `skills/` and the manifest's `skills` directory;
* global skills: every `SKILL.md` under `$CODEX_HOME/skills` and `$HOME/.agents/skills`;
* a capability root: its plugin files, if it is a plugin, and every `SKILL.md` under it with
  its `agents/openai.yaml`, as raw text.

Directory symlinks are followed (each directory is entered once); results are sorted by path.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from typing import Any

from execserver.errors import RpcError, os_error_text
from execserver.local.fs_ops import read_capped
from execserver.local.skill_metadata import MetadataError, parse_frontmatter, parse_openai_yaml
from execserver.protocol.discovery import (
    CapabilitiesDiscoverV2Response,
    CapabilityRootDiscovery,
    CapabilityTextFile,
    DiscoveredPluginFiles,
    DiscoveredSkillFiles,
    ExecutorPlugin,
    ExecutorPluginSkill,
    ExecutorSkill,
    SkillDiscoveryRoot,
)
from execserver.protocol.pathuri import PathUri, PathUriError

SKILL_FILE = b"SKILL.md"
SKILL_METADATA = os.path.join(b"agents", b"openai.yaml")
PLUGIN_MANIFEST = os.path.join(b".codex-plugin", b"plugin.json")
PLUGIN_MCP_CONFIG = b".mcp.json"
PLUGIN_APPS_CONFIG = b".app.json"
CODEX_HOME_SKILLS_ID = "codex-home-skills"
USER_AGENT_SKILLS_ID = "user-agent-skills"

METADATA_WARNING = "some capability metadata could not be loaded; discovery may be incomplete"
LOCATIONS_WARNING = "some capability locations could not be resolved; discovery may be incomplete"
TRAVERSAL_LIMIT_WARNING = "plugin cache traversal limit reached"

MAX_CAPABILITY_FILE_BYTES = 4 * 1024 * 1024
"""A skill, skill metadata or plugin file larger than this is not loaded (a warning)."""
MAX_SCAN_DEPTH = 32
"""Directory levels below a scanned root."""
MAX_SCAN_DIRECTORIES = 20_000
"""Directories one scan enters; past it the scan stops (a warning says so)."""

OnError = Callable[[bytes, OSError], None]


class _ScanLimit(Exception):
    pass


def _uri(path: bytes) -> PathUri:
    return PathUri.from_native(path)


def find_skill_files(root: bytes, on_error: OnError) -> list[bytes]:
    """Every `SKILL.md` (a regular file, not a symlink) under `root`, sorted by path; directory
    symlinks are followed, each directory entered once.

    Raises `_ScanLimit` past `MAX_SCAN_DIRECTORIES`.
    """
    found: list[bytes] = []
    seen: set[tuple[int, int]] = set()
    budget = [MAX_SCAN_DIRECTORIES]

    def visit(directory: bytes, depth: int) -> None:
        try:
            info = os.stat(directory)
        except OSError as exc:
            on_error(directory, exc)
            return
        key = (info.st_dev, info.st_ino)
        if key in seen:
            return
        seen.add(key)
        budget[0] -= 1
        if budget[0] < 0:
            raise _ScanLimit
        try:
            with os.scandir(directory) as entries:
                listed = sorted(entries, key=lambda entry: entry.name)
        except OSError as exc:
            on_error(directory, exc)
            return
        for entry in listed:
            try:
                entry.name.decode()
            except UnicodeDecodeError:
                # The reference walks with lossily decoded names, which then do not exist.
                lossy = entry.name.decode(errors="replace").encode()
                on_error(os.path.join(directory, lossy), FileNotFoundError(errno.ENOENT, ""))
                continue
            if entry.name == SKILL_FILE and entry.is_file(follow_symlinks=False):
                found.append(entry.path)
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue  # a symlink that loops or cannot be followed: not a directory
            if is_dir and depth < MAX_SCAN_DEPTH:
                visit(entry.path, depth + 1)

    visit(root, 0)
    return sorted(found)


def read_text(path: bytes) -> str:
    """A skill or plugin file's text. Read like a config layer (`fs_ops.read_capped`): a path
    swapped for a FIFO or a device after the scan saw a file fails at once, an endless file
    past `MAX_CAPABILITY_FILE_BYTES`; both as `OSError`s, like any other unreadable file."""
    try:
        data = read_capped(path, MAX_CAPABILITY_FILE_BYTES)
    except RpcError as exc:
        raise OSError(0, exc.message) from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise OSError(0, "stream did not contain valid UTF-8") from None


def _text_file(path: bytes) -> CapabilityTextFile | None:
    """The file's text, or None when it is not a regular file (through symlinks)."""
    if not os.path.isfile(path):
        return None
    return CapabilityTextFile(path=_uri(path), contents=read_text(path))


def _plugin_files(root: bytes) -> DiscoveredPluginFiles | None:
    manifest = _text_file(os.path.join(root, PLUGIN_MANIFEST))
    if manifest is None:
        return None
    return DiscoveredPluginFiles(
        manifest=manifest,
        mcp_config=_text_file(os.path.join(root, PLUGIN_MCP_CONFIG)),
        apps_config=_text_file(os.path.join(root, PLUGIN_APPS_CONFIG)),
    )


def _subdirectories(path: bytes) -> list[bytes]:
    try:
        with os.scandir(path) as entries:
            return sorted(entry.name for entry in entries if entry.is_dir())
    except OSError:
        return []


def _version_key(version: bytes) -> list[tuple[int, int, bytes]]:
    return [
        (0, int(part), b"") if part.isdigit() else (1, 0, part)
        for part in re.split(rb"[.+-]", version)
    ]


def _skill_from_file(
    path: bytes,
) -> tuple[str, str, str | None, Any, Any]:
    """(name, description, short description, dependencies, policy). Raises `MetadataError`
    or `OSError`."""
    directory = os.path.dirname(path)
    front = parse_frontmatter(read_text(path), os.fsdecode(os.path.basename(directory)))
    dependencies, policy = None, None
    metadata_path = os.path.join(directory, SKILL_METADATA)
    if os.path.isfile(metadata_path):
        try:
            dependencies, policy = parse_openai_yaml(read_text(metadata_path))
        except OSError:
            pass
    return front.name, front.description, front.short_description, dependencies, policy


def _plugin(marketplace: bytes, name: bytes, root: bytes, version: bytes) -> ExecutorPlugin:
    """One installed plugin. Raises `MetadataError` or `OSError` when it cannot be used."""
    files = _plugin_files(root)
    if files is None:
        raise MetadataError("missing plugin manifest")
    try:
        manifest = json.loads(files.manifest.contents)
    except ValueError:
        raise MetadataError("invalid plugin manifest") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("name"), str):
        raise MetadataError("plugin manifest without a name")
    plugin_name: str = manifest["name"]
    interface = manifest.get("interface")
    display_name = plugin_name
    if interface is not None:
        if not isinstance(interface, dict):
            raise MetadataError("invalid plugin interface")
        shown = interface.get("displayName")
        if shown is not None and not isinstance(shown, str):
            raise MetadataError("invalid plugin display name")
        display_name = shown or plugin_name
    skill_dirs = [os.path.join(root, b"skills")]
    custom = manifest.get("skills")
    if isinstance(custom, str) and custom:
        skill_dirs.insert(0, os.path.normpath(os.path.join(root, os.fsencode(custom))))
    paths: set[bytes] = set()
    failed = False

    def on_error(path: bytes, exc: OSError) -> None:
        nonlocal failed
        failed = True

    for directory in skill_dirs:
        if os.path.isdir(directory):
            paths.update(find_skill_files(directory, on_error))
    skills = []
    for path in sorted(paths):
        try:
            skill, description, short, dependencies, policy = _skill_from_file(path)
        except (MetadataError, OSError):
            failed = True
            continue
        skills.append(
            ExecutorPluginSkill(
                name=f"{plugin_name}:{skill}",
                description=description,
                short_description=short,
                path=_uri(path),
                dependencies=dependencies,
                policy=policy,
            )
        )
    plugin = ExecutorPlugin(
        id=f"{os.fsdecode(name)}@{os.fsdecode(marketplace)}",
        display_name=display_name,
        remote_plugin_id=None,
        version=os.fsdecode(version),
        root=_uri(root),
        files=files,
        skills=skills,
    )
    if failed:
        raise _PartialPlugin(plugin)
    return plugin


class _PartialPlugin(Exception):
    """A usable plugin some of whose skills could not be loaded."""

    def __init__(self, plugin: ExecutorPlugin) -> None:
        super().__init__(plugin.id)
        self.plugin = plugin


def _installed_plugins(codex_home: bytes, warnings: list[str]) -> list[ExecutorPlugin]:
    cache = os.path.join(codex_home, b"plugins", b"cache")
    plugins: list[ExecutorPlugin] = []
    for marketplace in _subdirectories(cache):
        for name in _subdirectories(os.path.join(cache, marketplace)):
            versions = _subdirectories(os.path.join(cache, marketplace, name))
            if not versions:
                continue
            version = max(versions, key=_version_key)
            root = os.path.join(cache, marketplace, name, version)
            try:
                plugins.append(_plugin(marketplace, name, root, version))
            except _PartialPlugin as partial:
                plugins.append(partial.plugin)
                warnings.append(METADATA_WARNING)
            except (MetadataError, OSError):
                warnings.append(METADATA_WARNING)
            except _ScanLimit:
                warnings.append(TRAVERSAL_LIMIT_WARNING)
    return sorted(plugins, key=lambda plugin: plugin.id)


def _global_skills(root_id: str, root: bytes, warnings: list[str]) -> Iterator[ExecutorSkill]:
    if not os.path.isdir(root):
        return
    unresolved = False

    def on_error(path: bytes, exc: OSError) -> None:
        nonlocal unresolved
        unresolved = True

    try:
        paths = find_skill_files(root, on_error)
    except _ScanLimit:
        warnings.append(TRAVERSAL_LIMIT_WARNING)
        return
    discovery_root = SkillDiscoveryRoot(id=root_id, path=_uri(root))
    failed = False
    for path in paths:
        try:
            name, description, short, dependencies, policy = _skill_from_file(path)
        except (MetadataError, OSError):
            failed = True
            continue
        yield ExecutorSkill(
            name=name,
            description=description,
            short_description=short,
            path=_uri(path),
            discovery_root=discovery_root,
            dependencies=dependencies,
            policy=policy,
        )
    if unresolved:
        warnings.append(LOCATIONS_WARNING)
    if failed:
        warnings.append(METADATA_WARNING)


def has_discovery_locations(codex_home: bytes, home: bytes | None) -> bool:
    """Whether any directory `discover_capabilities` looks into exists (one stat each)."""
    locations = [
        os.path.join(codex_home, b"plugins", b"cache"),
        os.path.join(codex_home, b"skills"),
    ]
    if home is not None:
        locations.append(os.path.join(home, b".agents", b"skills"))
    return any(os.path.isdir(path) for path in locations)


def discover_capabilities(codex_home: bytes, home: bytes | None) -> CapabilitiesDiscoverV2Response:
    """Installed plugins and global skills of this host (`capabilities/discoverV2`)."""
    warnings: list[str] = []
    plugins = _installed_plugins(codex_home, warnings)
    skills = list(
        _global_skills(CODEX_HOME_SKILLS_ID, os.path.join(codex_home, b"skills"), warnings)
    )
    if home is not None:
        agents = os.path.join(home, b".agents", b"skills")
        skills.extend(_global_skills(USER_AGENT_SKILLS_ID, agents, warnings))
    return CapabilitiesDiscoverV2Response(plugins=plugins, skills=skills, warnings=warnings)


def inspect_root(root_id: str, root: PathUri) -> CapabilityRootDiscovery:
    """The raw capability files of one root (`capabilityRoots/discoverV1`)."""
    result = CapabilityRootDiscovery(
        id=root_id,
        path=root,
        plugin=None,
        skills=[],
        namespace_manifests=[],
        warnings=[],
        error=None,
    )
    try:
        path = root.native_path()
        info = os.stat(path)
    except PathUriError as exc:
        result.error = f"failed to inspect capability root {root}: {exc.message}"
        return result
    except OSError as exc:
        result.error = f"failed to inspect capability root {root}: {_io_text(exc)}"
        return result
    if not stat.S_ISDIR(info.st_mode):
        result.error = f"capability root {root} is not a directory"
        return result

    def on_error(failed: bytes, exc: OSError) -> None:
        result.warnings.append(f"failed to scan capability path {_uri(failed)}: {_io_text(exc)}")

    try:
        result.plugin = _plugin_files(path)
        if result.plugin is not None:
            result.namespace_manifests = [result.plugin.manifest]
        for skill in find_skill_files(path, on_error):
            try:
                instructions = CapabilityTextFile(path=_uri(skill), contents=read_text(skill))
                metadata = _text_file(os.path.join(os.path.dirname(skill), SKILL_METADATA))
            except OSError as exc:
                on_error(skill, exc)
                continue
            result.skills.append(DiscoveredSkillFiles(instructions=instructions, metadata=metadata))
    except _ScanLimit:
        result.warnings.append(TRAVERSAL_LIMIT_WARNING)
    except OSError as exc:
        result.error = f"failed to inspect capability root {root}: {_io_text(exc)}"
    return result


def _io_text(exc: OSError) -> str:
    if exc.errno:
        return os_error_text(exc.errno)
    return exc.strerror or str(exc)
