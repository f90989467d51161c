"""Shell snapshot pieces without running a shell: when a snapshot applies, how a capture's
output is read, what is replayed, and the per-session cache."""

from __future__ import annotations

import asyncio

import pytest

from execserver.local import shell_snapshot as ss

MARK = "__execserver_snapshot_test__"


def capture_output(
    *, noise: bytes = b"", functions: str = "", aliases: str = "", options: str = "",
    shopts: str = "", environ: dict[str, str] | None = None,
) -> bytes:  # fmt: skip
    sep = f"\n{MARK}\n".encode()
    env = b"".join(f"{k}={v}".encode() + b"\0" for k, v in (environ or {}).items())
    sections = [functions, aliases, options, shopts]
    return noise + sep + sep.join(s.encode() for s in sections) + sep + env


def test_applies_only_to_the_shells_login_form() -> None:
    assert ss.applies(["/bin/bash", "-lc", "x"], "/bin/bash")
    assert ss.applies(["/bin/bash", "-lc", "x", "a0", "a1"], "/bin/bash")
    assert not ss.applies(["/bin/bash", "-lc"], "/bin/bash")
    assert not ss.applies(["/bin/bash", "-c", "x"], "/bin/bash")
    assert not ss.applies(["bash", "-lc", "x"], "/bin/bash")
    assert not ss.applies(["/usr/bin/bash", "-lc", "x"], "/bin/bash")


def test_supported_shells_are_case_sensitive() -> None:
    assert [
        name for name in ("bash", "zsh", "sh", "Bash", "dash", "", "fish") if ss.supported(name)
    ] == [
        "bash",
        "zsh",
        "sh",
    ]


def test_restore_argv_keeps_trailing_arguments() -> None:
    bash = ss.restore_argv("bash", ["/bin/bash", "-lc", "echo $0", "zero"])
    assert bash[:2] == ["/bin/bash", "-pc"] and bash[3:] == ["zero"]
    assert bash[2].startswith("set +o privileged\n") and bash[2].endswith("\necho $0")
    sh = ss.restore_argv("sh", ["/bin/sh", "-lc", "echo hi"])
    assert sh[:2] == ["/bin/sh", "-c"] and "privileged" not in sh[2]
    assert f". /dev/fd/{ss.SNAPSHOT_FD}" in sh[2] and ss.RESTORE_FAILED in sh[2]


def test_profile_noise_before_the_sections_is_ignored() -> None:
    output = capture_output(
        noise=b"profile says hi\0\n",
        functions="f () \n{ \n    :\n}\n",
        aliases="alias ll='ls -l'\n",
        options="errexit        \toff\nnoglob         \ton\nprivileged     \ton\n",
        shopts="extglob        \ton\nlogin_shell    \ton\n",
        environ={"A": "1", "NEW": "multi\nline", "PWD": "/x", "SHLVL": "1", "_": "/usr/bin/env"},
    )
    snapshot = ss.parse_capture("bash", MARK, output, {"A": "1"})
    assert snapshot is not None
    assert snapshot.exports == {"NEW": "multi\nline"}  # only what changed; never PWD & co
    assert snapshot.aliases == ["alias ll='ls -l'"]
    assert snapshot.options == ["noglob"]  # privileged describes how the shell was started
    assert snapshot.shopts == ["extglob"]


def test_sh_alias_listing_gets_the_alias_keyword() -> None:
    output = capture_output(aliases="ll='ls -l'\nalias la='ls -a'\n", shopts="x on\n")
    snapshot = ss.parse_capture("sh", MARK, output, {})
    assert snapshot is not None
    assert snapshot.aliases == ["alias ll='ls -l'", "alias la='ls -a'"]
    assert snapshot.shopts == []


@pytest.mark.parametrize(
    "output",
    [
        b"",
        b"no sections at all",
        capture_output()[: -len(MARK) - 2],
        capture_output() + f"\n{MARK}\n".encode(),
    ],
)
def test_unreadable_capture_output_is_a_failed_capture(output: bytes) -> None:
    assert ss.parse_capture("bash", MARK, output, {}) is None


def test_render_leaves_the_commands_own_variables_alone() -> None:
    snapshot = ss.Snapshot("bash", {"A": "it's", "B": "b"}, "", [], ["noglob"], [])
    text = snapshot.render({"B": "mine"}).decode()
    assert "export A='it'\\''s'\n" in text
    assert "B=" not in text
    assert text.rstrip().endswith("set -o noglob\n:") or text.endswith("set -o noglob\n:\n")


async def test_cache_captures_once_for_concurrent_waiters() -> None:
    cache = ss.SnapshotCache()
    calls = 0
    gate = asyncio.Event()

    async def capture() -> ss.Snapshot | None:
        nonlocal calls
        calls += 1
        await gate.wait()
        return ss.Snapshot("bash", {}, "", [], [], [])

    key: ss.SnapshotKey = ("s", "bash", "/bin/bash", b"")
    waiters = [asyncio.ensure_future(cache.get(key, capture)) for _ in range(5)]
    await asyncio.sleep(0)
    assert cache.lookup(key) == (False, None)
    gate.set()
    results = await asyncio.gather(*waiters)
    assert calls == 1 and all(r is results[0] for r in results)
    assert cache.lookup(key) == (True, results[0])


async def test_cache_remembers_failures_and_drops_the_least_recently_used() -> None:
    cache = ss.SnapshotCache(max_scopes=2)

    async def failed() -> ss.Snapshot | None:
        raise RuntimeError("capture crashed")

    keys: list[ss.SnapshotKey] = [(f"s{i}", "bash", "/bin/bash", b"") for i in range(3)]
    assert await cache.get(keys[0], failed) is None
    assert cache.lookup(keys[0]) == (True, None)
    await cache.get(keys[1], failed)
    cache.lookup(keys[0])  # used: keys[1] is now the oldest
    await cache.get(keys[2], failed)
    assert len(cache) == 2
    assert cache.lookup(keys[1]) == (False, None)
    assert cache.lookup(keys[0])[0] and cache.lookup(keys[2])[0]


async def test_a_cancelled_waiter_does_not_cancel_the_capture() -> None:
    cache = ss.SnapshotCache()
    gate = asyncio.Event()
    done = ss.Snapshot("bash", {}, "", [], [], [])

    async def capture() -> ss.Snapshot | None:
        await gate.wait()
        return done

    key: ss.SnapshotKey = ("s", "bash", "/bin/bash", b"")
    first = asyncio.ensure_future(cache.get(key, capture))
    second = asyncio.ensure_future(cache.get(key, capture))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second is done
    assert cache.lookup(key) == (True, done)
