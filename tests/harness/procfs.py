"""Facts about live processes from /proc, for hygiene assertions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys


def stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].decode().split()


def is_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (zombies included)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def is_watchdog(pid: int) -> bool:
    """The server's own crash watchdog (local/crash_guard.py), not something a client started."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"execserver/local/watchdog.py" in f.read()
    except OSError:
        return False


def managed_children(pid: int) -> list[int]:
    """A server's children but its crash watchdog."""
    return [child for child in children(pid) if not is_watchdog(child)]


def zombies_of(pid: int) -> list[int]:
    return [c for c in children(pid) if (stat_fields(c) or ["?"])[0] == "Z"]


def pids_with_marker(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (tests tag their children with it)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if marker.encode() in cmdline and is_alive(int(entry)):
            found.append(int(entry))
    return found


def sleeper(marker: str, seconds: int = 60) -> list[str]:
    """argv of a single long-lived process whose command line carries `marker` (it never forks,
    so counting processes by marker is exact)."""
    return [sys.executable, "-c", f"import time; time.sleep({seconds})", marker]


async def wait_for_marked(marker: str, count: int, timeout: float = 10.0) -> list[int]:
    """Pids carrying `marker`, once there are exactly `count` of them (a freshly exec'd process
    may briefly show an empty command line)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        pids = pids_with_marker(marker)
        if len(pids) == count or loop.time() > deadline:
            return pids
        await asyncio.sleep(0.02)


async def wait_all_dead(pids: list[int], timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(is_alive(pid) for pid in pids):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def loopback_queued_bytes(port: int) -> int:
    """Bytes waiting in the kernel on TCP connections to or from `port` in this network
    namespace: sent but not yet read by the peer (send queue plus receive queue)."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                ports = {int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)}
                if port in ports and fields[3] == "01":  # established, not the listener
                    tx, rx = fields[4].split(":")
                    total += int(tx, 16) + int(rx, 16)
    return total
