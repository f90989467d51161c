"""The filesystem capability, identically on every environment (see conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from execserver.environment import Environment
from execserver.errors import InvalidRequest, RpcError
from execserver.protocol.file_system import DirectoryEntry, WalkOptions


async def test_file_system_write_then_read_round_trips(
    environment: Environment, tmp_path: Path
) -> None:
    """write_file() then read_file() returns the same bytes (binary-safe)."""
    data = bytes(range(256)) * 1000
    await environment.fs.write_file(tmp_path / "blob", data)
    assert await environment.fs.read_file(tmp_path / "blob") == data
    assert (tmp_path / "blob").read_bytes() == data


async def test_file_system_missing_file_is_file_not_found(
    environment: Environment, tmp_path: Path
) -> None:
    """Reading a missing path raises FileNotFoundError (NotFound, -32004)."""
    with pytest.raises(FileNotFoundError) as info:
        await environment.fs.read_file(tmp_path / "missing")
    assert isinstance(info.value, RpcError)
    assert info.value.code == -32004


async def test_file_system_metadata_describes_files_and_dirs(
    environment: Environment, tmp_path: Path
) -> None:
    """get_metadata() reports kind and size; follow_symlinks=False refuses a symlink."""
    (tmp_path / "f").write_bytes(b"12345")
    (tmp_path / "link").symlink_to("f")
    meta = await environment.fs.get_metadata(tmp_path / "f")
    assert (meta.is_file, meta.is_directory, meta.is_symlink, meta.size) == (True, False, False, 5)
    directory = await environment.fs.get_metadata(tmp_path)
    assert directory.is_directory and not directory.is_file
    link = await environment.fs.get_metadata(tmp_path / "link")
    assert (link.is_file, link.is_symlink, link.size) == (True, True, 5)
    with pytest.raises(InvalidRequest, match="path contains a symbolic link"):
        await environment.fs.get_metadata(tmp_path / "link", follow_symlinks=False)


async def test_file_system_directories_and_listing(
    environment: Environment, tmp_path: Path
) -> None:
    """create_directory() is recursive by default; read_directory() lists names and kinds."""
    await environment.fs.create_directory(tmp_path / "a" / "b" / "c")
    await environment.fs.write_file(tmp_path / "a" / "file.txt", b"x")
    entries = sorted(await environment.fs.read_directory(tmp_path / "a"), key=lambda e: e.file_name)
    assert entries == [
        DirectoryEntry(file_name="b", is_directory=True, is_file=False),
        DirectoryEntry(file_name="file.txt", is_directory=False, is_file=True),
    ]


async def test_file_system_canonicalize_resolves_links(
    environment: Environment, tmp_path: Path
) -> None:
    """canonicalize() resolves symlinks to an absolute path."""
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to("real")
    resolved = await environment.fs.canonicalize(tmp_path / "alias")
    assert resolved == os.path.realpath(tmp_path / "real")


async def test_file_system_copy_and_remove(environment: Environment, tmp_path: Path) -> None:
    """copy() copies files and (recursive) trees; remove() deletes recursively."""
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "sub" / "f").write_text("content")
    await environment.fs.copy(tmp_path / "src" / "sub" / "f", tmp_path / "copy.txt")
    assert (tmp_path / "copy.txt").read_text() == "content"
    with pytest.raises(RpcError):
        await environment.fs.copy(tmp_path / "src", tmp_path / "dst")
    await environment.fs.copy(tmp_path / "src", tmp_path / "dst", recursive=True)
    assert (tmp_path / "dst" / "sub" / "f").read_text() == "content"
    await environment.fs.remove(tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
    await environment.fs.remove(tmp_path / "never-existed")  # force: no error


async def test_file_system_walk_lists_the_tree(environment: Environment, tmp_path: Path) -> None:
    """walk() returns every entry below the root within its limits."""
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "f.txt").write_text("x")
    (tmp_path / "g.txt").write_text("y")
    result = await environment.fs.walk(tmp_path)
    found = sorted((e.path.native_path().decode(), e.kind) for e in result.entries)
    assert found == [
        (str(tmp_path / "d"), "directory"),
        (str(tmp_path / "d" / "e"), "directory"),
        (str(tmp_path / "d" / "e" / "f.txt"), "file"),
        (str(tmp_path / "g.txt"), "file"),
    ]
    assert not result.truncated
    limited = await environment.fs.walk(
        tmp_path,
        WalkOptions(
            max_depth=0, max_directories=100, max_entries=100, follow_directory_symlinks=False
        ),
    )
    assert sorted(e.path.native_path().decode() for e in limited.entries) == [
        str(tmp_path / "d"),
        str(tmp_path / "g.txt"),
    ]


async def test_file_system_block_io_streams_large_files(
    environment: Environment, tmp_path: Path
) -> None:
    """open() handles read and write a file in blocks at explicit offsets."""
    block = 1024 * 1024
    data = os.urandom(3 * block + 123)
    async with await environment.fs.open(tmp_path / "big", "replace") as out:
        for offset in range(0, len(data), block):
            await out.write_block(offset, data[offset : offset + block])
    assert (tmp_path / "big").read_bytes() == data
    received = b""
    async with await environment.fs.open(tmp_path / "big") as handle:
        eof = False
        while not eof:
            chunk, eof = await handle.read_block(len(received), block)
            received += chunk
    assert received == data


async def test_file_system_relative_paths_are_refused(environment: Environment) -> None:
    """Paths must be absolute (they name files on the executor's host)."""
    with pytest.raises(ValueError, match="absolute"):
        await environment.fs.read_file("relative/path")
