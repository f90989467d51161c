"""What every command's `--help` and `--version` share."""

from __future__ import annotations

import argparse

from execserver.local.info import EXECUTOR_VERSION
from execserver.version import __version__

VERSION_TEXT = (
    f"execserver {__version__} (speaks the codex exec-server {EXECUTOR_VERSION} protocol)"
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and every option's default shown (unless it has none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or default == []
        ):
            return text
        return f"{text} (default: %(default)s)"


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=VERSION_TEXT)


__all__ = ["VERSION_TEXT", "HelpFormatter", "add_version_argument"]
