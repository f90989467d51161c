"""`execserver cp SRC DST`: copy one file between hosts; either side may be `TARGET:/path`.

The file streams in blocks (reading the next block while the last one is written), so any
size works with bounded memory; progress goes to stderr for large files on a terminal (or with
`--progress`). A DST that is a directory receives the file under its own name.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from contextlib import AsyncExitStack

from execserver.cli.targets import TOKEN_ENV, open_target, split_remote_path
from execserver.environment import Environment
from execserver.errors import ExecServerError
from execserver.local.environment import local_environment
from execserver.tasks import TaskOwner

BLOCK_BYTES = 1024 * 1024  # the executors' block size cap
PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "cp",
        help="copy a file to, from or between executors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="PATH or TARGET:/PATH")
    parser.add_argument("destination", help="PATH or TARGET:/PATH")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"bearer token for ws://, wss:// or relay+http(s):// targets (default: ${TOKEN_ENV})",
    )
    parser.add_argument(
        "--progress", action="store_true", help="show progress even when stderr is not a terminal"
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    source = _resolve(args.source)
    destination = _resolve(args.destination)
    try:
        asyncio.run(_cp(args, source, destination))
    except (ExecServerError, OSError, ValueError) as exc:
        print(f"execserver: {exc}", file=sys.stderr)
        return 1
    return 0


async def _open(stack: AsyncExitStack, target: str | None, token: str | None) -> Environment:
    if target is None:
        return await stack.enter_async_context(local_environment())
    return await stack.enter_async_context(open_target(target, token=token))


def _resolve(argument: str) -> tuple[str | None, str]:
    """(TARGET or None, path); a local path is made absolute against our working directory."""
    target, path = split_remote_path(argument)
    return target, path if target is not None else os.path.abspath(path)


async def _cp(
    args: argparse.Namespace,
    source_spec: tuple[str | None, str],
    destination_spec: tuple[str | None, str],
) -> None:
    (source_target, source), (dest_target, destination) = source_spec, destination_spec
    async with AsyncExitStack() as stack:
        source_env = await _open(stack, source_target, args.token)
        dest_env = await _open(stack, dest_target, args.token)
        metadata = await source_env.fs.get_metadata(source)
        if metadata.is_directory:
            raise ValueError(f"{args.source} is a directory (cp copies one file)")
        try:
            if (await dest_env.fs.get_metadata(destination)).is_directory:
                destination = os.path.join(destination, os.path.basename(source))
        except FileNotFoundError:
            pass
        show = metadata.size >= PROGRESS_MIN_BYTES and (args.progress or sys.stderr.isatty())
        progress = Progress(metadata.size) if show or args.progress else None
        await copy_file(source_env, source, dest_env, destination, progress)


class Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.monotonic()

    def update(self, done: int, *, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        percent = 100.0 * done / self.total if self.total else 100.0
        rate = done / elapsed / (1024 * 1024)
        end = "\n" if final else ""
        sys.stderr.write(f"\r{percent:5.1f}% {done}/{self.total} bytes {rate:.1f} MiB/s{end}")
        sys.stderr.flush()


async def copy_file(
    source_env: Environment,
    source: str,
    dest_env: Environment,
    destination: str,
    progress: Progress | None = None,
) -> int:
    """Stream `source` to `destination` in blocks; returns the number of bytes copied."""
    async with (
        await source_env.fs.open(source) as reader,
        await dest_env.fs.open(destination, "replace") as writer,
    ):
        offset = 0
        reads = TaskOwner("execserver cp read-ahead")
        pending = reads.spawn(reader.read_block(0, BLOCK_BYTES))
        try:
            while True:
                chunk, eof = await pending
                if not eof:  # read ahead while this block is written
                    pending = reads.spawn(reader.read_block(offset + len(chunk), BLOCK_BYTES))
                if chunk:
                    await writer.write_block(offset, chunk)
                    offset += len(chunk)
                if progress is not None:
                    progress.update(offset, final=eof)
                if eof:
                    return offset
        finally:
            await reads.aclose()
