"""`execserver cp [-p] SRC DST`: copy one file between hosts; either side may be `TARGET:/path`.

The file streams in blocks (reading the next block while the last one is written), so any
size works with bounded memory; progress (percent, size, rate, ETA) goes to stderr for large
files on a terminal, or always with `--progress`. A DST that is a directory receives the file
under its own name.

Like scp: a new file gets the source's permission bits less your umask, an existing one keeps
its own; `-p` keeps the source's bits exactly and its access and modification times. A local
DST is written to a temporary file beside it and renamed into place at the end, so an error or
Ctrl-C leaves nothing under its name (and an old file intact); a remote DST is written in place
(the protocol has no rename) and removed again if the copy fails. Permission bits and times of
remote files need our executor (`fs/getAttributes`/`fs/setAttributes`); with codex
exec-server a warning says they were not kept.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from execserver.cli.exit_codes import CliError, ExitCode
from execserver.cli.help import HelpFormatter, add_version_argument
from execserver.cli.progress import Progress
from execserver.cli.status import say
from execserver.cli.targets import (
    TargetOptions,
    add_target_arguments,
    open_target,
    split_remote_path,
    target_options,
)
from execserver.environment import Environment, Unsupported
from execserver.errors import RpcError
from execserver.protocol.file_system import FileAttributes
from execserver.tasks import TaskOwner

BLOCK_BYTES = 1024 * 1024  # the executors' block size cap
PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "cp",
        usage="execserver cp [-p] [--progress] SRC DST",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    add_version_argument(parser)
    parser.add_argument("source", help="PATH or TARGET:/PATH")
    parser.add_argument("destination", help="PATH or TARGET:/PATH")
    parser.add_argument(
        "-p",
        "--preserve",
        action="store_true",
        help="keep the source's permission bits exactly, and its access and modification times",
    )
    parser.add_argument(
        "--progress", action="store_true", help="show progress even when stderr is not a terminal"
    )
    add_target_arguments(parser, positional=False)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    source = End("source", *_resolve(args.source))
    destination = End("destination", *_resolve(args.destination))
    asyncio.run(_cp(args, source, destination, target_options(args)))
    return ExitCode.OK


def _resolve(argument: str) -> tuple[str | None, str]:
    """(TARGET or None, path); a local path is made absolute against our working directory."""
    target, path = split_remote_path(argument)
    return target, path if target is not None else os.path.abspath(path)


def _reason(exc: BaseException) -> str:
    """An error's words without the `(os error N)` tail."""
    if isinstance(exc, RpcError):
        return exc.message.split(" (os error", 1)[0]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


@dataclass
class End:
    """One side of the copy: which role, where, and (once open) its environment."""

    role: str
    target: str | None
    path: str
    env: Environment = field(init=False)

    @property
    def is_local(self) -> bool:
        return self.target is None

    @property
    def where(self) -> str:
        if self.target is None:
            return f"local {self.role} {self.path}"
        return f"remote {self.role} {self.target}:{self.path}"

    @contextlib.contextmanager
    def blame(self) -> Iterator[None]:
        """File errors inside the block are this side's, said with its path."""
        try:
            yield
        except (RpcError, OSError) as exc:
            raise CliError(f"{self.where}: {_reason(exc)}", ExitCode.FAILED) from None

    async def is_directory(self) -> bool | None:
        """Whether the path is a directory; None when it does not exist."""
        try:
            metadata = await self.env.fs.get_metadata(self.path)
        except FileNotFoundError:
            return None
        except (RpcError, OSError) as exc:
            raise CliError(f"{self.where}: {_reason(exc)}", ExitCode.FAILED) from None
        return metadata.is_directory

    async def attributes(self) -> FileAttributes | None:
        """Permission bits and times; None where the executor cannot tell (a warning)."""
        try:
            with self.blame():
                return await self.env.fs.get_attributes(self.path)
        except Unsupported:
            return None


@contextlib.asynccontextmanager
async def _environment(target: str | None, options: TargetOptions) -> AsyncIterator[Environment]:
    if target is None:
        # Imported here: the local executor is most of the server, which a remote command
        # does not need to load.
        from execserver.local.environment import local_environment

        async with local_environment() as environment:
            yield environment
    else:
        async with open_target(target, options) as environment:
            yield environment


