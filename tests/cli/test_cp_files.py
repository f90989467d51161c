"""`execserver cp` like scp: permission bits and (-p) times kept, atomic local writes that a
Ctrl-C in a real terminal cannot leave half-done, partial uploads removed, readable progress."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.cli.support import CLI, cli_env, no_traceback, run_cli
from tests.conftest import ServerProcess
from tests.harness.terminal import Terminal

BIG = 2 * 1024**3  # sparse: takes no disk, and far longer to copy than the test waits


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


async def test_modes_are_kept_like_scp(ours: ServerProcess, tmp_path: Path) -> None:
    """Upload and download: a 755 script stays 755, a 640 file stays 640 (not
    world-readable); an existing destination keeps its own bits; -p keeps bits and times."""
    os.umask(0o022)
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    private = tmp_path / "private"
    private.write_text("secret\n")
    private.chmod(0o640)
    (tmp_path / "up").mkdir()
    (tmp_path / "down").mkdir()
    for source, directory in ((script, "up"), (private, "up")):
        code, _, stderr = await run_cli("cp", str(source), f"{ours.url}:{tmp_path}/{directory}/")
        assert code == 0, stderr
    for source in (script, private):
        code, _, stderr = await run_cli("cp", f"{ours.url}:{source}", str(tmp_path / "down"))
        assert code == 0, stderr
    for directory in ("up", "down"):
        assert _mode(tmp_path / directory / "script.sh") == 0o755
        assert _mode(tmp_path / directory / "private") == 0o640
    existing = tmp_path / "down" / "kept"
    existing.write_text("old\n")
    existing.chmod(0o600)
    code, _, _ = await run_cli("cp", f"{ours.url}:{script}", str(existing))
    assert code == 0 and existing.read_text() == "#!/bin/sh\necho hi\n" and _mode(existing) == 0o600
    private.chmod(0o604)
    for copied, destination in (
        (tmp_path / "up" / "p", f"{ours.url}:{tmp_path}/up/p"),
        (tmp_path / "down" / "p", str(tmp_path / "down" / "p")),
    ):
        # (Reading the source updates its access time: set it before each copy.)
        os.utime(private, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
        code, _, _ = await run_cli("cp", "-p", f"{ours.url}:{private}", destination)
        assert code == 0
        st = copied.stat()
        assert (_mode(copied), st.st_atime_ns, st.st_mtime_ns) == (
            0o604,
            1_600_000_000_123_456_789,
            1_500_000_000_987_654_321,
        )


async def test_modes_with_the_reference_warn(reference: ServerProcess, tmp_path: Path) -> None:
    """codex exec-server has no fs/getAttributes: the file is copied, and a warning says its
    permission bits were not."""
    source = tmp_path / "script.sh"
    source.write_text("x\n")
    source.chmod(0o755)
    code, _, stderr = await run_cli("cp", f"{reference.url}:{source}", str(tmp_path / "copy"))
    assert code == 0 and (tmp_path / "copy").read_text() == "x\n"
    assert b"cannot report its permission bits (no fs/getAttributes)" in stderr


def _leftovers(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if name.endswith(".part")]


@pytest.mark.parametrize("existing", [False, True])
async def test_ctrl_c_during_a_download_leaves_nothing(
    ours: ServerProcess, tmp_path: Path, existing: bool
) -> None:
    """Ctrl-C typed in the terminal mid-download: exit 130, no traceback, nothing under the
    final name (or the old file untouched), no temporary file left."""
    source = tmp_path / "big"
    with open(source, "wb") as file:
        file.truncate(BIG)
    (tmp_path / "out").mkdir()
    destination = tmp_path / "out" / "big"
    if existing:
        destination.write_text("old content\n")
    argv = [*CLI, "cp", f"{ours.url}:{source}", str(destination)]
    async with Terminal.spawn(argv, cli_env()) as term:
        await term.expect(b"ETA")  # blocks are flowing
        term.send(b"\x03")
        assert await term.wait() == 130
        no_traceback(bytes(term.output))
    if existing:
        assert destination.read_text() == "old content\n"
    else:
        assert not destination.exists()
    assert _leftovers(tmp_path / "out") == []


async def test_ctrl_c_during_an_upload_removes_the_partial_file(
    ours: ServerProcess, tmp_path: Path
) -> None:
    source = tmp_path / "big"
    with open(source, "wb") as file:
        file.truncate(BIG)
    destination = tmp_path / "uploaded"
    argv = [*CLI, "cp", str(source), f"{ours.url}:{destination}"]
    async with Terminal.spawn(argv, cli_env()) as term:
        await term.expect(b"ETA")
        term.send(b"\x03")
        assert await term.wait() == 130
        no_traceback(bytes(term.output))
    assert not destination.exists()


async def test_progress_uses_units_rate_and_eta(ours: ServerProcess, tmp_path: Path) -> None:
    source = tmp_path / "nine"
    source.write_bytes(os.urandom(9 * 1024 * 1024 + 7))
    code, _, stderr = await run_cli("cp", "--progress", str(source), f"{ours.url}:{tmp_path}/copy")
    assert code == 0
    final = stderr.decode().rsplit("\r", 1)[-1]
    assert re.fullmatch(r"100\.0% 9\.0 MiB of 9\.0 MiB in \d+:\d\d \([\d.]+ [KMG]iB/s\) *\n", final)
    first = stderr.decode().split("\r")[1]  # drawn after the first block
    assert re.fullmatch(r" *\d+\.\d% 1\.0 MiB of 9\.0 MiB [\d.]+ [KMG]iB/s ETA \d+:\d\d *", first)
    assert (tmp_path / "copy").read_bytes() == source.read_bytes()


async def test_download_onto_a_symlink_replaces_its_target(
    ours: ServerProcess, tmp_path: Path
) -> None:
    """As writing through the link would: the link stays, its target gets the content."""
    (tmp_path / "source").write_text("new\n")
    (tmp_path / "target").write_text("old\n")
    (tmp_path / "link").symlink_to("target")
    code, _, stderr = await run_cli("cp", f"{ours.url}:{tmp_path}/source", str(tmp_path / "link"))
    assert code == 0, stderr
    assert (tmp_path / "link").is_symlink() and (tmp_path / "target").read_text() == "new\n"
