"""Every deliberate difference from codex exec-server 0.171.0, in one place, with the reason.

Each entry of `DELIBERATE_DIFFERENCES` has a test below that pins our behaviour and, where the
reference is deterministic, shows the reference really does behave the other way (so the list
cannot silently go stale). docs/protocol.md summarises this list.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TIME, ServerProcess, require_reference
from tests.harness.procfs import (
    is_alive,
    pids_with_marker,
    sleeper,
    stat_fields,
    wait_all_dead,
    wait_for_marked,
)
from tests.harness.servers import ours_command, reference_command
from tests.harness.stdio import StdioServer
from tests.harness.wire import WireClient, process_params

DELIBERATE_DIFFERENCES: dict[str, str] = {
    "pty_signal_exit_code": (
        "A PTY child killed by signal N reports 128+N like a pipe child; the reference reports 1, "
        "which hides that it was a signal death."
    ),
    "terminate_kills_whole_tree": (
        "process/terminate kills every descendant, including ones that left the process group "
        "with setsid; the reference kills only the child (and, sometimes, its group)."
    ),
    "requests_are_pipelined": (
        "Requests on one connection run concurrently: a long-poll process/read never delays "
        "unrelated requests. The reference's default (--concurrent-requests 1) serialises them; "
        "we accept the flag and ignore it."
    ),
    "output_always_precedes_exit": (
        "Output the child wrote before exiting always gets lower seqs than its exit; the "
        "reference sometimes numbers the exit first."
    ),
    "environment_info_identity": (
        "environment/info advertises false for every capability not implemented, our own "
        "providerId, and no prependPathDirs: the reference reports its package's codex-path "
        "directory (a bundled rg) for the app-server's login_shell_package_path feature; we "
        "ship no helper tools (docs/protocol.md, prependPathDirs)."
    ),
    "copy_onto_itself_refused": (
        "fs/copy of a file onto itself (same path, a symlink to it, or a hard link of it) is an "
        "error and the file is untouched; the reference truncates it to zero bytes."
    ),
    "write_file_is_atomic": (
        "fs/writeFile writes a temporary file and renames it over a regular file, so the path "
        "never holds a partial file; the path gets a new inode, so another hard link keeps the "
        "old content. The reference writes in place."
    ),
    "process_close_stdin_extension": (
        "process/closeStdin (an extension) gives a pipe_stdin process EOF, so `cat`, `wc` or "
        "`sha256sum` can finish; the reference has no way to end a process's input (-32601)."
    ),
    "resume_same_principal": (
        "With --ws-auth, a session can be resumed only by the principal that created it (the "
        "same JWT `sub`, else the same token); anyone else is told the id is unknown. The "
        "reference lets any authenticated client take over any session. Tested in "
        "tests/server/test_auth.py."
    ),
    "remote_listen_needs_auth": (
        "A non-loopback --listen without --ws-auth refuses to start unless "
        "--allow-unauthenticated-remote is given; the reference serves anyone who can connect. "
        "Tested in tests/server/test_auth.py."
    ),
    "stdio_invalid_utf8_line_answered": (
        "Over stdio, a line that is not UTF-8 is answered with the usual -1 parse error and the "
        "server goes on; the reference exits silently (status 0), ending the session."
    ),
    "stdio_violation_ends_the_server": (
        "Over stdio, a protocol violation (a response object from the client) ends the server "
        "(status 0) as it drops a WebSocket connection; the reference keeps running but never "
        "answers again."
    ),
    "process_endings_extension": (
        'A client that sends `extensions: ["processEndings"]` in initialize gets termination '
        "records on process/exited and process/read, server-side timeoutMs/idleTimeoutMs and "
        "limits on process/start, process/wait and process/waitingForInput (docs/protocol.md, "
        "Extensions); without the field every message has the reference's shape. The reference "
        "ignores the fields and answers process/wait with -32601."
    ),
    "session_close_extension": (
        "session/close (an extension) kills the session's processes and forgets it at once, so a "
        "client that is done (every `execserver` CLI call) leaves nothing detached for the "
        "resume window; the reference has no way to end a session (-32601)."
    ),
    "fs_attributes_extension": (
        "fs/getAttributes and fs/setAttributes (extensions) read and set a file's permission "
        "bits and times, so `execserver cp` keeps them like scp; the reference answers -32601."
    ),
    "listen_wss_tls": (
        "--listen wss://IP:PORT with --tls-cert/--tls-key serves TLS (re-reading the files when "
        "they change); the reference refuses wss:// and has no TLS. Tested in "
        "tests/cli/test_tls.py."
    ),
    "weak_token_files_refused": (
        "A --ws-token-file others can write, or holding a token under 16 bytes, refuses to start "
        "(a world-readable one is warned about); the reference accepts both. Tested in "
        "tests/cli/test_tokens.py."
    ),
    "special_files_never_hang": (
        "fs/writeFile and fs/copy onto a FIFO without a reader fail with ENXIO, and waits on "
        "special files end after --fs-wait-timeout; the reference blocks. Tested in "
        "tests/server/test_hardening.py."
    ),
    "memory_budget": (
        "fs/readFile, buffered http/request bodies and pending stdin stop at their share of "
        "--max-memory with a clear error; the reference has no cap. Tested in "
        "tests/server/test_hardening.py."
    ),
    "jwt_sub_must_be_string": (
        "A JWT whose sub is not a string is refused (RFC 7519); the reference accepts numbers "
        "and booleans. Tested in tests/server/test_auth.py."
    ),
    "child_connections_refused": (
        "Processes the executor started are refused on its loopback listener (403). Tested in "
        "tests/server/test_hardening.py."
    ),
    "writable_grant_symlink_refused": (
        "A writable grant through a symlink leading out of its directory is refused. Tested in "
        "tests/server/test_hardening.py."
    ),
    "detached_sessions_make_room": (
        "At the session cap an idle detached session gives way to a new one. Tested in "
        "tests/server/test_limits.py and tests/server/test_hardening.py."
    ),
    "larger_output_chunks": (
        "Pipe output is read up to 64 KiB at a time (the reference: 8 KiB), so fewer, larger "
        "process/output notifications carry the same bytes."
    ),
    "network_proxy_transparent_tcp_refused": (
        "A `networkProxy` asking for transparent TCP (`proxy.transparentTcp`) is refused with "
        "-32602 (networkProxyTransparentTcp is false: no TUN device and userspace TCP stack "
        "here). The reference starts the process, and on a host without a bubblewrap it supports "
        "its helper panics (exit 101, sandboxDenied)."
    ),
    "network_proxy_socks5_ip_literal_names": (
        "A SOCKS5 CONNECT naming an IP address as a host name (ATYP 3, e.g. `127.0.0.1`) "
        "connects like the same address sent as an address; the reference's proxy allows it "
        "and then answers 05 (connection refused) without connecting."
    ),
    "network_proxy_socks5_udp_answers_delivered": (
        "A SOCKS5 UDP relay sends a destination's answer back to the client, with the header "
        "naming its source (RFC 1928). The reference checks the answer against the policy like "
        "we do and then sends it back to the destination it came from (rama-socks5 "
        "0.3.0-alpha.4 relays both directions southwards), so its clients never get one."
    ),
    "network_proxy_socks5_udp_ipv6_relayed": (
        "An allowed SOCKS5 UDP datagram to an IPv6 address is relayed (from an IPv6 socket). "
        "The reference decides on it, fails to send it from its IPv4-only relay socket and "
        "ends the association."
    ),
    "credential_broker_http1_only": (
        "Inside a tunnel the credential broker intercepts, our proxy speaks HTTP/1.1 only (ALPN "
        "http/1.1); the reference also offers HTTP/2. Clients fall back; answers and swaps are "
        "the same. Tested in tests/wire/test_credential_broker.py."
    ),
    "credential_masking_masks": (
        "With `proxy.credentialMasking`, GH_TOKEN, GITHUB_TOKEN, GH_ENTERPRISE_TOKEN, "
        "GITHUB_ENTERPRISE_TOKEN (with GH_HOST), OPENAI_API_KEY and the variables of custom "
        "providers reach every child as dummies, whatever it runs. The reference 0.171 masks "
        "only `bash -c` commands (the app-server's non-login form; compared in "
        "network_proxy_credential_masking_bash): a program run directly (`/usr/bin/env`), "
        "`sh -c`, a login shell with or without a shell snapshot get the real values. A custom "
        "provider the broker cannot use (no env keys, no patterns, no destination, a pattern "
        "matching the empty string, a non-https prefix, ...) is refused with -32602; the "
        "reference accepts it and silently masks nothing for it. Tested in "
        "tests/server/test_credential_masking.py."
    ),
}


async def exit_code(url: str, params: dict[str, Any]) -> int:
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request("process/start", params)
        events = await client.process_events(params["processId"])
        return next(e["params"]["exitCode"] for e in events if e["method"] == "process/exited")


# Differential cases (tests/wire/cases_*.py) whose outcome differs on purpose: each maps to the
# reason and to a check of what our server does instead. The differential runner skips them;
# `test_deliberate_case` below shows that the outcomes really differ and that ours is as stated.
DELIBERATE_CASES: dict[str, tuple[str, str]] = {
    "sandbox_enforce_managed_network": (
        "enforceManagedNetwork with a sandbox is refused up front (-32602): there is no managed "
        "proxy here; the reference starts the process and its helper panics (exit 101).",
        "managed network enforcement needs a network proxy",
    ),
    "sandbox_legacy_landlock": (
        "useLegacyLandlock is ignored: every restricted filesystem runs under bubblewrap; the "
        "reference's helper panics (exit 101) instead.",
        "Read-only file system",
    ),
    "sandbox_path_entry_naming_a_file": (
        "A `path` permission entry naming a file grants access to that file; the reference's "
        "helper crashes (exit 101) trying to protect `<file>/.git`.",
        '"exitCode": 0',
    ),
    "sandbox_fs_path_entry_naming_a_file": (
        "The same for fs methods: a file entry works (the reference fails with the helper crash).",
        '"result": {}',
    ),
    "sandbox_glob_deny_entries": (
        "Glob patterns we cannot expand safely (brace alternatives, no non-root prefix) refuse "
        "the request up front; the reference starts the process, which fails with exit 1.",
        "failed to prepare process sandbox: unreadable glob",
    ),
    "sandbox_protected_git_symlink_refuses_to_run": (
        "A protected name (`.git`) that is a symlink in a writable root refuses the request up "
        "front; the reference starts the process, which fails with exit 1.",
        "failed to prepare process sandbox: cannot enforce sandbox read-only path",
    ),
    "sandbox_read_only_path_crossing_writable_symlink": (
        "Any read-only path (a read entry, a protected name) that crosses a symlink inside a "
        "writable root, `/` included, refuses the request up front (-32602 sandboxPreparation, "
        "the reference's wording); the reference starts the process, which fails with exit 1 "
        "(sandboxDenied).",
        "because it crosses writable symlink",
    ),
    "sandbox_spawn_failures_reported_up_front": (
        "Under a sandbox, a program that cannot be started (not found, not executable, a "
        "directory) fails the start with the same typed error as without a sandbox "
        "(spawnNotFound, spawnPermissionDenied, the PTY texts); the reference starts its helper, "
        "which panics (exit 101, sandboxDenied: true), reporting a missing program as a denial.",
        '"kind": "spawnNotFound"',
    ),
    "http_requests_wait_in_line": (
        "http/request never holds back the connection's later requests (it runs concurrently, "
        "like a long poll); the reference answers them only after the request's headers arrive.",
        'true,\n [\n  "status",\n  "http"',
    ),
    "http_request_header_values_kept_verbatim": (
        "Blanks around a request header value are not sent (HTTP's optional whitespace is not "
        "part of the value, and the HTTP/1.1 writer refuses it); the reference sends them.",
        "x-v: padded",
    ),
    "http_malformed_responses": (
        "A response header folded over two lines (obsolete line folding) is accepted and "
        "unfolded; the reference's client rejects the whole response.",
        '"value": "a b"',
    ),
    "sandbox_profile_empty_entries_and_root_deny": (
        "A policy that leaves nothing to run fails with bubblewrap's own error (exit 1); the "
        "reference's helper panics (exit 101) and so reports sandboxDenied.",
        "bwrap: ",
    ),
}


def test_deliberate_differences_are_documented() -> None:
    """docs/protocol.md names every deliberate difference."""
    from tests.harness.servers import REPO_ROOT

    text = (REPO_ROOT / "docs/protocol.md").read_text()
    for name in [*DELIBERATE_DIFFERENCES, *DELIBERATE_CASES]:
        assert f"`{name}`" in text, name


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(DELIBERATE_CASES))
async def test_deliberate_case(
    name: str, ours: ServerProcess, reference: ServerProcess, tmp_path: Path
) -> None:
    """The case's outcome differs from the reference's, and ours does what the list says."""
    from tests.harness.differential import observe
    from tests.wire.cases_core import dumps
    from tests.wire.test_differential import ALL_CASES

    require_reference()
    workdir = tmp_path / "case"
    theirs = dumps(await observe(ALL_CASES[name], reference.url, workdir, "reference"))
    import shutil

    shutil.rmtree(workdir)
    mine = dumps(await observe(ALL_CASES[name], ours.url, workdir, "ours"))
    assert mine != theirs
    assert DELIBERATE_CASES[name][1] in mine


async def test_pty_signal_exit_code(ours: ServerProcess) -> None:
    params = process_params("t", ["sh", "-c", "kill -INT $$"], tty=True)
    assert await exit_code(ours.url, params) == 130


@pytest.mark.reference
async def test_pty_signal_exit_code_reference(reference: ServerProcess) -> None:
    require_reference()
    params = process_params("t", ["sh", "-c", "kill -INT $$"], tty=True)
    assert await exit_code(reference.url, params) == 1


def _session_leader(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[3] == str(pid)


async def _terminate_tree(url: str) -> tuple[int, int, str]:
    """Start a tree with a setsid grandchild, terminate it; return (shell pid, sleeper pid,
    marker) once the shell is gone.

    Both the shell (the executor starts it in a session of its own) and the sleeper must lead
    their sessions before the terminate: until the sleeper has called setsid, the second marked
    pid is the shell's transient fork, still in the shell's group, and a kill of that group
    takes it too (the cause of an earlier flaky failure)."""
    marker = f"deliberate-{uuid.uuid4().hex}"
    inner = " ".join(f"'{a}'" for a in sleeper(marker))
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request(
            "process/start", process_params("tree", ["sh", "-c", f"setsid {inner} & wait"])
        )
        pids = await wait_for_marked(marker, 2)  # the shell and the setsid'd sleeper
        for _ in range(250):
            if len(pids) == 2 and all(_session_leader(pid) for pid in pids):
                break
            await asyncio.sleep(0.02)
            pids = pids_with_marker(marker)
        assert len(pids) == 2 and all(_session_leader(pid) for pid in pids), pids
        shell, sleeper_pid = sorted(pids, key=lambda pid: b"sh" not in _argv0(pid))
        await client.request("process/terminate", {"processId": "tree"})
        await client.process_events("tree")
    assert await wait_all_dead([shell], 10 * TIME)
    return shell, sleeper_pid, marker


def _argv0(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return os.path.basename(file.read().split(b"\0", 1)[0])
    except OSError:
        return b""


async def test_terminate_kills_whole_tree(ours: ServerProcess) -> None:
    _, sleeper_pid, marker = await _terminate_tree(ours.url)
    assert await wait_all_dead([sleeper_pid], 10 * TIME)
    assert pids_with_marker(marker) == []


@pytest.mark.reference
async def test_terminate_kills_whole_tree_reference(reference: ServerProcess) -> None:
    require_reference()
    _, sleeper_pid, marker = await _terminate_tree(reference.url)
    try:
        # The reference kills the shell's group only: the setsid'd sleeper survives.
        assert is_alive(sleeper_pid)
    finally:
        leftovers = pids_with_marker(marker)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await wait_all_dead(leftovers)


async def _status_during_long_poll(url: str) -> bool:
    """True if environment/status is answered while a 1.5 s long poll is pending."""
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request("process/start", process_params("quiet", ["sleep", "5"]))
        await client.send(
            {
                "id": "poll",
                "method": "process/read",
                "params": {"processId": "quiet", "waitMs": 1500},
            }
        )
        await client.send({"id": "status", "method": "environment/status"})
        await client.wait_for(lambda m: m.get("id") in ("poll", "status"), timeout=5)
        first = next(m["id"] for m in client.messages if m.get("id") in ("poll", "status"))
        await client.response("poll", timeout=5)
        await client.request("process/terminate", {"processId": "quiet"})
        return first == "status"


async def test_requests_are_pipelined(ours: ServerProcess) -> None:
    assert await _status_during_long_poll(ours.url) is True


@pytest.mark.reference
async def test_requests_are_pipelined_reference(reference: ServerProcess) -> None:
    require_reference()
    assert await _status_during_long_poll(reference.url) is False


async def _start(url: str, params: dict[str, Any]) -> dict[str, Any]:
    """Start a process; wait for its close if it started. Returns the start response."""
    async with await WireClient.connect(url) as client:
        await client.initialize()
        response = await client.request("process/start", params)
        if "result" in response:
            await client.process_events(params["processId"])
        return response


async def test_output_always_precedes_exit(ours: ServerProcess) -> None:
    async with await WireClient.connect(ours.url) as client:
        await client.initialize()
        for index in range(40):
            await client.request("process/start", process_params(f"p{index}", ["echo", "x"]))
        for index in range(40):
            events = sorted(
                await client.process_events(f"p{index}"), key=lambda m: m["params"]["seq"]
            )
            assert [e["method"] for e in events] == [
                "process/output",
                "process/exited",
                "process/closed",
            ]


async def test_environment_info_identity(ours: ServerProcess) -> None:
    async with await WireClient.connect(ours.url) as client:
        info = (await client.initialize())["result"]["environmentInfo"]
        assert info["prependPathDirs"] == []
        enabled = sorted(name for name, value in info["capabilities"].items() if value)
        assert enabled == [
            "capabilityDiscoverySandbox",
            "capabilityDiscoveryV2",
            "credentialMasking",
            "credentialMaskingCustomProviders",
            "environmentConfigRead",
            "fileWriteStreaming",
            "fsWatchMissing",
            "httpHeaderEnvVars",
            "linuxApprovedRootWritePreservesRestrictions",
            "linuxRootWritePreservesDevices",
            "networkProxyLaunch",
            "networkProxyReviewDomains",
            "sandboxedFileStreaming",
            "shellSnapshotV2",
        ]
        assert info["providerId"].startswith("sha256:")


async def test_environment_info_identity_reference(reference: ServerProcess) -> None:
    """The reference reports one directory: `codex-path` beside its `bin/`, holding `rg`."""
    async with await WireClient.connect(reference.url) as client:
        info = (await client.initialize())["result"]["environmentInfo"]
    [uri] = info["prependPathDirs"]
    directory = Path(uri.removeprefix("file://"))
    assert directory.name == "codex-path" and (directory.parent / "bin" / "codex").is_file()
    rg = directory / "rg"
    assert rg.is_file() and os.access(rg, os.X_OK)


async def test_larger_output_chunks(ours: ServerProcess) -> None:
    async with await WireClient.connect(ours.url) as client:
        await client.initialize()
        code = (
            "import sys, time; sys.stdout.buffer.write(b'x' * 60000); "
            "sys.stdout.flush(); time.sleep(0.2)"
        )
        await client.request("process/start", process_params("big", ["python3", "-c", code]))
        events = await client.process_events("big")
        sizes = [
            len(base64.b64decode(e["params"]["chunk"]))
            for e in events
            if e["method"] == "process/output"
        ]
        assert sum(sizes) == 60000 and max(sizes) > 8192


async def _copy_onto_itself(url: str, tmp: Path) -> list[tuple[object, int]]:
    """Copy f onto f, onto a symlink to it and onto a hard link of it; (response, size after)."""
    out: list[tuple[object, int]] = []
    async with await WireClient.connect(url) as client:
        await client.initialize()
        for index, kind in enumerate(("same", "symlink", "hardlink")):
            source = tmp / f"f{index}"
            source.write_bytes(b"precious")
            destination = source
            if kind == "symlink":
                destination = tmp / f"link{index}"
                destination.symlink_to(source)
            elif kind == "hardlink":
                destination = tmp / f"hard{index}"
                os.link(source, destination)
            response = await client.request(
                "fs/copy",
                {
                    "sourcePath": f"file://{source}",
                    "destinationPath": f"file://{destination}",
                    "recursive": False,
                },
            )
            out.append((response.get("error", response.get("result")), source.stat().st_size))
    return out


async def test_copy_onto_itself_refused(ours: ServerProcess, tmp_path: Path) -> None:
    results = await _copy_onto_itself(ours.url, tmp_path)
    error = {"code": -32600, "message": "fs/copy sourcePath and destinationPath are the same file"}
    assert results == [(error, 8), (error, 8), (error, 8)]


@pytest.mark.reference
async def test_copy_onto_itself_refused_reference(reference: ServerProcess, tmp_path: Path) -> None:
    require_reference()
    assert await _copy_onto_itself(reference.url, tmp_path) == [({}, 0), ({}, 0), ({}, 0)]


async def _write_with_hard_link(url: str, tmp: Path) -> tuple[bytes, bytes, bool]:
    """Write `new` to a file that has a second hard link: (file, other link, same inode?)."""
    target, other = tmp / "a", tmp / "b"
    target.write_bytes(b"old")
    os.link(target, other)
    inode = target.stat().st_ino
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request("fs/writeFile", {"path": f"file://{target}", "dataBase64": "bmV3"})
    return target.read_bytes(), other.read_bytes(), target.stat().st_ino == inode


async def test_write_file_is_atomic(ours: ServerProcess, tmp_path: Path) -> None:
    assert await _write_with_hard_link(ours.url, tmp_path) == (b"new", b"old", False)


@pytest.mark.reference
async def test_write_file_is_atomic_reference(reference: ServerProcess, tmp_path: Path) -> None:
    require_reference()
    assert await _write_with_hard_link(reference.url, tmp_path) == (b"new", b"new", True)


async def _close_stdin_of_cat(url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request("process/start", process_params("cat", ["cat"], pipeStdin=True))
        await client.request(
            "process/write",
            {"processId": "cat", "chunk": base64.b64encode(b"x\n").decode(), "writeId": "1"},
        )
        response = await client.request("process/closeStdin", {"processId": "cat"})
        if "error" in response:
            await client.request("process/terminate", {"processId": "cat"})
        return response, await client.process_events("cat")


async def test_process_close_stdin_extension(ours: ServerProcess) -> None:
    response, events = await _close_stdin_of_cat(ours.url)
    assert response["result"] == {"status": "accepted"}
    exits = [e["params"]["exitCode"] for e in events if e["method"] == "process/exited"]
    assert exits == [0]


@pytest.mark.reference
async def test_process_close_stdin_extension_reference(reference: ServerProcess) -> None:
    require_reference()
    response, _ = await _close_stdin_of_cat(reference.url)
    assert response["error"]["code"] == -32601


async def _stdio_after(
    command: list[str], line: bytes, *, exit_wait: float = 1.0
) -> tuple[int | None, list[dict[str, Any]]]:
    """Send `line`, then a request; return (exit status or None if still running `exit_wait`
    seconds after the answers, what came back)."""
    server = await StdioServer.start(command)
    try:
        await server.write(line)
        await server.send({"id": 7, "method": "initialize", "params": {"clientName": "d"}})
        answers: list[dict[str, Any]] = []
        with contextlib.suppress(EOFError, TimeoutError):
            while len(answers) < 2:
                answers.append(await server.read(timeout=5 * TIME))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.process.wait(), exit_wait)
        return server.process.returncode, answers
    finally:
        await server.kill()


async def test_stdio_invalid_utf8_line_answered() -> None:
    status, answers = await _stdio_after(ours_command("stdio"), b"\xff\xfe{}\n")
    assert status is None
    assert answers[0]["id"] == -1 and answers[0]["error"]["code"] == -32600
    assert answers[1]["id"] == 7 and "result" in answers[1]


@pytest.mark.reference
async def test_stdio_invalid_utf8_line_answered_reference() -> None:
    require_reference()
    status, answers = await _stdio_after(reference_command("stdio"), b"\xff\xfe{}\n")
    assert (status, answers) == (0, [])


async def test_stdio_violation_ends_the_server() -> None:
    status, answers = await _stdio_after(
        ours_command("stdio"), b'{"id":1,"result":{}}\n', exit_wait=10 * TIME
    )
    assert (status, answers) == (0, [])


@pytest.mark.reference
async def test_stdio_violation_ends_the_server_reference() -> None:
    require_reference()
    status, answers = await _stdio_after(reference_command("stdio"), b'{"id":1,"result":{}}\n')
    assert (status, answers) == (None, [])


_PROXY = {
    "enabled": True,
    "enableSocks5": True,
    "enableSocks5Udp": False,
    "allowUpstreamProxy": False,
    "dangerouslyAllowAllUnixSockets": False,
    "mode": "limited",
    "allowLocalBinding": False,
}


_NETWORK_ONLY = {
    "permissions": {
        "type": "managed",
        "file_system": {"type": "unrestricted"},
        "network": "restricted",
    },
    "windowsSandboxLevel": "disabled",
}


async def _network_proxy_launch(
    url: str, proxy: dict[str, Any] | None = None, **extra: Any
) -> tuple[dict[str, Any], str, int | None]:
    """Start `env` with a well-formed networkProxy; (start response, its output, exit code)."""
    launch = {"proxy": {**_PROXY, **(proxy or {})}}
    params = process_params("np", ["/usr/bin/env"], networkProxy=launch, **extra)
    async with await WireClient.connect(url) as client:
        await client.initialize()
        response = await client.request("process/start", params)
        if "error" in response:
            return response, "", None
        events = await client.process_events("np")
        output = b"".join(
            base64.b64decode(e["params"]["chunk"])
            for e in events
            if e["method"] == "process/output"
        )
        code = next(e["params"]["exitCode"] for e in events if e["method"] == "process/exited")
        return response, output.decode(), code


_TRANSPARENT = {
    "proxy": {"transparentTcp": True},
    "sandbox": _NETWORK_ONLY,
    "enforceManagedNetwork": True,
}


async def test_network_proxy_transparent_tcp_refused(ours: ServerProcess) -> None:
    response, _, _ = await _network_proxy_launch(ours.url, **_TRANSPARENT)
    assert response["error"] == {
        "code": -32602,
        "message": "transparent TCP is not supported by this executor "
        "(capability networkProxyTransparentTcp is false)",
    }


@pytest.mark.reference
async def test_network_proxy_transparent_tcp_refused_reference(reference: ServerProcess) -> None:
    require_reference()
    response, output, code = await _network_proxy_launch(reference.url, **_TRANSPARENT)
    assert "result" in response  # started; on this host its helper then panics
    assert code == 101
    assert "transparent TCP requires a supported distro bubblewrap" in output


_SECRET = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"


async def test_credential_masking_masks(ours: ServerProcess) -> None:
    response, output, code = await _network_proxy_launch(
        ours.url, {"credentialMasking": True}, env={"GITHUB_TOKEN": _SECRET}
    )
    assert "result" in response and code == 0
    env = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    assert "/proxy/ca-bundle-" in env["SSL_CERT_FILE"]
    dummy = env["GITHUB_TOKEN"]
    assert dummy != _SECRET and dummy.startswith("ghp_masked") and len(dummy) == len(_SECRET)
    assert env["CODEX_NETWORK_PROXY_CREDENTIAL_BROKER_ACTIVE"] == "1"


@pytest.mark.reference
async def test_credential_masking_masks_reference(reference: ServerProcess) -> None:
    require_reference()
    response, output, code = await _network_proxy_launch(
        reference.url, {"credentialMasking": True}, env={"GITHUB_TOKEN": _SECRET}
    )
    assert "result" in response and code == 0
    env = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    assert "/proxy/ca-bundle-" in env["SSL_CERT_FILE"]
    assert env["GITHUB_TOKEN"] == _SECRET  # a direct program: nothing was masked
    assert "CODEX_NETWORK_PROXY_CREDENTIAL_BROKER_ACTIVE" not in env


async def _netclient(url: str, ops: list[str], proxy: dict[str, Any]) -> list[Any]:
    """Run tests/harness/netclient.py with `ops` under a managed proxy; its result lines."""
    import json
    import sys

    from tests.wire.cases_network import NETCLIENT

    launch = {"proxy": {**_PROXY, "mode": "full", **proxy}}
    params = process_params("nc", [sys.executable, NETCLIENT, *ops], networkProxy=launch)
    async with await WireClient.connect(url) as client:
        await client.initialize()
        response = await client.request("process/start", params)
        assert "result" in response, response
        events = await client.process_events("nc", timeout=30 * TIME)
    output = b"".join(
        base64.b64decode(e["params"]["chunk"]) for e in events if e["method"] == "process/output"
    )
    return [json.loads(line)["result"] for line in output.decode().splitlines()]


async def _socks_to_literal_name(url: str) -> list[Any]:
    from tests.harness.httpserver import http_test_server, respond

    async with http_test_server() as server:
        server.route("/socks", respond(200, [], b"reached"))
        port = str(server.port)
        ops = ["socks-name", "127.0.0.1", port, "socks", "127.0.0.1", port]
        return await _netclient(url, ops, {"domains": {"127.0.0.1": "allow"}})


async def test_network_proxy_socks5_ip_literal_names(ours: ServerProcess) -> None:
    as_name, as_address = await _socks_to_literal_name(ours.url)
    assert as_name["reply"] == 0 and as_name["tunnel"]["body"] == "reached"
    assert as_address == as_name


@pytest.mark.reference
async def test_network_proxy_socks5_ip_literal_names_reference(reference: ServerProcess) -> None:
    require_reference()
    as_name, as_address = await _socks_to_literal_name(reference.url)
    assert as_name == {"greeting": "0500", "reply": 5}
    assert as_address["reply"] == 0 and as_address["tunnel"]["body"] == "reached"


async def _udp_echo_through(url: str) -> tuple[Any, Any]:
    """An allowed datagram through the SOCKS5 UDP relay to a UDP echo server: netclient's
    result and what the echo server got."""
    from tests.harness.udpecho import udp_echo
    from tests.wire.cases_network import mask_udp

    async with udp_echo() as echo:
        ops = ["socks-udp-relay", "bound", str(echo.port), "127.0.0.1"]
        proxy = {"enableSocks5Udp": True, "domains": {"127.0.0.1": "allow"}}
        (result,) = await _netclient(url, ops, proxy)
        return mask_udp(echo, result), mask_udp(echo, [list(item) for item in echo.received])


async def test_network_proxy_socks5_udp_answers_delivered(ours: ServerProcess) -> None:
    result, received = await _udp_echo_through(ours.url)
    assert result["end"] == "echo relayed"
    assert result["answers"] == [["1 127.0.0.1:<port>", "echo 0:127.0.0.1"]]
    assert received == [["127.0.0.1", "0:127.0.0.1"]]


@pytest.mark.reference
async def test_network_proxy_socks5_udp_answers_delivered_reference(
    reference: ServerProcess,
) -> None:
    require_reference()
    result, received = await _udp_echo_through(reference.url)
    assert result["end"] == "echo relayed"  # the echo was relayed: back to the echo server
    assert result["answers"] == []
    assert received == [["127.0.0.1", "0:127.0.0.1"], ["127.0.0.1", "echo 0:127.0.0.1"]]


async def _udp_to_ipv6(url: str) -> tuple[Any, Any]:
    """A datagram to ::1: netclient's result and what the echo server got first-hand."""
    from tests.harness.udpecho import udp_echo
    from tests.wire.cases_network import mask_udp

    async with udp_echo(ipv6=True) as echo:
        ops = ["socks-udp-relay", "bound", str(echo.port), "::1"]
        proxy = {"enableSocks5Udp": True, "domains": {"127.0.0.1": "allow", "::1": "allow"}}
        (result,) = await _netclient(url, ops, proxy)
        first_hand = [list(item) for item in echo.received if not item[1].startswith("echo ")]
        return mask_udp(echo, result), first_hand


