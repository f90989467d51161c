"""Executor discovery and missing-path watches, identically on every environment (see
conftest.py). The exact shapes are compared with the reference in tests/wire/cases_discovery.py;
these check the Python API over each environment kind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from execserver.environment import Environment
from execserver.errors import InvalidParams, InvalidRequest
from execserver.protocol.discovery import CapabilityRootRequest
from execserver.protocol.pathuri import PathUri
from tests.conftest import TIME


async def test_watch_missing_reports_a_created_path(
    environment: Environment, tmp_path: Path
) -> None:
    """A watch on a missing path reports once when a directory on its way appears."""
    watch = await environment.fs.watch_missing([tmp_path / "a" / "b"])
    assert watch is not None
    (tmp_path / "a").mkdir()
    async with asyncio.timeout(10 * TIME):
        assert await watch.wait() is True
    await watch.aclose()


async def test_watch_missing_refuses_what_it_cannot_watch(
    environment: Environment, tmp_path: Path
) -> None:
    """Nothing missing, an existing path, or a missing `present`: no watch."""
    (tmp_path / "exists").mkdir()
    assert await environment.fs.watch_missing([]) is None
    assert await environment.fs.watch_missing([tmp_path / "exists"]) is None
    assert await environment.fs.watch_missing([tmp_path / "n"], tmp_path / "gone") is None


async def test_watch_missing_closed_watch_reports_no_change(
    environment: Environment, tmp_path: Path
) -> None:
    """Closing a watch ends it: `wait()` returns False."""
    watch = await environment.fs.watch_missing([tmp_path / "never"])
    assert watch is not None
    await watch.aclose()
    async with asyncio.timeout(10 * TIME):
        assert await watch.wait() is False


async def test_discover_roots_lists_skill_files(environment: Environment, tmp_path: Path) -> None:
    """A root's SKILL.md files come back as raw text, with their agents/openai.yaml."""
    skill = tmp_path / "root" / "s" / "SKILL.md"
    skill.parent.mkdir(parents=True)
    skill.write_text("---\nname: s\ndescription: d\n---\n")
    (skill.parent / "agents").mkdir()
    (skill.parent / "agents" / "openai.yaml").write_text("policy: {}\n")
    root = PathUri.from_native(str(tmp_path / "root"))
    missing = PathUri.from_native(str(tmp_path / "missing"))
    found, absent = await environment.discovery.discover_roots(
        [CapabilityRootRequest(id="r", path=root), CapabilityRootRequest(id="m", path=missing)]
    )
    assert [f.instructions.contents for f in found.skills] == [skill.read_text()]
    assert found.skills[0].metadata is not None
    assert found.skills[0].metadata.contents == "policy: {}\n"
    assert found.plugin is None and found.error is None
    assert absent.error == (
        f"failed to inspect capability root {missing}: No such file or directory (os error 2)"
    )
    with pytest.raises(InvalidRequest):
        await environment.discovery.discover_roots(
            [CapabilityRootRequest(id=str(i), path=root) for i in range(129)]
        )


async def test_read_config_needs_a_key_path(environment: Environment, tmp_path: Path) -> None:
    """Asking for no key path at all is refused; a path nobody has gives no layers."""
    cwd = PathUri.from_native(str(tmp_path))
    with pytest.raises(InvalidParams):
        await environment.discovery.read_config(cwd, [], [])
    config = await environment.discovery.read_config(
        cwd, [["execserver-no-such-key"]], [["execserver-no-such-key"]]
    )
    assert config.config.layers == [] and config.requirements.layers == []
