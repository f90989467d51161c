"""The CLI imports only the chosen command's modules (cli/__init__.py `COMMANDS`): a client
command does not load the server, and the listing of `execserver --help` names every command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from execserver.cli import COMMANDS, build_parser

# What `execserver CMD` may not load: the server (and the local executor under it) for the
# client commands, and either side for `token` and `--version`.
SERVER = ("execserver.server.", "execserver.local.host")
CLIENT = ("execserver.client.", "execserver.remote")


def _loaded_after(argv: list[str]) -> set[str]:
    """The modules of ours that `execserver ARGV…` has imported when its command returns."""
    code = (
        "import contextlib, sys\n"
        "from execserver.cli import main\n"
        "with contextlib.suppress(SystemExit):\n"
        f"    main({argv!r})\n"
        "print('loaded:', *(m for m in sys.modules if m.startswith('execserver')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    last = done.stdout.splitlines()[-1] if done.stdout else ""
    assert last.startswith("loaded: "), done.stderr
    return set(last.split()[1:])


@pytest.mark.parametrize(
    ("argv", "not_loaded"),
    [
        (["run", "ws://127.0.0.1:1", "--", "true"], SERVER),
        (["info", "ws://127.0.0.1:1"], SERVER),
        (["ps", "ws://127.0.0.1:1"], SERVER),
        (["token", "new"], SERVER + CLIENT),
        (["serve", "--help"], CLIENT),
        # Capability discovery (and PyYAML under it) loads on the first discovery request.
        (["serve", "--help"], ("execserver.local.capability_discovery",)),
    ],
)
def test_a_command_loads_only_its_own_side(argv: list[str], not_loaded: tuple[str, ...]) -> None:
    loaded = _loaded_after(argv)
    assert f"execserver.cli.{COMMANDS[argv[0]][0].rsplit('.', 1)[1]}" in loaded
    assert sorted(m for m in loaded if m.startswith(not_loaded)) == []


def test_version_loads_no_command() -> None:
    """`execserver --version` (the upgrade's and the tests' probe) imports no command module."""
    loaded = _loaded_after(["--version"])
    assert sorted(m for m in loaded if m.startswith(("execserver.cli.", *SERVER, *CLIENT))) == [
        "execserver.cli.exit_codes",
        "execserver.cli.help",
    ]


def test_every_listed_command_parses_with_its_own_parser() -> None:
    """Each name of `COMMANDS` is defined by the module it points at (a placeholder left in
    place knows only `-h`: `--version` would exit 2)."""
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([name, "--version"])
        assert exited.value.code == 0, name