async def test_network_proxy_socks5_udp_ipv6_relayed(ours: ServerProcess) -> None:
    result, received = await _udp_to_ipv6(ours.url)
    assert result["end"] == "echo relayed"
    assert result["acked"] == ["0:::1"]
    assert result["answers"] == [["4 ::1:<port>", "echo 0:::1"]]
    assert received == [["::1", "0:::1"]]


@pytest.mark.reference
async def test_network_proxy_socks5_udp_ipv6_relayed_reference(reference: ServerProcess) -> None:
    require_reference()
    result, received = await _udp_to_ipv6(reference.url)
    assert result["end"] == "control closed"
    assert (result["acked"], received) == ([], [])


async def _ending_of_a_timed_out_sleep(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(process/wait's answer, the process/exited params) for `sleep 30` with timeoutMs 200,
    from a client that asks for processEndings."""
    async with await WireClient.connect(url) as client:
        response = await client.request(
            "initialize", {"clientName": "deliberate", "extensions": ["processEndings"]}
        )
        assert "result" in response, response
        await client.notify("initialized", {})
        await client.request(
            "process/start", process_params("sleep", ["sleep", "30"], timeoutMs=200)
        )
        wait = await client.request(
            "process/wait", {"processId": "sleep", "timeoutMs": 10_000}, timeout=15 * TIME
        )
        if "error" in wait:
            await client.request("process/terminate", {"processId": "sleep"})
        events = await client.process_events("sleep", timeout=15 * TIME)
        exited = next(e["params"] for e in events if e["method"] == "process/exited")
        return wait, exited


async def test_process_endings_extension(ours: ServerProcess) -> None:
    wait, exited = await _ending_of_a_timed_out_sleep(ours.url)
    assert wait["result"]["reason"] == "exited"
    assert exited["exitCode"] == 128 + signal.SIGTERM
    assert exited["termination"]["reason"] == "timeout"
    assert exited["termination"]["signal"] == "SIGTERM"


@pytest.mark.reference
async def test_process_endings_extension_reference(reference: ServerProcess) -> None:
    require_reference()
    wait, exited = await _ending_of_a_timed_out_sleep(reference.url)
    assert wait["error"]["code"] == -32601
    assert "termination" not in exited and exited["exitCode"] == 128 + signal.SIGKILL


async def _close_session(url: str) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """session/close with a sleeper running: the answer, what a later process/start gets,
    and whether the sleeper is gone."""
    marker = f"close-{uuid.uuid4().hex}"
    async with await WireClient.connect(url) as client:
        await client.initialize()
        await client.request("process/start", process_params("sleeper", sleeper(marker)))
        pids = await wait_for_marked(marker, 1, timeout=10 * TIME)
        assert len(pids) == 1, pids
        closed = await client.request("session/close", None)
        after = await client.request("process/start", process_params("later", ["true"]))
        gone = await wait_all_dead(pids, timeout=10 * TIME) if "result" in closed else False
        if "error" in closed:
            await client.request("process/terminate", {"processId": "sleeper"})
            await wait_all_dead(pids, timeout=10 * TIME)
        return closed, after, gone


async def test_session_close_extension(ours: ServerProcess) -> None:
    closed, after, gone = await _close_session(ours.url)
    assert closed["result"] == {} and gone
    assert after["error"]["message"] == "session has been closed by session/close"


@pytest.mark.reference
async def test_session_close_extension_reference(reference: ServerProcess) -> None:
    require_reference()
    closed, after, _ = await _close_session(reference.url)
    assert closed["error"]["code"] == -32601 and "result" in after


async def _attributes(url: str, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    async with await WireClient.connect(url) as client:
        await client.initialize()
        uri = f"file://{path}"
        setting = await client.request(
            "fs/setAttributes", {"path": uri, "mode": 0o751, "modifiedAtNs": 1_500_000_000 * 10**9}
        )
        return setting, await client.request("fs/getAttributes", {"path": uri})


async def test_fs_attributes_extension(ours: ServerProcess, tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    setting, got = await _attributes(ours.url, path)
    assert setting["result"] == {}
    assert got["result"]["mode"] == 0o751 == path.stat().st_mode & 0o7777
    assert got["result"]["modifiedAtNs"] == 1_500_000_000 * 10**9 == path.stat().st_mtime_ns
    assert got["result"]["accessedAtNs"] == path.stat().st_atime_ns


@pytest.mark.reference
async def test_fs_attributes_extension_reference(reference: ServerProcess, tmp_path: Path) -> None:
    require_reference()
    path = tmp_path / "file"
    path.write_text("x")
    setting, got = await _attributes(reference.url, path)
    assert setting["error"]["code"] == got["error"]["code"] == -32601
