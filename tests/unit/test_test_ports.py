"""The test harness's loopback port picker (tests/harness/ports.py)."""

from __future__ import annotations

import socket

import pytest

from tests.harness import ports


def _free_pair() -> int:
    """A port `p` with `p` and `p + 1` both free, below the ephemeral range."""
    ephemeral = ports._ephemeral_range()
    for first in range(ports._FIRST, ports._LAST - 1):
        if first in ephemeral or first + 1 in ephemeral:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", first))
                b.bind(("127.0.0.1", first + 1))
        except OSError:
            continue
        return first
    raise AssertionError("no two adjacent free ports")


def test_a_port_is_handed_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ports picked for one group of servers are not picked again for the next group even
    though none of them is bound yet (a fleet picks its nodes' ports, then its NATS cluster's)."""
    first = _free_pair()
    monkeypatch.setattr(ports, "_FIRST", first)
    monkeypatch.setattr(ports, "_LAST", first + 2)
    monkeypatch.setattr(ports, "_handed_out", set())
    assert sorted(ports.listen_ports(2)) == [first, first + 1]
    with pytest.raises(RuntimeError, match="no 1 free loopback ports"):
        ports.listen_ports(1)


def test_a_bound_port_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    first = _free_pair()
    monkeypatch.setattr(ports, "_FIRST", first)
    monkeypatch.setattr(ports, "_LAST", first + 2)
    monkeypatch.setattr(ports, "_handed_out", set())
    with socket.socket() as held:
        held.bind(("127.0.0.1", first))
        assert ports.listen_ports(1) == [first + 1]
