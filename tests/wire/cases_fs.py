"""Differential wire cases for the filesystem methods (`fs/*`, PROTOCOL.md §7).

Each case builds its own file tree inside `ctx.workdir` (emptied between the reference run and
ours, same absolute path for both), talks to one server and returns observations. Whatever the
OS or the clock decides is normalised here:

* `fs/readDirectory` returns entries in OS directory order, which is arbitrary: entries are
  sorted by name before comparing (`sorted_entries`). `fs/walk` sorts on its own (breadth first,
  byte order within a directory), so its order is compared as is.
* `fs/getMetadata` times are replaced by classes (`metadata_view`): `modifiedAtMs` must equal the
  file's mtime in whole milliseconds; `createdAtMs` is compared as "zero"/"positive" in follow
  mode (the reference always answered 0 there, for files, directories, links and FIFOs alike)
  and dropped for `followSymlinks: false`, where the reference reports the birth time when the
  filesystem records one (positive on ext4) and 0 otherwise (e.g. `/`), i.e. host-dependent.
* Large payloads are reduced to their length and SHA-256.

Not here on purpose (deliberate-difference candidates): copying a file onto itself, onto a
symlink to itself or onto a hard link of itself (the reference truncates it to 0 bytes), and
everything that shows whether writes are in place or atomic: inode identity and hard links after
fs/writeFile or fs/copy, a replace handle's file before fs/close (the reference truncates at
open), and the partial results of a directory copy that fails half-way.

These cases are not yet collected by tests/wire/test_differential.py, which imports only
tests/wire/cases_core.CASES.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import stat
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.harness.differential import Case, CaseContext
from tests.harness.wire import Json, WireClient

CASES: dict[str, Case] = {}

MIB = 1024 * 1024
# The limits of fs/walk and of the block methods (PROTOCOL.md Appendix B).
MAX_DEPTH, MAX_DIRECTORIES, MAX_ENTRIES = 64, 10_000, 50_000
MAX_HANDLES = 128
DISABLED_SANDBOX: Json = {"permissions": {"type": "disabled"}, "windowsSandboxLevel": "disabled"}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


# -- helpers ----------------------------------------------------------------------------------


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def digest(data: bytes) -> Json:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def pseudo_random(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def encoded_uri(path: Path | bytes) -> str:
    """A percent-encoded `file:` URI for names with spaces, `#`, `%`, `?`, non-ASCII bytes."""
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    return "file://" + quote(raw, safe="/")


def display(name: str | Path) -> str:
    """A JSON-safe spelling of a file name (non-UTF-8 bytes become backslash escapes)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def snapshot(root: Path) -> list[str]:
    """Everything under `root`, sorted: `dir/`, `file = b'content'`, `link -> target`."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = display(path.relative_to(root))
            if path.is_symlink():
                out.append(f"{rel} -> {display(os.readlink(path))}")
            elif path.is_dir():
                out.append(f"{rel}/")
            elif path.is_file():
                out.append(f"{rel} = {path.read_bytes()!r}")
            else:
                out.append(f"{rel} (special)")
    return sorted(out)


def sorted_entries(response: Json) -> Json:
    """fs/readDirectory in OS order is arbitrary: sort the entries by name."""
    if "result" in response:
        entries = sorted(response["result"]["entries"], key=lambda e: e["fileName"])
        return {**response, "result": {**response["result"], "entries": entries}}
    return response


def read_view(response: Json) -> Json:
    """fs/readFile with the payload reduced to length and hash."""
    if "result" in response:
        data = base64.b64decode(response["result"]["dataBase64"])
        return {**response, "result": {"dataBase64": digest(data)}}
    return response


def block_view(response: Json) -> Json:
    """fs/readBlock with the chunk reduced to length and hash."""
    if "result" in response:
        result = dict(response["result"])
        result["chunk"] = digest(base64.b64decode(result["chunk"]))
        return {**response, "result": result}
    return response


def metadata_view(response: Json, path: Path, *, follow: bool = True) -> Json:
    """fs/getMetadata with the times replaced by deterministic classes.

    `modifiedAtMs` must be the mtime of `path` (followed like the request) in whole
    milliseconds (floor). `createdAtMs` was always 0 in follow mode on the reference: kept as
    "zero"/"positive". With `followSymlinks: false` the reference reports the birth time when
    the filesystem records one, which depends on the host, so it is dropped.
    """
    if "result" not in response:
        return response
    result = dict(response["result"])
    st = path.stat() if follow else path.lstat()
    modified = result.get("modifiedAtMs")
    result["modifiedAtMs"] = "mtime" if modified == st.st_mtime_ns // 1_000_000 else "not the mtime"
    created = result.pop("createdAtMs", None)
    if follow:
        result["createdAtMs"] = (
            "zero" if created == 0 else "positive" if isinstance(created, int) else created
        )
    else:
        result["createdAtMs"] = "dropped" if isinstance(created, int) else created
    return {**response, "result": result}


def walk_options(**overrides: Any) -> Json:
    options: Json = {
        "maxDepth": 10,
        "maxDirectories": 100,
        "maxEntries": 1000,
        "followDirectorySymlinks": False,
    }
    options.update(overrides)
    return options


async def walk(client: WireClient, uri: str, **overrides: Any) -> Json:
    return await client.request("fs/walk", {"path": uri, "options": walk_options(**overrides)})


def unreadable(path: str, *, directory: bool) -> bool:
    """True if root cannot read `path` here (e.g. /proc/1/map_files inside a container)."""
    try:
        if directory:
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
    except PermissionError:
        return True
    except OSError:
        return False
    return False


async def resume(ctx: CaseContext, session_id: str) -> tuple[WireClient, Json]:
    """A new connection re-attaching `session_id` (the server notices a detach asynchronously)."""
    client = await ctx.client(initialize=False)
    response: Json = {}
    for _ in range(100):
        response = await client.request(
            "initialize", {"clientName": "resumer", "resumeSessionId": session_id}
        )
        if "result" in response:
            await client.notify("initialized")
            break
        await asyncio.sleep(0.05)
    return client, response


# -- fs/readFile ------------------------------------------------------------------------------


@case
async def fs_readFile_binary_and_empty(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "bin").write_bytes(bytes(range(256)) * 3)
    (ctx.workdir / "empty").write_bytes(b"")
    (ctx.workdir / "text.txt").write_text("héllo\n")
    return [
        await client.request("fs/readFile", {"path": ctx.uri("bin")}),
        await client.request("fs/readFile", {"path": ctx.uri("empty")}),
        await client.request("fs/readFile", {"path": ctx.uri("text.txt")}),
        await client.request("fs/readFile", {"path": ctx.uri("text.txt"), "followSymlinks": None}),
        await client.request("fs/readFile", {"path": ctx.uri("text.txt"), "extra": [1]}),
    ]


@case
async def fs_readFile_symlinks(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "target").write_text("through the link")
    (ctx.workdir / "dir").mkdir()
    (ctx.workdir / "dir" / "inner").write_text("inner")
    os.symlink("target", ctx.workdir / "link")
    os.symlink("link", ctx.workdir / "chain")
    os.symlink("dir", ctx.workdir / "dirlink")
    os.symlink("nope", ctx.workdir / "dangling")
    os.symlink("loop", ctx.workdir / "loop")
    nofollow = {"followSymlinks": False}
    return [
        await client.request("fs/readFile", {"path": ctx.uri("link")}),
        await client.request("fs/readFile", {"path": ctx.uri("chain")}),
        await client.request("fs/readFile", {"path": ctx.uri("dirlink", "inner")}),
        await client.request("fs/readFile", {"path": ctx.uri("dangling")}),
        await client.request("fs/readFile", {"path": ctx.uri("loop")}),
        await client.request("fs/readFile", {"path": ctx.uri("target"), **nofollow}),
        await client.request("fs/readFile", {"path": ctx.uri("link"), **nofollow}),
        await client.request("fs/readFile", {"path": ctx.uri("dangling"), **nofollow}),
        await client.request("fs/readFile", {"path": ctx.uri("dirlink", "inner"), **nofollow}),
        await client.request("fs/readFile", {"path": ctx.uri("missing"), **nofollow}),
    ]


@case
async def fs_readFile_not_a_file(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "dir").mkdir()
    os.mkfifo(ctx.workdir / "fifo")
    os.symlink("dir", ctx.workdir / "dirlink")
    return [
        await client.request("fs/readFile", {"path": ctx.uri("dir")}),
        await client.request("fs/readFile", {"path": ctx.uri("dirlink")}),
        await client.request("fs/readFile", {"path": ctx.uri("fifo")}),
        await client.request("fs/readFile", {"path": ctx.uri("dir"), "followSymlinks": False}),
        await client.request("fs/readFile", {"path": ctx.uri("fifo"), "followSymlinks": False}),
    ]


@case
async def fs_readFile_missing(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "file").write_text("x")
    return [
        await client.request("fs/readFile", {"path": ctx.uri("missing")}),
        await client.request("fs/readFile", {"path": ctx.uri("missing", "deeper")}),
        await client.request("fs/readFile", {"path": ctx.uri("file", "child")}),
    ]


@case
async def fs_readFile_large(ctx: CaseContext) -> Any:
    client = await ctx.client()
    out: list[Any] = []
    for index, size in enumerate([MIB, MIB + 1, 5 * MIB]):
        data = pseudo_random(size, index)
        (ctx.workdir / f"big{index}").write_bytes(data)
        response = await client.request("fs/readFile", {"path": ctx.uri(f"big{index}")}, timeout=60)
        out.append(read_view(response))
    return out


@case
async def fs_readFile_permission_denied(ctx: CaseContext) -> Any:
    # Tests run as root; /proc/1/environ of another container's init is one of the few things
    # root cannot read. Where it is readable, both servers see the same precondition.
    if not unreadable("/proc/1/environ", directory=False):
        return "precondition: /proc/1/environ is readable here"
    client = await ctx.client()
    return await client.request("fs/readFile", {"path": "file:///proc/1/environ"})


# -- fs/writeFile -----------------------------------------------------------------------------


@case
async def fs_writeFile_create_truncate_empty(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "long").write_text("a much longer original content")
    out: list[Any] = [
        await client.request(
            "fs/writeFile", {"path": ctx.uri("new"), "dataBase64": b64(b"\x00\xffnew")}
        ),
        await client.request("fs/writeFile", {"path": ctx.uri("long"), "dataBase64": b64("s")}),
        await client.request("fs/writeFile", {"path": ctx.uri("empty"), "dataBase64": ""}),
        await client.request(
            "fs/writeFile",
            {"path": ctx.uri("nofollow"), "dataBase64": b64("x"), "followSymlinks": False},
        ),
    ]
    out.append(snapshot(ctx.workdir))
    out.append(await client.request("fs/readFile", {"path": ctx.uri("new")}))
    return out


@case
async def fs_writeFile_through_symlink(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "target").write_text("old")
    (ctx.workdir / "dir").mkdir()
    os.symlink("target", ctx.workdir / "link")
    os.symlink("created-by-write", ctx.workdir / "dangling")
    os.symlink("dir", ctx.workdir / "dirlink")
    out: list[Any] = [
        await client.request("fs/writeFile", {"path": ctx.uri("link"), "dataBase64": b64("new")}),
        await client.request("fs/writeFile", {"path": ctx.uri("dangling"), "dataBase64": b64("d")}),
        await client.request(
            "fs/writeFile", {"path": ctx.uri("dirlink", "inside"), "dataBase64": b64("i")}
        ),
        await client.request(
            "fs/writeFile",
            {"path": ctx.uri("link"), "dataBase64": b64("nofollow"), "followSymlinks": False},
        ),
        await client.request(
            "fs/writeFile",
            {"path": ctx.uri("dirlink", "x"), "dataBase64": b64("x"), "followSymlinks": False},
        ),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_writeFile_errors(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "dir").mkdir()
    (ctx.workdir / "file").write_text("keep")
    data = b64("x")
    out: list[Any] = [
        await client.request("fs/writeFile", {"path": ctx.uri("missing", "x"), "dataBase64": data}),
        await client.request("fs/writeFile", {"path": ctx.uri("dir"), "dataBase64": data}),
        await client.request(
            "fs/writeFile", {"path": ctx.uri("dir"), "dataBase64": data, "followSymlinks": False}
        ),
        await client.request("fs/writeFile", {"path": ctx.uri("file", "x"), "dataBase64": data}),
        await client.request("fs/writeFile", {"path": ctx.uri("file"), "dataBase64": None}),
        await client.request("fs/writeFile", {"path": ctx.uri("file"), "dataBase64": 5}),
        await client.request("fs/writeFile", {"path": ctx.uri("file")}),
        await client.request("fs/writeFile", {"dataBase64": data}),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_writeFile_invalid_base64(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "file").write_text("untouched")
    bad = [
        "!",  # invalid symbol
        "aGk",  # missing padding
        "aGk==",  # too much padding
        "a",  # invalid length
        "aGk=aGk=",  # padding in the middle
        "aG k=",  # whitespace
        "aGk=\n",  # trailing newline
        "aGl=",  # non-zero trailing bits
        "-_-_",  # URL-safe alphabet
        "====",
        "aGVsbG8K==",
        "é",  # non-ASCII
    ]
    out: list[Any] = []
    for text in bad:
        out.append(
            await client.request("fs/writeFile", {"path": ctx.uri("file"), "dataBase64": text})
        )
        out.append(
            await client.request("fs/writeFile", {"path": ctx.uri("new"), "dataBase64": text})
        )
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_writeFile_large_roundtrip(ctx: CaseContext) -> Any:
    client = await ctx.client()
    data = pseudo_random(2 * MIB + 3, 7)
    write = await client.request(
        "fs/writeFile", {"path": ctx.uri("big"), "dataBase64": b64(data)}, timeout=60
    )
    on_disk = (ctx.workdir / "big").read_bytes() == data
    read = await client.request("fs/readFile", {"path": ctx.uri("big")}, timeout=60)
    return [write, on_disk, read_view(read)]


# -- fs/createDirectory -----------------------------------------------------------------------


@case
async def fs_createDirectory_recursive_default(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "existing").mkdir()
    (ctx.workdir / "sub").mkdir()
    os.symlink("sub", ctx.workdir / "dirlink")
    out: list[Any] = [
        await client.request("fs/createDirectory", {"path": ctx.uri("a", "b", "c")}),
        await client.request("fs/createDirectory", {"path": ctx.uri("a", "b", "c")}),
        await client.request("fs/createDirectory", {"path": ctx.uri("existing")}),
        await client.request("fs/createDirectory", {"path": ctx.uri("dirlink")}),
        await client.request("fs/createDirectory", {"path": ctx.uri("dirlink", "x", "y")}),
        await client.request("fs/createDirectory", {"path": ctx.uri("n"), "recursive": None}),
        await client.request("fs/createDirectory", {"path": ctx.uri("p", "q"), "recursive": True}),
        await client.request("fs/createDirectory", {"path": "file:///"}),
        await client.request("fs/createDirectory", {"path": ctx.uri("bad"), "recursive": "no"}),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_createDirectory_existing_non_directory(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "file").write_text("x")
    os.symlink("file", ctx.workdir / "filelink")
    os.symlink("nope", ctx.workdir / "dangling")
    out: list[Any] = []
    for recursive in (True, False):
        for name in (("file",), ("file", "child"), ("filelink",), ("dangling",)):
            out.append(
                await client.request(
                    "fs/createDirectory", {"path": ctx.uri(*name), "recursive": recursive}
                )
            )
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_createDirectory_non_recursive(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "existing").mkdir()
    (ctx.workdir / "sub").mkdir()
    os.symlink("sub", ctx.workdir / "dirlink")
    out: list[Any] = [
        await client.request(
            "fs/createDirectory", {"path": ctx.uri("missing", "x"), "recursive": False}
        ),
        await client.request(
            "fs/createDirectory", {"path": ctx.uri("existing"), "recursive": False}
        ),
        await client.request("fs/createDirectory", {"path": ctx.uri("one"), "recursive": False}),
        await client.request(
            "fs/createDirectory", {"path": ctx.uri("dirlink", "in"), "recursive": False}
        ),
        await client.request("fs/createDirectory", {"path": "file:///", "recursive": False}),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_createDirectory_no_follow(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "sub").mkdir()
    os.symlink("sub", ctx.workdir / "dirlink")
    out: list[Any] = []
    for recursive in (True, False):
        for name in (("dirlink",), ("dirlink", "x"), ("sub", f"plain{recursive}")):
            out.append(
                await client.request(
                    "fs/createDirectory",
                    {"path": ctx.uri(*name), "recursive": recursive, "followSymlinks": False},
                )
            )
    out.append(snapshot(ctx.workdir))
    return out


# -- fs/getMetadata ---------------------------------------------------------------------------


@case
async def fs_getMetadata_file_and_directory(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "file").write_bytes(b"123456")
    (ctx.workdir / "empty").write_bytes(b"")
    (ctx.workdir / "dir").mkdir()
    os.mkfifo(ctx.workdir / "fifo")
    out: list[Any] = []
    for name in ("file", "empty", "fifo"):
        response = await client.request("fs/getMetadata", {"path": ctx.uri(name)})
        out.append(metadata_view(response, ctx.workdir / name))
    # A directory's size is filesystem-specific: compare it with what stat says.
    response = await client.request("fs/getMetadata", {"path": ctx.uri("dir")})
    view = metadata_view(response, ctx.workdir / "dir")
    if "result" in view:
        size = view["result"].get("size")
        view["result"]["size"] = size == (ctx.workdir / "dir").stat().st_size
    out.append(view)
    return out


@case
async def fs_getMetadata_symlinks(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "file").write_bytes(b"1234567")
    (ctx.workdir / "dir").mkdir()
    (ctx.workdir / "dir" / "inner").write_text("abc")
    os.symlink("file", ctx.workdir / "filelink")
    os.symlink("filelink", ctx.workdir / "chain")
    os.symlink("dir", ctx.workdir / "dirlink")
    os.symlink("nope", ctx.workdir / "dangling")
    os.symlink("loop", ctx.workdir / "loop")
    out: list[Any] = []
    for name in (("filelink",), ("chain",), ("dirlink", "inner")):
        response = await client.request("fs/getMetadata", {"path": ctx.uri(*name)})
        out.append(metadata_view(response, ctx.workdir.joinpath(*name)))
    response = await client.request("fs/getMetadata", {"path": ctx.uri("dirlink")})
    view = metadata_view(response, ctx.workdir / "dirlink")
    if "result" in view:
        size = view["result"].get("size")
        view["result"]["size"] = size == (ctx.workdir / "dir").stat().st_size
    out.append(view)
    out.append(await client.request("fs/getMetadata", {"path": ctx.uri("dangling")}))
    out.append(await client.request("fs/getMetadata", {"path": ctx.uri("loop")}))
    return out


@case
async def fs_getMetadata_no_follow(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "file").write_bytes(b"12345")
    (ctx.workdir / "dir").mkdir()
    (ctx.workdir / "dir" / "inner").write_text("abc")
    os.symlink("file", ctx.workdir / "filelink")
    os.symlink("dir", ctx.workdir / "dirlink")
    os.symlink("nope", ctx.workdir / "dangling")
    out: list[Any] = []
    for name in (("file",), ("dir", "inner")):
        response = await client.request(
            "fs/getMetadata", {"path": ctx.uri(*name), "followSymlinks": False}
        )
        out.append(metadata_view(response, ctx.workdir.joinpath(*name), follow=False))
    for name in (
        ("filelink",),
        ("dirlink",),
        ("dangling",),
        ("dirlink", "inner"),  # an intermediate component is a symlink
        ("missing",),
        ("file", "child"),
    ):
        out.append(
            await client.request(
                "fs/getMetadata", {"path": ctx.uri(*name), "followSymlinks": False}
            )
        )
    return out


@case
async def fs_getMetadata_missing(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "file").write_text("x")
    return [
        await client.request("fs/getMetadata", {"path": ctx.uri("missing")}),
        await client.request("fs/getMetadata", {"path": ctx.uri("missing", "deeper")}),
        await client.request("fs/getMetadata", {"path": ctx.uri("file", "child")}),
        await client.request("fs/getMetadata", {"path": ctx.uri("file"), "followSymlinks": 1}),
    ]


# -- fs/canonicalize --------------------------------------------------------------------------


@case
async def fs_canonicalize_dots_and_slashes(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "sub" / "inner").mkdir(parents=True)
    (ctx.workdir / "file").write_text("top")
    (ctx.workdir / "sub" / "file").write_text("physical")
    os.symlink("sub/inner", ctx.workdir / "deeplink")
    base = ctx.uri()
    paths = [
        base + "/sub/../file",
        base + "/sub/./inner/",
        base + "/sub/",
        base + "/file/",
        base + "/file/..",
        base + "/./sub//inner",
        # `..` after a symlink is resolved lexically (URI dot segments), not physically.
        base + "/deeplink/../file",
        "file:///",
        "file:///..",
    ]
    out: list[Any] = [await client.request("fs/canonicalize", {"path": p}) for p in paths]
    out.append(await client.request("fs/readFile", {"path": base + "/deeplink/../file"}))
    return out


@case
async def fs_canonicalize_symlinks(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "sub").mkdir()
    (ctx.workdir / "file").write_text("x")
    os.symlink("../file", ctx.workdir / "sub" / "up")
    os.symlink("..", ctx.workdir / "sub" / "parent")
    os.symlink("sub", ctx.workdir / "dirlink")
    os.symlink(str(ctx.workdir / "file"), ctx.workdir / "absolute")
    names = [
        ("dirlink",),
        ("dirlink", "up"),
        ("dirlink", "parent", "dirlink"),
        ("absolute",),
    ]
    out: list[Any] = [await client.request("fs/canonicalize", {"path": ctx.uri(*n)}) for n in names]
    out.append(
        await client.request(
            "fs/canonicalize", {"path": ctx.uri("dirlink"), "followSymlinks": False}
        )
    )
    return out


@case
async def fs_canonicalize_missing(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "file").write_text("x")
    os.symlink("nope", ctx.workdir / "dangling")
    os.symlink("loop", ctx.workdir / "loop")
    names = [("missing",), ("missing", "deeper"), ("dangling",), ("file", "child"), ("loop",)]
    return [await client.request("fs/canonicalize", {"path": ctx.uri(*n)}) for n in names]


@case
async def fs_canonicalize_odd_names(ctx: CaseContext) -> Any:
    client = await ctx.client()
    names = ["sp ace", "h#ash", "pc%t", "q?m", "ü.txt", "日本", "a[b]@+;=&!$,~()^|", "{x}<y>`"]
    out: list[Any] = []
    for name in names:
        (ctx.workdir / name).write_text(name)
        out.append(
            await client.request("fs/canonicalize", {"path": encoded_uri(ctx.workdir / name)})
        )
    # Raw (unencoded) spellings the URI parser accepts or rejects.
    out.append(await client.request("fs/canonicalize", {"path": ctx.uri("sp ace")}))
    out.append(await client.request("fs/canonicalize", {"path": ctx.uri("pc%t")}))
    out.append(await client.request("fs/canonicalize", {"path": ctx.uri("ü.txt")}))
    out.append(await client.request("fs/canonicalize", {"path": ctx.uri("h#ash")}))
    out.append(await client.request("fs/canonicalize", {"path": ctx.uri("q?m")}))
    return out


# -- fs/readDirectory -------------------------------------------------------------------------


@case
async def fs_readDirectory_entries(ctx: CaseContext) -> Any:
    client = await ctx.client()
    root = ctx.workdir / "d"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden-dir").mkdir()
    (root / "file").write_text("x")
    (root / ".hidden").write_text("x")
    os.mkfifo(root / "fifo")
    os.symlink("file", root / "filelink")
    os.symlink("sub", root / "dirlink")
    os.symlink("../d", root / "parentlink")
    os.symlink("nope", root / "dangling")
    os.symlink("loop", root / "loop")
    os.symlink("dangling", root / "chain-to-dangling")
    return [
        sorted_entries(await client.request("fs/readDirectory", {"path": ctx.uri("d")})),
        sorted_entries(await client.request("fs/readDirectory", {"path": ctx.uri("d", "sub")})),
    ]


@case
async def fs_readDirectory_through_symlink(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "real").mkdir()
    (ctx.workdir / "real" / "a").write_text("a")
    (ctx.workdir / "real" / "b").mkdir()
    os.symlink("real", ctx.workdir / "link")
    return [
        sorted_entries(await client.request("fs/readDirectory", {"path": ctx.uri("link")})),
        sorted_entries(
            await client.request(
                "fs/readDirectory", {"path": ctx.uri("link"), "followSymlinks": False}
            )
        ),
        sorted_entries(await client.request("fs/readDirectory", {"path": ctx.uri("link") + "/"})),
    ]


@case
async def fs_readDirectory_errors(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "file").write_text("x")
    os.symlink("file", ctx.workdir / "filelink")
    os.symlink("nope", ctx.workdir / "dangling")
    os.mkfifo(ctx.workdir / "fifo")
    names = [("file",), ("filelink",), ("missing",), ("dangling",), ("fifo",), ("file", "x")]
    return [await client.request("fs/readDirectory", {"path": ctx.uri(*n)}) for n in names]


@case
async def fs_readDirectory_odd_names(ctx: CaseContext) -> Any:
    client = await ctx.client()
    root = ctx.workdir / "odd"
    root.mkdir()
    for name in ["sp ace", "h#ash", "pc%t", "q?m", "ü.txt", "日本", 'quo"te', "back\\slash"]:
        (root / name).write_text(name)
    (root / "dir ü#").mkdir()
    # Non-UTF-8 names are decoded lossily (U+FFFD); their type flags still come from the entry.
    os.mkdir(os.fsencode(root) + b"/bad\xff")
    with open(os.fsencode(root) + b"/f\xfe.bin", "wb") as f:
        f.write(b"x")
    empty = ctx.workdir / "empty"
    empty.mkdir()
    return [
        sorted_entries(await client.request("fs/readDirectory", {"path": ctx.uri("odd")})),
        await client.request("fs/readDirectory", {"path": encoded_uri(root / "dir ü#")}),
        await client.request("fs/readDirectory", {"path": ctx.uri("empty")}),
    ]


@case
async def fs_readDirectory_permission_denied(ctx: CaseContext) -> Any:
    # Root cannot list /proc/1/map_files without CAP_SYS_ADMIN in the initial namespace
    # (the usual container setup); elsewhere both servers see the same precondition.
    if not unreadable("/proc/1/map_files", directory=True):
        return "precondition: /proc/1/map_files is readable here"
    client = await ctx.client()
    os.symlink("/proc/1/map_files", ctx.workdir / "maps")
    return [
        await client.request("fs/readDirectory", {"path": "file:///proc/1/map_files"}),
        await client.request("fs/readDirectory", {"path": ctx.uri("maps")}),
    ]


# -- fs/walk ----------------------------------------------------------------------------------


def build_walk_tree(root: Path) -> None:
    """t/{.hd/x/f6, .hf, a/{b/{c/{d/f5, f4}, f3}, f2, up->..}, dang, f1, lnd->a, lnf->f1, z/f7}"""
    for directory in ["a/b/c/d", ".hd/x", "z"]:
        (root / directory).mkdir(parents=True)
    for name in ["f1", "a/f2", "a/b/f3", "a/b/c/f4", "a/b/c/d/f5", ".hd/x/f6", ".hf", "z/f7"]:
        (root / name).write_text(name)
    os.symlink("f1", root / "lnf")
    os.symlink("a", root / "lnd")
    os.symlink("nope", root / "dang")
    os.symlink("..", root / "a" / "up")


@case
async def fs_walk_full_tree(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_walk_tree(ctx.workdir / "t")
    return [
        await walk(client, ctx.uri("t")),
        await walk(client, ctx.uri("t"), pruneHiddenDirectories=False),
        await walk(client, ctx.uri("t") + "/"),
    ]


@case
async def fs_walk_max_depth(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_walk_tree(ctx.workdir / "t")
    return [await walk(client, ctx.uri("t"), maxDepth=depth) for depth in (0, 1, 2, 3, 64)]


@case
async def fs_walk_max_directories(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_walk_tree(ctx.workdir / "t")
    out: list[Any] = [await walk(client, ctx.uri("t"), maxDirectories=n) for n in (1, 2, 3, 7, 8)]
    out.append(await walk(client, ctx.uri("t"), maxDepth=2, maxDirectories=3))
    return out


@case
async def fs_walk_max_entries_counts_skipped_symlinks(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_walk_tree(ctx.workdir / "t")
    out: list[Any] = [
        await walk(client, ctx.uri("t"), maxEntries=n) for n in (1, 3, 4, 5, 6, 7, 8, 9, 10)
    ]
    out += [
        await walk(client, ctx.uri("t"), maxEntries=n, followDirectorySymlinks=True) for n in (5, 6)
    ]
    return out


@case
async def fs_walk_max_entries_dangling_links(ctx: CaseContext) -> Any:
    client = await ctx.client()
    root = ctx.workdir / "t"
    root.mkdir()
    (root / "a").write_text("a")
    os.symlink("nope", root / "b")  # dangling
    os.symlink("a", root / "c")  # symlink to a file
    (root / "d").mkdir()
    (root / "e").write_text("e")
    os.symlink("f", root / "f")  # loop
    (root / "g").write_text("g")
    return [await walk(client, ctx.uri("t"), maxEntries=n) for n in range(1, 8)]


@case
async def fs_walk_follow_directory_symlinks(ctx: CaseContext) -> Any:
    client = await ctx.client()
    root = ctx.workdir / "t"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x").write_text("x")
    (ctx.workdir / "outside" / "deep").mkdir(parents=True)
    (ctx.workdir / "outside" / "o1").write_text("o")
    (ctx.workdir / "outside" / "deep" / "o2").write_text("o")
    os.symlink("../outside", root / "lout")  # a directory outside the walked tree
    os.symlink("..", root / "sub" / "cycle")  # back to the root
    os.symlink(".", root / "self")
    os.symlink("sub", root / "lsub")  # sorts before `sub`: which one is descended?
    os.symlink("../../outside", root / "sub" / "lout2")  # already visited through `lout`
    os.symlink("sub/x", root / "filelink")
    os.symlink("nope", root / "dangling")
    os.symlink("loop", root / "loop")
    return [
        await walk(client, ctx.uri("t"), followDirectorySymlinks=True),
        await walk(client, ctx.uri("t"), followDirectorySymlinks=False),
        await walk(client, ctx.uri("t"), followDirectorySymlinks=True, maxDepth=0),
        await walk(client, ctx.uri("t"), followDirectorySymlinks=True, maxEntries=3),
    ]


@case
async def fs_walk_prune_hidden_directories(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_walk_tree(ctx.workdir / "t")
    (ctx.workdir / "t" / "a" / ".inner").mkdir()
    (ctx.workdir / "t" / "a" / ".inner" / "deep").write_text("x")
    (ctx.workdir / "t" / "a" / ".file").write_text("x")
    os.symlink(".hd", ctx.workdir / "t" / "visible-link-to-hidden")
    os.symlink("a/.inner", ctx.workdir / "t" / ".hidden-link")
    return [
        await walk(client, ctx.uri("t"), pruneHiddenDirectories=True),
        await walk(client, ctx.uri("t"), pruneHiddenDirectories=True, followDirectorySymlinks=True),
        await walk(client, ctx.uri("t", ".hd"), pruneHiddenDirectories=True),
    ]


@case
async def fs_walk_root_kinds(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "dir" / "sub").mkdir(parents=True)
    (ctx.workdir / "dir" / "sub" / "f").write_text("f")
    (ctx.workdir / "file").write_text("x")
    (ctx.workdir / "empty").mkdir()
    os.symlink("dir", ctx.workdir / "dirlink")
    os.symlink("file", ctx.workdir / "filelink")
    os.symlink("nope", ctx.workdir / "dangling")
    os.symlink("loop", ctx.workdir / "loop")
    out: list[Any] = []
    for follow in (False, True):
        for name in ("file", "empty", "dirlink", "filelink", "dangling", "loop", "missing"):
            out.append(await walk(client, ctx.uri(name), followDirectorySymlinks=follow))
        out.append(await walk(client, ctx.uri("dirlink") + "/", followDirectorySymlinks=follow))
        out.append(await walk(client, ctx.uri("file", "x"), followDirectorySymlinks=follow))
    return out


@case
async def fs_walk_limit_errors(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "t").mkdir()
    uri = ctx.uri("t")
    out: list[Any] = [
        await walk(client, uri, maxDirectories=0),
        await walk(client, uri, maxEntries=0),
        await walk(client, uri, maxDepth=0, maxDirectories=0, maxEntries=0),
        await walk(client, uri, maxDepth=MAX_DEPTH + 1),
        await walk(client, uri, maxDirectories=MAX_DIRECTORIES + 1),
        await walk(client, uri, maxEntries=MAX_ENTRIES + 1),
        await walk(client, uri, maxDepth=MAX_DEPTH + 1, maxEntries=0),  # zero wins
        await walk(
            client,
            uri,
            maxDepth=MAX_DEPTH,
            maxDirectories=MAX_DIRECTORIES,
            maxEntries=MAX_ENTRIES,
        ),
        await walk(client, ctx.uri("missing"), maxEntries=0),  # limits checked before the path
        await walk(client, uri, maxDepth=-1),
        await walk(client, uri, maxEntries=1.5),
        await walk(client, uri, maxDirectories=2**64),
        await walk(client, uri, maxDepth="1"),
    ]
    return out


@case
async def fs_walk_options_shape(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "t").mkdir()
    uri = ctx.uri("t")
    variants: list[Any] = [
        {"path": uri},
        {"path": uri, "options": None},
        {"path": uri, "options": {}},
        {"path": uri, "options": {"maxDepth": 1}},
        {"path": uri, "options": {"maxDepth": 1, "maxDirectories": 1, "maxEntries": 1}},
        {"path": uri, "options": walk_options(followDirectorySymlinks=None)},
        {"path": uri, "options": walk_options(pruneHiddenDirectories=None)},
        {"path": uri, "options": walk_options(unknown=True)},
        {"options": walk_options()},
    ]
    return [await client.request("fs/walk", v) for v in variants]


@case
async def fs_walk_unreadable_directory(ctx: CaseContext) -> Any:
    # Root cannot list /proc/1/map_files without CAP_SYS_ADMIN in the initial namespace; the
    # walk reports it in `errors` and goes on. Elsewhere both servers see the precondition.
    if not unreadable("/proc/1/map_files", directory=True):
        return "precondition: /proc/1/map_files is readable here"
    client = await ctx.client()
    root = ctx.workdir / "t"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f").write_text("x")
    (root / "z").write_text("x")
    os.symlink("/proc/1/map_files", root / "maps")
    return [
        await walk(client, ctx.uri("t"), followDirectorySymlinks=True),
        await walk(client, ctx.uri("t"), followDirectorySymlinks=False),
        await walk(client, "file:///proc/1/map_files"),
    ]


@case
async def fs_walk_odd_names(ctx: CaseContext) -> Any:
    client = await ctx.client()
    root = ctx.workdir / "t"
    root.mkdir()
    names = [
        "sp ace",
        "h#ash",
        "pc%t",
        "q?m",
        "ü.txt",
        "日本",
        "a[b]@+;=&!$,~()^|",
        "back\\slash",
        'quo"te',
        "tick`",
        "{br}",
        "<lt>",
    ]
    for name in names:
        (root / name).write_text(name)
    (root / "dir ü#").mkdir()
    (root / "dir ü#" / "in %").write_text("x")
    return [
        await walk(client, ctx.uri("t")),
        await walk(client, encoded_uri(root / "dir ü#")),
    ]


@case
async def fs_walk_non_utf8_names(ctx: CaseContext) -> Any:
    client = await ctx.client()
    root = ctx.workdir / "t"
    (root / "ok").mkdir(parents=True)
    (root / "ok" / "f").write_text("x")
    raw = os.fsencode(root)
    os.mkdir(raw + b"/bad\xff")
    with open(raw + b"/bad\xff/inner", "wb") as f:
        f.write(b"x")
    with open(raw + b"/f\xfe.bin", "wb") as f:
        f.write(b"x")
    return [
        await walk(client, ctx.uri("t")),
        await walk(client, encoded_uri(raw + b"/bad\xff")),
    ]


# -- fs/remove --------------------------------------------------------------------------------


def build_remove_tree(root: Path) -> None:
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "sub" / "g").write_text("g")
    (root / "empty").mkdir()
    (root / "file").write_text("x")
    os.symlink("dir", root / "dirlink")
    os.symlink("file", root / "filelink")
    os.symlink("nope", root / "dangling")


@case
async def fs_remove_file_and_directories(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_remove_tree(ctx.workdir)
    out: list[Any] = [
        await client.request("fs/remove", {"path": ctx.uri("file")}),
        await client.request("fs/remove", {"path": ctx.uri("dir")}),
        await client.request("fs/remove", {"path": ctx.uri("empty") + "/", "recursive": False}),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_remove_non_empty_not_recursive(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_remove_tree(ctx.workdir)
    out: list[Any] = [
        await client.request("fs/remove", {"path": ctx.uri("dir"), "recursive": False}),
        await client.request(
            "fs/remove", {"path": ctx.uri("dir"), "recursive": False, "force": False}
        ),
        await client.request(
            "fs/remove", {"path": ctx.uri("file"), "recursive": False, "force": False}
        ),
        await client.request(
            "fs/remove", {"path": ctx.uri("empty"), "recursive": False, "force": False}
        ),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_remove_missing_and_force(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "file").write_text("x")
    out: list[Any] = []
    for extra in ({}, {"force": True}, {"force": False}, {"force": None, "recursive": None}):
        for name in (("missing",), ("missing", "deeper"), ("file", "child")):
            out.append(await client.request("fs/remove", {"path": ctx.uri(*name), **extra}))
    out.append(await client.request("fs/remove", {"path": ctx.uri("file"), "recursive": "x"}))
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_remove_symlinks_not_targets(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_remove_tree(ctx.workdir)
    os.symlink("dir", ctx.workdir / "dirlink2")
    os.symlink("file", ctx.workdir / "filelink2")
    out: list[Any] = [
        await client.request("fs/remove", {"path": ctx.uri("dirlink")}),
        await client.request("fs/remove", {"path": ctx.uri("filelink"), "recursive": False}),
        await client.request("fs/remove", {"path": ctx.uri("dangling"), "force": False}),
        # A trailing slash does not make the link resolve: the link itself goes.
        await client.request("fs/remove", {"path": ctx.uri("dirlink2") + "/"}),
        await client.request("fs/remove", {"path": ctx.uri("filelink2") + "/"}),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_remove_inside_symlinked_directory(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_remove_tree(ctx.workdir)
    out: list[Any] = [await client.request("fs/remove", {"path": ctx.uri("dirlink", "sub")})]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_remove_no_follow(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_remove_tree(ctx.workdir)
    nofollow: Json = {"followSymlinks": False}
    out: list[Any] = [
        # The default recursive:true cannot be combined with no-follow, whatever the path.
        await client.request("fs/remove", {"path": ctx.uri("dirlink"), **nofollow}),
        await client.request("fs/remove", {"path": ctx.uri("file"), **nofollow}),
        await client.request("fs/remove", {"path": ctx.uri("missing"), **nofollow}),
        await client.request("fs/remove", {"path": ctx.uri("dir"), "recursive": True, **nofollow}),
    ]
    shallow: Json = {"recursive": False, **nofollow}
    for name in (
        ("dirlink",),
        ("filelink",),
        ("dangling",),
        ("dirlink", "sub", "g"),
        ("dir",),
        ("missing",),
    ):
        out.append(await client.request("fs/remove", {"path": ctx.uri(*name), **shallow}))
    out.append(
        await client.request("fs/remove", {"path": ctx.uri("missing"), "force": False, **shallow})
    )
    out.append(await client.request("fs/remove", {"path": ctx.uri("file"), **shallow}))
    out.append(await client.request("fs/remove", {"path": ctx.uri("empty"), **shallow}))
    out.append(snapshot(ctx.workdir))
    return out


# -- fs/copy ----------------------------------------------------------------------------------


def copy_params(ctx: CaseContext, source: str, destination: str, recursive: bool) -> Json:
    return {
        "sourcePath": ctx.uri(*source.split("/")),
        "destinationPath": ctx.uri(*destination.split("/")),
        "recursive": recursive,
    }


def build_copy_tree(root: Path) -> None:
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "sub" / "s").write_text("s")
    (root / "src" / "a").write_text("a")
    os.symlink("a", root / "src" / "la")
    os.symlink("nope", root / "src" / "dang")
    (root / "f").write_text("source")
    (root / "g").write_text("old-old-old")


@case
async def fs_copy_file(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_copy_tree(ctx.workdir)
    (ctx.workdir / "f").chmod(0o640)
    os.symlink("created-through-link", ctx.workdir / "dangling")
    out: list[Any] = [
        await client.request("fs/copy", copy_params(ctx, "f", "new", False)),
        await client.request("fs/copy", copy_params(ctx, "f", "g", False)),  # overwrite, shorter
        await client.request("fs/copy", copy_params(ctx, "f", "rec", True)),  # file + recursive
        await client.request("fs/copy", copy_params(ctx, "f", "dangling", False)),
    ]
    out.append(snapshot(ctx.workdir))
    out.append(
        {
            name: oct(stat.S_IMODE((ctx.workdir / name).stat().st_mode))
            for name in ("new", "g", "rec", "created-through-link")
        }
    )
    return out


@case
async def fs_copy_directory_requires_recursive(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_copy_tree(ctx.workdir)
    os.symlink("src", ctx.workdir / "srclink")
    out: list[Any] = [
        await client.request("fs/copy", copy_params(ctx, "src", "x", False)),
        # A symlink to a directory is copied as a symlink: recursive does not matter.
        await client.request("fs/copy", copy_params(ctx, "srclink", "y", False)),
        await client.request("fs/copy", copy_params(ctx, "srclink", "z", True)),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_copy_directory_to_new(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_copy_tree(ctx.workdir)
    out: list[Any] = [
        await client.request("fs/copy", copy_params(ctx, "src", "copy", True)),
        # Unlike a file copy, a directory copy creates missing parents.
        await client.request("fs/copy", copy_params(ctx, "src", "p/q/copy", True)),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_copy_directory_merges(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_copy_tree(ctx.workdir)
    (ctx.workdir / "dst" / "sub").mkdir(parents=True)
    (ctx.workdir / "dst" / "keep").write_text("k")
    (ctx.workdir / "dst" / "a").write_text("AAAA")
    (ctx.workdir / "dst" / "sub" / "t").write_text("t")
    out: list[Any] = [
        await client.request("fs/copy", copy_params(ctx, "src", "dst", True)),
        # A subdirectory copied onto its ancestor merges too (not "into itself").
        await client.request("fs/copy", copy_params(ctx, "src/sub", "src", True)),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_copy_merge_conflicts(ctx: CaseContext) -> Any:
    client = await ctx.client()
    # One entry per source so the failure point does not depend on directory order.
    for name in ("s1", "s2", "s3", "t1", "t2", "t3"):
        (ctx.workdir / name).mkdir()
    (ctx.workdir / "s1" / "k").mkdir()
    (ctx.workdir / "t1" / "k").write_text("file where the source has a dir")
    (ctx.workdir / "s2" / "k").write_text("file")
    (ctx.workdir / "t2" / "k").mkdir()
    os.symlink("elsewhere", ctx.workdir / "s3" / "k")
    (ctx.workdir / "t3" / "k").write_text("file where the source has a link")
    (ctx.workdir / "file").write_text("x")
    out: list[Any] = [
        await client.request("fs/copy", copy_params(ctx, "s1", "t1", True)),
        await client.request("fs/copy", copy_params(ctx, "s2", "t2", True)),
        await client.request("fs/copy", copy_params(ctx, "s3", "t3", True)),
        await client.request("fs/copy", copy_params(ctx, "s1", "file", True)),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_copy_into_itself(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_copy_tree(ctx.workdir)
    os.symlink("src", ctx.workdir / "srclink")
    out: list[Any] = [
        await client.request("fs/copy", copy_params(ctx, "src", "src", True)),
        await client.request("fs/copy", copy_params(ctx, "src", "src/sub/inner", True)),
        await client.request("fs/copy", copy_params(ctx, "src", "src/new", True)),
        await client.request("fs/copy", copy_params(ctx, "src", "srclink", True)),
        await client.request("fs/copy", copy_params(ctx, "src", "srclink/x", True)),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_copy_symlink_source(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_copy_tree(ctx.workdir)
    os.symlink("f", ctx.workdir / "filelink")
    out: list[Any] = [
        await client.request("fs/copy", copy_params(ctx, "filelink", "l1", False)),
        await client.request("fs/copy", copy_params(ctx, "src/dang", "l2", False)),
        await client.request("fs/copy", copy_params(ctx, "src/la", "g", False)),  # onto a file
        await client.request("fs/copy", copy_params(ctx, "filelink", "l1", False)),  # again
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_copy_special_file(ctx: CaseContext) -> Any:
    client = await ctx.client()
    os.mkfifo(ctx.workdir / "fifo")
    (ctx.workdir / "withfifo").mkdir()
    os.mkfifo(ctx.workdir / "withfifo" / "p")
    (ctx.workdir / "withfifo" / "f").write_text("x")
    out: list[Any] = [
        await client.request("fs/copy", copy_params(ctx, "fifo", "x", False)),
        await client.request("fs/copy", copy_params(ctx, "fifo", "y", True)),
        # Inside a directory copy, special files are skipped silently.
        await client.request("fs/copy", copy_params(ctx, "withfifo", "copy", True)),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_copy_errors(ctx: CaseContext) -> Any:
    client = await ctx.client()
    build_copy_tree(ctx.workdir)
    (ctx.workdir / "dst").mkdir()
    out: list[Any] = [
        await client.request("fs/copy", copy_params(ctx, "f", "dst", False)),
        await client.request("fs/copy", copy_params(ctx, "f", "dst", True)),
        await client.request("fs/copy", copy_params(ctx, "missing", "x", False)),
        await client.request("fs/copy", copy_params(ctx, "missing", "x", True)),
        await client.request("fs/copy", copy_params(ctx, "f", "missing/x", False)),
        await client.request("fs/copy", copy_params(ctx, "f", "g/x", False)),
        await client.request("fs/copy", copy_params(ctx, "f/x", "y", False)),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_copy_params(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "f").write_text("x")
    source, destination = ctx.uri("f"), ctx.uri("q")
    variants: list[Json] = [
        {"sourcePath": source, "destinationPath": destination},
        {"sourcePath": source, "recursive": False},
        {"destinationPath": destination, "recursive": False},
        {"sourcePath": source, "destinationPath": destination, "recursive": None},
        {"sourcePath": source, "destinationPath": destination, "recursive": "yes"},
        {"sourcePath": source, "destinationPath": "/tmp/q", "recursive": False},
        {"sourcePath": source, "destinationPath": "file:///C:/q", "recursive": False},
        {"sourcePath": source, "destinationPath": destination, "recursive": False, "x": 1},
    ]
    out: list[Any] = [await client.request("fs/copy", v) for v in variants]
    out.append(snapshot(ctx.workdir))
    return out


# -- fs/open, fs/readBlock, fs/writeBlock, fs/close -------------------------------------------


@case
async def fs_open_read_positional_blocks(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "six").write_bytes(b"abcdef")
    (ctx.workdir / "empty").write_bytes(b"")
    out: list[Any] = [
        await client.request("fs/open", {"handleId": "h", "path": ctx.uri("six")}),
        await client.request("fs/open", {"handleId": "e", "path": ctx.uri("empty")}),
    ]
    # eof is true only when fewer bytes than `len` came back.
    for offset, length in [
        (0, 3),
        (3, 3),
        (3, 4),
        (0, 6),
        (0, 7),
        (5, 1),
        (1, 1),
        (0, 100),
        (6, 1),
        (100, 5),
        (0, MIB),
        (0, 3),  # positional: no cursor moved by earlier reads
    ]:
        out.append(
            await client.request("fs/readBlock", {"handleId": "h", "offset": offset, "len": length})
        )
    out.append(await client.request("fs/readBlock", {"handleId": "e", "offset": 0, "len": 1}))
    return out


@case
async def fs_open_read_follows_symlinks(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "file").write_bytes(b"linked")
    os.symlink("file", ctx.workdir / "link")
    out: list[Any] = [
        await client.request("fs/open", {"handleId": "l", "path": ctx.uri("link")}),
        await client.request("fs/readBlock", {"handleId": "l", "offset": 0, "len": 100}),
        await client.request("fs/open", {"handleId": "m", "path": ctx.uri("link"), "mode": "read"}),
    ]
    # The handle reads the file it opened, even after the name is replaced.
    (ctx.workdir / "file").unlink()
    (ctx.workdir / "file").write_bytes(b"replaced")
    out.append(await client.request("fs/readBlock", {"handleId": "l", "offset": 0, "len": 100}))
    return out


@case
async def fs_open_large_file_blocks(ctx: CaseContext) -> Any:
    client = await ctx.client()
    data = pseudo_random(MIB + 5, 3)
    (ctx.workdir / "big").write_bytes(data)
    await client.request("fs/open", {"handleId": "b", "path": ctx.uri("big")})
    out: list[Any] = []
    for offset, length in [(0, MIB), (MIB, MIB), (MIB - 1, 6), (1, MIB)]:
        response = await client.request(
            "fs/readBlock", {"handleId": "b", "offset": offset, "len": length}, timeout=30
        )
        out.append(block_view(response))
    out.append(digest(data[MIB - 1 : MIB + 5]))
    return out


@case
async def fs_open_replace_creates_and_overwrites(ctx: CaseContext) -> Any:
    # File contents are only looked at after fs/close: whether a replace handle writes in place
    # (the reference truncates at open) or atomically at close is a deliberate-difference topic.
    client = await ctx.client()
    (ctx.workdir / "existing").write_bytes(b"previous content")
    (ctx.workdir / "shrink").write_bytes(b"a long previous content")
    os.symlink("created-through-link", ctx.workdir / "dangling")
    os.symlink("shrink", ctx.workdir / "link")
    out: list[Any] = [
        await client.request(
            "fs/open", {"handleId": "r1", "path": ctx.uri("existing"), "mode": "replace"}
        ),
        await client.request(
            "fs/open", {"handleId": "r2", "path": ctx.uri("new"), "mode": "replace"}
        ),
        await client.request(
            "fs/open", {"handleId": "r3", "path": ctx.uri("dangling"), "mode": "replace"}
        ),
        await client.request(
            "fs/writeBlock", {"handleId": "r3", "offset": 0, "chunk": b64("via link")}
        ),
        await client.request(
            "fs/open", {"handleId": "r4", "path": ctx.uri("link"), "mode": "replace"}
        ),
        await client.request(
            "fs/writeBlock", {"handleId": "r4", "offset": 0, "chunk": b64("short")}
        ),
    ]
    for handle in ("r1", "r2", "r3", "r4"):
        out.append(await client.request("fs/close", {"handleId": handle}))
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_writeBlock_positional_and_gaps(ctx: CaseContext) -> Any:
    client = await ctx.client()
    out: list[Any] = [
        await client.request(
            "fs/open", {"handleId": "gap", "path": ctx.uri("gap"), "mode": "replace"}
        ),
        await client.request("fs/writeBlock", {"handleId": "gap", "offset": 0, "chunk": b64("x")}),
        await client.request("fs/writeBlock", {"handleId": "gap", "offset": 4, "chunk": b64("yy")}),
        await client.request("fs/close", {"handleId": "gap"}),
        await client.request(
            "fs/open", {"handleId": "w", "path": ctx.uri("out"), "mode": "replace"}
        ),
    ]
    # Out of order, overlapping, past the end: the last write of each byte wins.
    for offset, chunk in [(5, b"END"), (0, b"x"), (4, b"yy"), (1, b"z"), (1, b"\x00\x01")]:
        out.append(
            await client.request(
                "fs/writeBlock", {"handleId": "w", "offset": offset, "chunk": b64(chunk)}
            )
        )
    out.append(await client.request("fs/close", {"handleId": "w"}))
    out.append({name: (ctx.workdir / name).read_bytes().hex() for name in ("gap", "out")})
    return out


@case
async def fs_writeBlock_large_chunks(ctx: CaseContext) -> Any:
    client = await ctx.client()
    await client.request("fs/open", {"handleId": "w", "path": ctx.uri("out"), "mode": "replace"})
    data = pseudo_random(MIB, 11)
    out: list[Any] = [
        await client.request(
            "fs/writeBlock", {"handleId": "w", "offset": 0, "chunk": b64(data)}, timeout=30
        ),
        await client.request(
            "fs/writeBlock", {"handleId": "w", "offset": MIB, "chunk": b64(data)}, timeout=30
        ),
        await client.request(
            "fs/writeBlock",
            {"handleId": "w", "offset": 0, "chunk": b64(data + b"!")},
            timeout=30,
        ),
        await client.request("fs/close", {"handleId": "w"}),
    ]
    out.append(digest((ctx.workdir / "out").read_bytes()))
    out.append(digest(data + data))
    return out


@case
async def fs_open_mode_variants(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "f").write_bytes(b"keep me")
    modes: list[Any] = [
        "x",
        "Read",
        "REPLACE",
        "replace ",
        "",
        None,
        5,
        True,
        ["read"],
        {},
        {"x": None},
        {"read": 1},
        {"read": {}},
        {"read": None, "replace": None},
        {"read": None},  # the single-key map form is accepted
    ]
    out: list[Any] = []
    for index, mode in enumerate(modes):
        out.append(
            await client.request(
                "fs/open", {"handleId": f"m{index}", "path": ctx.uri("f"), "mode": mode}
            )
        )
    out.append(snapshot(ctx.workdir))
    out.append(
        await client.request(
            "fs/open", {"handleId": "map-replace", "path": ctx.uri("f"), "mode": {"replace": None}}
        )
    )
    out.append(await client.request("fs/close", {"handleId": "map-replace"}))
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_open_errors(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "dir").mkdir()
    (ctx.workdir / "file").write_text("x")
    os.mkfifo(ctx.workdir / "fifo")
    os.symlink("nope", ctx.workdir / "dangling")
    os.symlink("dir", ctx.workdir / "dirlink")
    variants: list[Json] = [
        {"handleId": "a", "path": ctx.uri("dir")},
        {"handleId": "b", "path": ctx.uri("dirlink")},
        {"handleId": "c", "path": ctx.uri("fifo")},
        {"handleId": "d", "path": ctx.uri("missing")},
        {"handleId": "e", "path": ctx.uri("dangling")},
        {"handleId": "f", "path": ctx.uri("file", "x")},
        {"handleId": "g", "path": ctx.uri("dir"), "mode": "replace"},
        {"handleId": "h", "path": ctx.uri("missing", "x"), "mode": "replace"},
        {"handleId": "i", "path": ctx.uri("file", "x"), "mode": "replace"},
        {"path": ctx.uri("file")},
        {"handleId": "j"},
        {"handleId": 5, "path": ctx.uri("file")},
        {"handleId": None, "path": ctx.uri("file")},
        {"handleId": "k", "path": str(ctx.workdir / "file")},
    ]
    out: list[Any] = [await client.request("fs/open", v) for v in variants]
    # None of the failed opens registered a handle: the ids are all still free.
    for handle in "abcdefghi":
        out.append(
            await client.request("fs/readBlock", {"handleId": handle, "offset": 0, "len": 1})
        )
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_open_duplicate_and_empty_handle_ids(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "f").write_bytes(b"data")
    (ctx.workdir / "g").write_bytes(b"other")
    return [
        await client.request("fs/open", {"handleId": "h1", "path": ctx.uri("f")}),
        await client.request("fs/open", {"handleId": "h1", "path": ctx.uri("g")}),
        await client.request(
            "fs/open", {"handleId": "h1", "path": ctx.uri("new"), "mode": "replace"}
        ),
        (ctx.workdir / "new").exists(),
        await client.request("fs/open", {"handleId": "h1", "path": ctx.uri("missing")}),
        await client.request("fs/readBlock", {"handleId": "h1", "offset": 0, "len": 10}),
        await client.request("fs/open", {"handleId": "", "path": ctx.uri("g")}),
        await client.request("fs/open", {"handleId": "", "path": ctx.uri("f")}),
        await client.request("fs/readBlock", {"handleId": "", "offset": 0, "len": 10}),
        await client.request("fs/open", {"handleId": "ü `x` \n", "path": ctx.uri("f")}),
        await client.request("fs/open", {"handleId": "ü `x` \n", "path": ctx.uri("f")}),
        await client.request("fs/close", {"handleId": "h1"}),
        await client.request("fs/open", {"handleId": "h1", "path": ctx.uri("g")}),
        await client.request("fs/readBlock", {"handleId": "h1", "offset": 0, "len": 10}),
    ]


@case
async def fs_open_handle_limit(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "f").write_bytes(b"x")
    opened = []
    for index in range(MAX_HANDLES):
        response = await client.request("fs/open", {"handleId": f"h{index}", "path": ctx.uri("f")})
        opened.append("result" in response)
    out: list[Any] = [all(opened)]
    out += [
        await client.request("fs/open", {"handleId": "over", "path": ctx.uri("f")}),
        # A duplicate id is reported before the limit.
        await client.request("fs/open", {"handleId": "h0", "path": ctx.uri("f")}),
        # The limit is checked before the path is looked at or created.
        await client.request("fs/open", {"handleId": "over", "path": ctx.uri("missing")}),
        await client.request(
            "fs/open", {"handleId": "over", "path": ctx.uri("created"), "mode": "replace"}
        ),
        (ctx.workdir / "created").exists(),
        # ... but after params decoding.
        await client.request("fs/open", {"handleId": "over", "path": ctx.uri("f"), "mode": "bad"}),
        await client.request("fs/close", {"handleId": "h5"}),
        await client.request("fs/open", {"handleId": "over", "path": ctx.uri("f")}),
        await client.request("fs/open", {"handleId": "over2", "path": ctx.uri("f")}),
    ]
    # The limit is per connection: another connection still has room.
    other = await ctx.client()
    out.append(await other.request("fs/open", {"handleId": "h0", "path": ctx.uri("f")}))
    return out


@case
async def fs_readBlock_length_limits(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "f").write_bytes(b"abc")
    await client.request("fs/open", {"handleId": "h", "path": ctx.uri("f")})
    variants: list[Json] = [
        {"handleId": "h", "offset": 0, "len": 0},
        {"handleId": "h", "offset": 0, "len": MIB + 1},
        {"handleId": "h", "offset": 0, "len": MIB},
        {"handleId": "h", "offset": 0, "len": 1},
        # The length is validated before the handle is looked up.
        {"handleId": "unknown", "offset": 0, "len": 0},
        {"handleId": "unknown", "offset": 0, "len": 1},
        {"handleId": "h", "offset": -1, "len": 1},
        {"handleId": "h", "offset": 0, "len": -1},
        {"handleId": "h", "offset": 2**64, "len": 1},
        {"handleId": "h", "offset": 0.5, "len": 1},
        {"handleId": "h", "offset": "0", "len": 1},
        {"handleId": "h", "len": 1},
        {"handleId": "h", "offset": 0},
        {"offset": 0, "len": 1},
    ]
    return [await client.request("fs/readBlock", v) for v in variants]


@case
async def fs_readBlock_error_drops_handle(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "f").write_bytes(b"abcdef")
    out: list[Any] = []
    # Reading a replace (write-only) handle fails with EBADF, and the handle is gone after it.
    out.append(
        await client.request(
            "fs/open", {"handleId": "w", "path": ctx.uri("out"), "mode": "replace"}
        )
    )
    out.append(await client.request("fs/readBlock", {"handleId": "w", "offset": 0, "len": 2}))
    out.append(
        await client.request("fs/writeBlock", {"handleId": "w", "offset": 0, "chunk": "eA=="})
    )
    # Offsets past the signed 64-bit range fail with EINVAL (-32600) and drop the handle too.
    for handle, offset in [("a", 2**63 - 2), ("b", 2**63 - 1), ("c", 2**63), ("d", 2**64 - 1)]:
        out.append(await client.request("fs/open", {"handleId": handle, "path": ctx.uri("f")}))
        out.append(
            await client.request("fs/readBlock", {"handleId": handle, "offset": offset, "len": 1})
        )
        out.append(
            await client.request("fs/readBlock", {"handleId": handle, "offset": 0, "len": 2})
        )
    return out


@case
async def fs_writeBlock_chunk_errors(ctx: CaseContext) -> Any:
    client = await ctx.client()
    await client.request("fs/open", {"handleId": "w", "path": ctx.uri("out"), "mode": "replace"})
    too_big = b64(b"x" * (MIB + 1))
    variants: list[Json] = [
        {"handleId": "w", "offset": 0, "chunk": ""},
        {"handleId": "w", "offset": 0, "chunk": too_big},
        {"handleId": "w", "offset": 0, "chunk": "!!"},
        {"handleId": "w", "offset": 0, "chunk": "eA"},
        {"handleId": "w", "offset": 0, "chunk": "eA==\n"},
        {"handleId": "w", "offset": 0, "chunk": None},
        {"handleId": "w", "offset": 0},
        {"handleId": "w", "chunk": "eA=="},
        {"handleId": "w", "offset": -1, "chunk": "eA=="},
        # Chunk decoding and length are checked before the handle is looked up.
        {"handleId": "unknown", "offset": 0, "chunk": ""},
        {"handleId": "unknown", "offset": 0, "chunk": "!!"},
        {"handleId": "unknown", "offset": 0, "chunk": too_big},
        {"handleId": "unknown", "offset": 0, "chunk": "eA=="},
        # The write range must fit in a signed 64-bit offset; the handle survives.
        {"handleId": "w", "offset": 2**63 - 1, "chunk": "eA=="},
        {"handleId": "w", "offset": 2**63 - 2, "chunk": "eHg="},
        {"handleId": "w", "offset": 2**63, "chunk": "eA=="},
        {"handleId": "w", "offset": 0, "chunk": "b2s="},
    ]
    out: list[Any] = [await client.request("fs/writeBlock", v, timeout=30) for v in variants]
    out.append(await client.request("fs/close", {"handleId": "w"}))
    out.append((ctx.workdir / "out").read_bytes().hex())
    return out


@case
async def fs_writeBlock_on_read_handle(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "f").write_bytes(b"abcdef")
    return [
        await client.request("fs/open", {"handleId": "r", "path": ctx.uri("f")}),
        await client.request("fs/writeBlock", {"handleId": "r", "offset": 0, "chunk": b64("X")}),
        # A failed write does not drop the handle.
        await client.request("fs/readBlock", {"handleId": "r", "offset": 0, "len": 6}),
        (ctx.workdir / "f").read_bytes().decode(),
    ]


@case
async def fs_close_semantics(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "f").write_bytes(b"abc")
    return [
        await client.request("fs/open", {"handleId": "h", "path": ctx.uri("f")}),
        await client.request("fs/close", {"handleId": "h"}),
        await client.request("fs/readBlock", {"handleId": "h", "offset": 0, "len": 1}),
        await client.request("fs/writeBlock", {"handleId": "h", "offset": 0, "chunk": "eA=="}),
        await client.request("fs/close", {"handleId": "h"}),
        await client.request("fs/close", {"handleId": "never-opened"}),
        await client.request("fs/close", {"handleId": ""}),
        await client.request("fs/close", {"handleId": "h", "extra": 1}),
        await client.request("fs/close", {}),
        await client.request("fs/close", {"handleId": 5}),
        await client.request("fs/close", {"handleId": None}),
    ]


@case
async def fs_handles_do_not_survive_resume(ctx: CaseContext) -> Any:
    first = await ctx.client()
    session_id = first.messages[0]["result"]["sessionId"]
    (ctx.workdir / "f").write_bytes(b"abc")
    opened = await first.request("fs/open", {"handleId": "h", "path": ctx.uri("f")})
    read = await first.request("fs/readBlock", {"handleId": "h", "offset": 0, "len": 3})
    await first.close()
    second, resumed = await resume(ctx, session_id)
    return [
        opened,
        read,
        "result" in resumed and resumed["result"]["sessionId"] == session_id,
        await second.request("fs/readBlock", {"handleId": "h", "offset": 0, "len": 3}),
        await second.request("fs/writeBlock", {"handleId": "h", "offset": 0, "chunk": "eA=="}),
        await second.request("fs/close", {"handleId": "h"}),
        await second.request("fs/open", {"handleId": "h", "path": ctx.uri("f")}),
        await second.request("fs/readBlock", {"handleId": "h", "offset": 1, "len": 3}),
    ]


@case
async def fs_handles_are_per_connection(ctx: CaseContext) -> Any:
    one = await ctx.client()
    two = await ctx.client()
    (ctx.workdir / "f").write_bytes(b"one")
    (ctx.workdir / "g").write_bytes(b"two")
    return [
        await one.request("fs/open", {"handleId": "same", "path": ctx.uri("f")}),
        await two.request("fs/readBlock", {"handleId": "same", "offset": 0, "len": 3}),
        await two.request("fs/open", {"handleId": "same", "path": ctx.uri("g")}),
        await one.request("fs/readBlock", {"handleId": "same", "offset": 0, "len": 3}),
        await two.request("fs/readBlock", {"handleId": "same", "offset": 0, "len": 3}),
        await two.request("fs/close", {"handleId": "same"}),
        await one.request("fs/readBlock", {"handleId": "same", "offset": 0, "len": 3}),
    ]


# -- params, URIs, gating, sandbox ------------------------------------------------------------


# One valid params object per fs method (paths filled in by the case).
def valid_params(ctx: CaseContext) -> dict[str, Json]:
    f = ctx.uri("f")
    return {
        "fs/readFile": {"path": f},
        "fs/writeFile": {"path": ctx.uri("w"), "dataBase64": b64("w")},
        "fs/createDirectory": {"path": ctx.uri("d")},
        "fs/getMetadata": {"path": f},
        "fs/canonicalize": {"path": f},
        "fs/readDirectory": {"path": ctx.uri()},
        "fs/walk": {"path": ctx.uri(), "options": walk_options()},
        "fs/remove": {"path": ctx.uri("gone")},
        "fs/copy": {"sourcePath": f, "destinationPath": ctx.uri("c"), "recursive": False},
        "fs/open": {"handleId": "h", "path": f},
        "fs/readBlock": {"handleId": "h", "offset": 0, "len": 1},
        "fs/writeBlock": {"handleId": "h", "offset": 0, "chunk": b64("x")},
        "fs/close": {"handleId": "h"},
    }


@case
async def fs_params_missing_and_wrong_types(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "f").write_text("x")
    out: list[Any] = []
    for method in valid_params(ctx):
        out.append(await client.request(method, {}))
        await client.send({"id": f"null-{method}", "method": method, "params": None})
        out.append(await client.response(f"null-{method}"))
        await client.send({"id": f"absent-{method}", "method": method})
        out.append(await client.response(f"absent-{method}"))
        out.append(await client.request(method, "file:///tmp"))
        out.append(await client.request(method, 5))
    for value in [5, None, True, ["file:///tmp"], {"uri": "file:///tmp"}]:
        out.append(await client.request("fs/getMetadata", {"path": value}))
    return out


@case
async def fs_path_uri_rejections(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "f").write_text("x")
    bad = [
        str(ctx.workdir / "f"),  # native path
        "relative/f",
        "",
        "C:\\x",
        "\\\\server\\share",
        "http://host/x",
        "urn:x",
        ctx.uri("f") + "?x=1",
        ctx.uri("f") + "#frag",
        "file://user@localhost/tmp",
        "file://localhost:99/tmp",
        ctx.uri("a%00b"),
        "file:///C:/x",
        "file:///c:/x",
        "file:///C:",
        "file://server/share/x",
        "file://[::1]/tmp",
    ]
    out: list[Any] = [await client.request("fs/readFile", {"path": uri}) for uri in bad]
    # The same rejections from other methods and other path members.
    for uri in ("file://server/share/x", ctx.uri("a%00b"), "/tmp"):
        out.append(await client.request("fs/getMetadata", {"path": uri}))
        out.append(await client.request("fs/walk", {"path": uri, "options": walk_options()}))
        out.append(
            await client.request(
                "fs/copy",
                {"sourcePath": ctx.uri("f"), "destinationPath": uri, "recursive": False},
            )
        )
        out.append(await client.request("fs/open", {"handleId": "h", "path": uri}))
        out.append(await client.request("fs/remove", {"path": uri}))
    return out


@case
async def fs_path_uri_accepted_forms(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "pc%t").write_text("percent")
    (ctx.workdir / "sp ace").write_text("space")
    path = str(ctx.workdir)
    forms = [
        f"FILE://{path}/pc%25t",
        f"file:{path}/pc%25t",
        f"file://localhost{path}/pc%25t",
        f"file://LOCALHOST{path}/pc%25t",
        f"file://{path}/./x/../pc%25t",
        f"file://{path}/pc%t",  # a stray % is taken literally
        f"file://{path}%2Fpc%25t",  # %2F decodes to a separator
        f"file://{path}/sp ace",
        f"file://{path}/sp%20ace",
        "file:////proc/self/../self/comm/../../version/..",
    ]
    out: list[Any] = [await client.request("fs/readFile", {"path": uri}) for uri in forms[:-1]]
    out.append(await client.request("fs/canonicalize", {"path": forms[-1]}))
    return out


@case
async def fs_gating_before_initialize(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    (ctx.workdir / "f").write_text("x")
    out: list[Any] = [await client.request(m, p) for m, p in valid_params(ctx).items()]
    out += [
        # Params are decoded before the gate ...
        await client.request("fs/readFile", {}),
        await client.request("fs/readFile", {"path": ctx.uri("a%00b")}),
        await client.request("fs/open", {"handleId": "h", "path": ctx.uri("f"), "mode": "x"}),
        # ... host-path and limit validation come after it.
        await client.request("fs/readFile", {"path": "file:///C:/x"}),
        await client.request("fs/walk", {"path": ctx.uri(), "options": walk_options(maxEntries=0)}),
        await client.request("fs/readBlock", {"handleId": "h", "offset": 0, "len": 0}),
        await client.request("fs/writeFile", {"path": ctx.uri("w"), "dataBase64": "!"}),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_gating_before_initialized(ctx: CaseContext) -> Any:
    client = await ctx.client(initialize=False)
    (ctx.workdir / "f").write_text("x")
    init = await client.request("initialize", {"clientName": "c"})
    out: list[Any] = ["result" in init]
    out += [await client.request(m, p) for m, p in valid_params(ctx).items()]
    out.append(await client.request("fs/readFile", {}))
    await client.notify("initialized")
    out.append(await client.request("fs/readFile", {"path": ctx.uri("f")}))
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_sandbox_null_explicit(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "f").write_text("x")
    (ctx.workdir / "dir").mkdir()
    out: list[Any] = []
    for method, params in valid_params(ctx).items():
        if method in ("fs/readBlock", "fs/writeBlock", "fs/close"):
            continue  # handle methods take no sandbox
        response = await client.request(method, {**params, "sandbox": None})
        if method == "fs/readDirectory":
            response = sorted_entries(response)
        elif method == "fs/getMetadata":
            response = metadata_view(response, ctx.workdir / "f")
        elif method == "fs/walk" and "result" in response:
            response = {"entries": sorted(e["path"] for e in response["result"]["entries"])}
        out.append(response)
    out.append(snapshot(ctx.workdir))
    return out


@case
async def fs_sandbox_disabled_profile_on_reads(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "f").write_text("sandboxed read")
    (ctx.workdir / "dir").mkdir()
    (ctx.workdir / "dir" / "inner").write_text("x")
    os.symlink("f", ctx.workdir / "link")
    sandbox = {"sandbox": DISABLED_SANDBOX}
    metadata = await client.request("fs/getMetadata", {"path": ctx.uri("f"), **sandbox})
    listing = await client.request("fs/readDirectory", {"path": ctx.uri("dir"), **sandbox})
    return [
        await client.request("fs/readFile", {"path": ctx.uri("f"), **sandbox}),
        await client.request("fs/readFile", {"path": ctx.uri("link"), **sandbox}),
        await client.request("fs/readFile", {"path": ctx.uri("missing"), **sandbox}),
        await client.request("fs/readFile", {"path": ctx.uri("dir"), **sandbox}),
        await client.request(
            "fs/readFile", {"path": ctx.uri("link"), "followSymlinks": False, **sandbox}
        ),
        metadata_view(metadata, ctx.workdir / "f"),
        sorted_entries(listing),
        await client.request("fs/canonicalize", {"path": ctx.uri("link"), **sandbox}),
        await client.request("fs/open", {"handleId": "s", "path": ctx.uri("f"), **sandbox}),
        await client.request("fs/readBlock", {"handleId": "s", "offset": 0, "len": 100}),
    ]


@case
async def fs_sandbox_params_errors(ctx: CaseContext) -> Any:
    client = await ctx.client()
    (ctx.workdir / "f").write_text("x")
    sandboxes: list[Any] = [
        {},
        5,
        "disabled",
        {"permissions": {"type": "disabled"}},
        {"windowsSandboxLevel": "disabled"},
        {"permissions": {"type": "nope"}, "windowsSandboxLevel": "disabled"},
        {"permissions": {"type": "disabled"}, "windowsSandboxLevel": "nope"},
        {"permissions": {"type": "disabled"}, "windowsSandboxLevel": "mxc"},
    ]
    return [
        await client.request("fs/readFile", {"path": ctx.uri("f"), "sandbox": s}) for s in sandboxes
    ]
