"""The cgroup v2 path (local/cgroup_v2.py) against a fake cgroupfs that applies the kernel's
rules (tests/harness/fake_cgroupfs.py): delegation, the no-internal-processes rule, limits,
OOM attribution, kills and cleanup. This host has cgroup v1 (and a libc without
`posix_spawnattr_setcgroup_np`), so the real v2 spawn is not exercised here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from execserver.local.cgroup import Limits, LimitsUnavailable
from execserver.local.cgroup_v2 import CgroupV2, V2Cgroup
from execserver.local.endings import termination_record
from tests.harness.fake_cgroupfs import FakeCgroupFs

SERVER = 4242
ALL = ["cpu", "memory", "pids"]


def delegated(
    tmp_path: Path, controllers: list[str], procs: list[int]
) -> tuple[FakeCgroupFs, Path]:
    fs = FakeCgroupFs(tmp_path / "cgroup", controllers)
    enable = " ".join(f"+{c}" for c in controllers)
    fs.write(fs.root / "cgroup.subtree_control", enable)
    service_slice = fs.make(fs.root / "system.slice")
    fs.write(service_slice / "cgroup.subtree_control", enable)  # the host delegates
    own = fs.make(service_slice / "executor.service", procs)
    return fs, own


def test_server_alone_moves_into_a_leaf_and_delegates(tmp_path: Path) -> None:
    fs, own = delegated(tmp_path, ALL, [SERVER])
    cgroups = CgroupV2.setup(fs, own, "execserver-4242", SERVER)
    assert cgroups.enforceable == {"memoryBytes", "pids", "cpus"}
    leaf = own / f"execserver-server-{SERVER}"
    assert fs.procs(leaf) == [SERVER] and fs.procs(own) == []
    assert set((own / "cgroup.subtree_control").read_text().split()) == set(ALL)
    base = own / "execserver-4242"
    assert set((base / "cgroup.subtree_control").read_text().split()) == set(ALL)
    assert cgroups.bases == [base]


def test_already_delegated_needs_no_move(tmp_path: Path) -> None:
    fs, own = delegated(tmp_path, ALL, [])
    fs.write(own / "cgroup.subtree_control", "+memory +pids +cpu")
    cgroups = CgroupV2.setup(fs, own, "execserver-1", SERVER)
    assert cgroups.enforceable == {"memoryBytes", "pids", "cpus"}
    assert not (own / f"execserver-server-{SERVER}").exists()


def test_shared_cgroup_tracks_but_refuses_limits(tmp_path: Path) -> None:
    """Other processes share our cgroup: no controller can be delegated (EBUSY), so limits are
    refused with a clear reason, while processes are still tracked and killed as a whole."""
    fs, own = delegated(tmp_path, ALL, [SERVER, 777])
    cgroups = CgroupV2.setup(fs, own, "execserver-1", SERVER)
    assert cgroups.enabled and cgroups.enforceable == frozenset()
    assert fs.procs(own) == [SERVER, 777]  # we did not move anybody
    with pytest.raises(LimitsUnavailable, match=r"memoryBytes.*not delegated"):
        cgroups.placement(Limits(memory_bytes=64 << 20))
    placement = cgroups.placement(None)
    assert placement.cgroup_fd is not None
    cgroup = placement.finish(spawned=True)
    assert cgroup is not None and (cgroups.base / cgroup.name).is_dir()


def test_only_some_controllers(tmp_path: Path) -> None:
    fs, own = delegated(tmp_path, ["pids"], [SERVER])
    cgroups = CgroupV2.setup(fs, own, "execserver-1", SERVER)
    assert cgroups.enforceable == {"pids"}
    cgroups.check(Limits(pids=10))
    with pytest.raises(LimitsUnavailable, match="cpus"):
        cgroups.check(Limits(pids=10, cpus=1.0))


def test_limits_written_before_the_spawn(tmp_path: Path) -> None:
    fs, own = delegated(tmp_path, ALL, [SERVER])
    cgroups = CgroupV2.setup(fs, own, "execserver-1", SERVER)
    placement = cgroups.placement(Limits(memory_bytes=64 << 20, pids=5, cpus=0.5))
    assert placement.cgroup_fd is not None
    directory = Path(os.readlink(f"/proc/self/fd/{placement.cgroup_fd}"))
    assert directory.parent == cgroups.base
    assert (directory / "memory.max").read_text() == str(64 << 20)
    assert (directory / "memory.swap.max").read_text() == "0"
    assert (directory / "pids.max").read_text() == "5"
    assert (directory / "cpu.max").read_text() == "50000 100000"
    cgroup = placement.finish(spawned=True)
    assert cgroup is not None and placement.cgroup_fd is None  # the fd is closed


def test_failed_spawn_leaves_no_cgroup(tmp_path: Path) -> None:
    fs, own = delegated(tmp_path, ALL, [SERVER])
    cgroups = CgroupV2.setup(fs, own, "execserver-1", SERVER)
    placement = cgroups.placement(Limits(pids=5))
    assert placement.finish(spawned=False) is None
    assert fs.children(cgroups.base) == []


def test_oom_attribution_and_peak(tmp_path: Path) -> None:
    fs, own = delegated(tmp_path, ALL, [SERVER])
    cgroups = CgroupV2.setup(fs, own, "execserver-1", SERVER)
    cgroup = cgroups.placement(Limits(memory_bytes=64 << 20)).finish(spawned=True)
    assert isinstance(cgroup, V2Cgroup)
    assert cgroup.oom_kills() == 0
    fs.set_file(cgroup.directory / "memory.events", "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    fs.set_file(cgroup.directory / "memory.peak", f"{64 << 20}\n")
    assert cgroup.oom_kills() == 1 and cgroup.peak_memory() == 64 << 20
    # A shell whose child was the victim exits 137 by itself: still `oom`.
    record = termination_record(
        status=137 << 8,
        usage=None,
        end_cause=None,
        oom_kills=cgroup.oom_kills(),
        sandbox_denied=False,
        peak_memory=cgroup.peak_memory(),
    )
    assert (record.reason, record.signal, record.max_rss_bytes) == ("oom", None, 64 << 20)


def test_kill_and_close(tmp_path: Path) -> None:
    fs, own = delegated(tmp_path, ALL, [SERVER])
    cgroups = CgroupV2.setup(fs, own, "execserver-1", SERVER)
    first = cgroups.placement(None).finish(spawned=True)
    second = cgroups.placement(None).finish(spawned=True)
    assert isinstance(first, V2Cgroup) and isinstance(second, V2Cgroup)
    fs.write(first.directory / "cgroup.procs", "1001")
    fs.write(second.directory / "cgroup.procs", "1002")
    assert first.remove() is False  # busy while it has processes
    first.kill()
    assert fs.killed == [first.directory] and first.pids() == []
    assert first.remove() is True
    cgroups.close()  # kills and removes what is left, then the base
    assert second.directory in fs.killed
    assert not cgroups.base.exists()
