"""`execserver token new|sha256`: make a capability token, or show a token's digest.

    execserver token new                      print a new token (256 random bits) on stdout
    execserver token new --out FILE           write it to FILE (mode 0600; --force replaces
                                              an existing FILE atomically); prints its SHA-256
    execserver token sha256 [FILE | -]        the SHA-256 of the token in FILE (default: stdin),
                                              for `serve --ws-token-sha256` or the relay's
                                              `sha256:` lines

Rotation (docs/deploy.md): make a new token file, point the server at it, restart; give
clients the new token.
"""

from __future__ import annotations

import argparse
import sys

from execserver.cli.exit_codes import CliError, ExitCode
from execserver.cli.help import HelpFormatter, add_version_argument
from execserver.token_files import (
    TokenFileError,
    new_token,
    read_token_file,
    token_from_bytes,
    token_sha256,
    write_token_file,
)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "token",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    add_version_argument(parser)
    actions = parser.add_subparsers(dest="action", required=True)
    new = actions.add_parser("new", help="make a new token", formatter_class=HelpFormatter)
    add_version_argument(new)
    new.add_argument("--out", metavar="FILE", help="write the token to FILE (mode 0600)")
    new.add_argument("--force", action="store_true", help="replace FILE if it exists")
    new.set_defaults(handler=_new)
    digest = actions.add_parser(
        "sha256", help="the SHA-256 of a token", formatter_class=HelpFormatter
    )
    add_version_argument(digest)
    digest.add_argument("file", nargs="?", default="-", metavar="FILE", help="`-`: stdin")
    digest.set_defaults(handler=_sha256)


def _new(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    token = new_token()
    if args.out is None:
        print(token)
        return ExitCode.OK
    try:
        write_token_file(args.out, token, replace=args.force)
    except FileExistsError:
        raise CliError(f"{args.out} exists (--force replaces it)", ExitCode.FAILED) from None
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror}", ExitCode.FAILED) from None
    print(f"sha256:{token_sha256(token)}")
    return ExitCode.OK


def _sha256(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        if args.file == "-":
            token = token_from_bytes(sys.stdin.buffer.read(64 * 1024), "stdin")
        else:
            token = read_token_file(args.file)
    except TokenFileError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None
    print(token_sha256(token))
    return ExitCode.OK
