"""The blocking facade (`execserver.sync`) over a remote and the local environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from execserver.environment import ClosedEvent, ExitedEvent, OutputEvent
from execserver.errors import NotFound
from execserver.sync import SyncEnvironment
from tests.conftest import ServerProcess


@pytest.fixture(params=["remote", "local"])
def sync_env(request: pytest.FixtureRequest) -> SyncEnvironment:
    if request.param == "local":
        return SyncEnvironment.local()
    server: ServerProcess = request.getfixturevalue("ours")
    return SyncEnvironment.connect(server.url)


def test_sync_run_and_files(sync_env: SyncEnvironment, tmp_path: Path) -> None:
    """run(), fs calls and errors work without an event loop in the caller."""
    with sync_env as env:
        result = env.run(["sh", "-c", "echo hi; exit 2"])
        assert (result.exit_code, result.stdout) == (2, b"hi\n")
        env.fs.write_file(tmp_path / "f", b"data")
        assert env.fs.read_file(tmp_path / "f") == b"data"
        with pytest.raises(NotFound):
            env.fs.read_file(tmp_path / "missing")
        with env.fs.open(tmp_path / "f") as handle:
            assert handle.read_block(0, 10) == (b"data", True)
        assert env.info().platform_os == "linux"


def test_sync_process_events_iterate_in_order(sync_env: SyncEnvironment) -> None:
    """A started process's events can be iterated synchronously; write() reaches stdin."""
    with sync_env as env:
        process = env.process.start(["sh", "-c", "read x; echo got $x"], pipe_stdin=True)
        assert process.write(b"value\n") == "accepted"
        events = list(process)
        assert [type(e) for e in events] == [OutputEvent, ExitedEvent, ClosedEvent]
        assert isinstance(events[0], OutputEvent) and events[0].data == b"got value\n"
        assert process.wait() == 0
