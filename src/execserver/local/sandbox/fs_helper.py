"""Filesystem operations inside the sandbox: a one-shot helper process under bubblewrap.

The server starts `python -m execserver.local.sandbox.fs_helper` under the request's policy
(plus a read-only view of the Python installation), sends one msgpack request on stdin and
reads one msgpack reply from stdout. The operation runs the same code as unsandboxed requests,
but sees only the sandbox's filesystem, so the kernel enforces the policy. `fs/open` replies
with the opened fd over a unix socket (SCM_RIGHTS) instead of data.
"""

from __future__ import annotations

import array
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from execserver.protocol.base import dec_hook, enc_hook
from execserver.protocol.file_system import FsWalkResponse, WalkOptions
from execserver.protocol.pathuri import PathUri

FD_SOCKET = 4  # fd number of the fd-passing socket inside the helper

_encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)


class Request(msgspec.Struct):
    op: str
    args: dict[str, Any]


class Reply(msgspec.Struct, omit_defaults=True):
    result: Any = None
    errno: int | None = None
    code: int | None = None
    message: str | None = None


def _send_fd(fd: int) -> None:
    with socket.socket(fileno=os.dup(FD_SOCKET)) as sock:
        sock.sendmsg([b"f"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


def _run(request: Request) -> Any:
    from execserver.errors import FileReadTooLarge
    from execserver.local import fs_ops as fs
    from execserver.local import walk as fs_walk
    from execserver.local.blocking import FS_WAIT_TIMEOUT_S, drive_sync
    from execserver.local.file_handles import open_handle_fd

    args = request.args
    op = request.op
    if op == "walk":
        root = msgspec.convert(args["root"], PathUri, dec_hook=dec_hook)
        options = msgspec.convert(args["options"], WalkOptions, dec_hook=dec_hook)
        return fs_walk.walk(root, options)
    if op == "discover_capabilities":
        from execserver.local.capability_discovery import discover_capabilities

        return discover_capabilities(args["codex_home"], args["home"])
    if op == "inspect_root":
        from execserver.local.capability_discovery import inspect_root

        root_uri = msgspec.convert(args["root"], PathUri, dec_hook=dec_hook)
        return inspect_root(args["root_id"], root_uri)
    if op == "open":
        fd = open_handle_fd(args["path"], args["mode"])
        _send_fd(fd)
        return None
    functions: dict[str, Callable[..., Any]] = {
        "read_file": fs.read_file,
        "write_file": fs.write_file,
        "create_directory": fs.create_directory,
        "get_metadata": fs.get_metadata,
        "get_attributes": fs.get_attributes,
        "set_attributes": fs.set_attributes,
        "canonicalize": fs.canonicalize,
        "read_directory": fs.read_directory,
        "remove": fs.remove,
        "copy": fs.copy,
    }
    positional = args.get("positional", ())
    keywords = dict(args.get("keywords", {}))
    max_bytes = keywords.pop("max_bytes", None)
    if max_bytes is not None:  # read_file within what the server's budget has left
        path = positional[0]

        def grow(total: int) -> None:
            if total > max_bytes:
                raise FileReadTooLarge(path, max_bytes)

        keywords["grow"] = grow
    result = functions[op](*positional, **keywords)
    if op in fs.WAITING_OPS:
        return drive_sync(result, args.get("wait_timeout_s", FS_WAIT_TIMEOUT_S))
    return result


def main() -> None:
    """Helper entry point: one request in, one reply out."""
    from execserver.errors import RpcError

    request = msgspec.msgpack.decode(sys.stdin.buffer.read(), type=Request)
    try:
        reply = Reply(result=_run(request))
    except RpcError as exc:  # first: NotFound is also an OSError
        reply = Reply(code=exc.code, message=exc.message)
    except OSError as exc:
        reply = Reply(errno=exc.errno or 0)
    sys.stdout.buffer.write(_encoder.encode(reply))
    sys.stdout.buffer.flush()


RESULT_TYPES: dict[str, Any] = {"walk": FsWalkResponse}

if __name__ == "__main__":
    main()
