"""`discover_roots` inspects the roots of one request a few at a time (each sandboxed root is
a fresh helper process), answers in the request's order, and lets a bug surface as itself."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from execserver.local.discovery import ROOT_DISCOVERY_CONCURRENCY, LocalExecutorDiscovery
from execserver.protocol.discovery import CapabilityRootDiscovery, CapabilityRootRequest
from execserver.protocol.pathuri import PathUri


def roots(count: int) -> list[CapabilityRootRequest]:
    return [
        CapabilityRootRequest(id=f"r{i}", path=PathUri.from_native(f"/tmp/root-{i}"))
        for i in range(count)
    ]


def discovery_with(inspect: Any) -> LocalExecutorDiscovery:
    discovery = LocalExecutorDiscovery(cast(Any, None), cast(Any, None))
    discovery._discover_root = inspect  # type: ignore[method-assign]
    return discovery


async def test_roots_are_inspected_a_few_at_a_time_in_order() -> None:
    running = 0
    peak = 0

    async def inspect(root: CapabilityRootRequest) -> CapabilityRootDiscovery:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(3):  # stay busy for a few loop turns so that others may start
            await asyncio.sleep(0)
        running -= 1
        return CapabilityRootDiscovery(
            id=root.id,
            path=root.path,
            plugin=None,
            skills=[],
            namespace_manifests=[],
            warnings=[],
            error=None,
        )

    answers = await discovery_with(inspect).discover_roots(roots(10))
    assert [answer.id for answer in answers] == [f"r{i}" for i in range(10)]
    assert peak == ROOT_DISCOVERY_CONCURRENCY


async def test_a_bug_in_one_root_ends_the_others_and_is_raised_as_itself() -> None:
    cancelled: list[str] = []

    async def inspect(root: CapabilityRootRequest) -> CapabilityRootDiscovery:
        if root.id == "r1":
            raise RuntimeError("boom")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(root.id)
            raise
        raise AssertionError("not reached")

    with pytest.raises(RuntimeError, match="boom"):
        await discovery_with(inspect).discover_roots(roots(3))
    assert sorted(cancelled) == ["r0", "r2"]