async def _cp(
    args: argparse.Namespace, source: End, destination: End, options: TargetOptions
) -> None:
    async with AsyncExitStack() as stack:
        opened: dict[str | None, Environment] = {}
        for end in (source, destination):  # one connection per executor, even for both ends
            if end.target not in opened:
                opened[end.target] = await stack.enter_async_context(
                    _environment(end.target, options)
                )
            end.env = opened[end.target]
        with source.blame():
            metadata = await source.env.fs.get_metadata(source.path)
        if metadata.is_directory:
            raise CliError(f"{source.where}: is a directory (cp copies one file)", ExitCode.FAILED)
        if await destination.is_directory():
            destination.path = os.path.join(destination.path, os.path.basename(source.path))
        existed = await destination.is_directory() is not None
        source_attributes = await source.attributes()
        mode = await _final_mode(args.preserve, source, source_attributes, destination, existed)
        show = metadata.size >= PROGRESS_MIN_BYTES and sys.stderr.isatty()
        progress = Progress(metadata.size) if show or args.progress else None
        times = source_attributes if args.preserve else None
        if destination.is_local:
            await _copy_to_local(source, destination, mode, times, progress)
        else:
            await _copy_to_remote(source, destination, mode, times, progress)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def _final_mode(
    preserve: bool,
    source: End,
    attributes: FileAttributes | None,
    destination: End,
    existed: bool,
) -> int | None:
    """The permission bits to give the destination (None: leave what it gets)."""
    if attributes is None:
        say(f"warning: {source.where} cannot report its permission bits (no fs/getAttributes)")
        return None
    if preserve:
        return attributes.mode
    if existed:  # scp keeps an existing file's bits; our local write makes a new inode
        if destination.is_local:
            with destination.blame():
                return os.stat(destination.path).st_mode & 0o7777
        return None
    return attributes.mode & 0o777 & ~_umask()


async def _copy_to_local(
    source: End,
    destination: End,
    mode: int | None,
    times: FileAttributes | None,
    progress: Progress | None,
) -> None:
    """Into a temporary file beside the destination, renamed over it once complete (over a
    symlink's target, not the link, as writing through it would)."""
    final = await asyncio.to_thread(os.path.realpath, destination.path)
    directory, name = os.path.split(final)
    temporary = os.path.join(directory, f".{name}.execserver-{secrets.token_hex(4)}.part")
    try:
        await copy_file(source, destination, temporary, progress)
        with destination.blame():
            if mode is not None:
                os.chmod(temporary, mode)
            if times is not None:
                os.utime(temporary, ns=(times.accessed_at_ns, times.modified_at_ns))
            os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


async def _copy_to_remote(
    source: End,
    destination: End,
    mode: int | None,
    times: FileAttributes | None,
    progress: Progress | None,
) -> None:
    """In place (the protocol has no rename); a failed or interrupted copy removes the file."""
    try:
        await copy_file(source, destination, destination.path, progress)
        if mode is None and times is None:
            return
        try:
            with destination.blame():
                await destination.env.fs.set_attributes(
                    destination.path,
                    mode=mode,
                    accessed_at_ns=None if times is None else times.accessed_at_ns,
                    modified_at_ns=None if times is None else times.modified_at_ns,
                )
        except Unsupported:
            say(
                f"warning: {destination.where} cannot take permission bits or times "
                "(no fs/setAttributes); it keeps the executor's defaults"
            )
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(destination.env.fs.remove(destination.path, recursive=False))
        raise


async def copy_file(
    source: End, destination: End, path: str, progress: Progress | None = None
) -> int:
    """Stream `source` into `path` on the destination's host in blocks; returns the bytes
    copied. Errors are blamed on the side that had them."""
    async with AsyncExitStack() as stack:
        with source.blame():
            reader = await stack.enter_async_context(await source.env.fs.open(source.path))
        with destination.blame():
            writer = await stack.enter_async_context(await destination.env.fs.open(path, "replace"))
        offset = 0
        reads = TaskOwner("execserver cp read-ahead")
        pending = reads.spawn(reader.read_block(0, BLOCK_BYTES))
        try:
            while True:
                with source.blame():
                    chunk, eof = await pending
                if not eof:  # read ahead while this block is written
                    pending = reads.spawn(reader.read_block(offset + len(chunk), BLOCK_BYTES))
                if chunk:
                    with destination.blame():
                        await writer.write_block(offset, chunk)
                    offset += len(chunk)
                if progress is not None:
                    progress.update(offset, final=eof)
                if eof:
                    return offset
        finally:
            await reads.aclose()
    raise AssertionError("unreachable")
