"""Differential wire cases for the sandbox intent (PROTOCOL.md §9): sandboxed `process/start`
and sandboxed `fs/*`.

Each case builds its own tree inside `ctx.workdir` (same absolute path for the reference run and
ours, emptied in between): usually a writable workspace `ws/` and a directory `outside/` that no
policy makes writable. Processes are summarised by `run_sandboxed`: the start response (with
`sandboxType`), the whole output of each stream (two pipes interleave arbitrarily, so streams are
concatenated separately), and the `process/exited` params (exit code, `sandboxDenied`).

Normalised here, because they vary from run to run:

* Rust panic headers of the reference's sandbox helper, `thread 'main' (12345) panicked at
  linux-sandbox/src/linux_run_main.rs:887:21:`, keep the thread name and the file but lose the
  host thread id and the line/column: `thread 'main' panicked at linux-sandbox/src/...rs:`.
  The file name stays on purpose: it contains "sandbox", which is what makes the reference
  classify such a crash as `sandboxDenied: true` (PROTOCOL.md §9.5).
* `fs/getMetadata` results keep only the three type flags (times and the size of masked
  directories are filesystem details).
* `fs/readDirectory` entries are sorted by name.

Preconditions of the reference run: the reference executes its sandbox helper through a PATH
alias it creates under `$CODEX_HOME/tmp/arg0-linux/`. It refuses to create that alias when
CODEX_HOME is inside the temporary directory (e.g. the pytest tmp dir the `reference` fixture
uses when CODEX_HOME is unset), and then every bubblewrap-backed process fails with `bwrap:
execvp codex-linux-sandbox: No such file or directory`. `run_sandboxed` and `fs_request` turn
that symptom into an error that says so; run the suite with CODEX_HOME set to an existing
directory outside /tmp (e.g. `CODEX_HOME=$HOME/.codex`).

These cases are not collected by tests/wire/test_differential.py yet (it imports only the core
and fs cases); add `cases_sandbox.CASES` there once sandbox enforcement lands.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
from pathlib import Path
from typing import Any

from tests.harness.differential import Case, CaseContext
from tests.harness.procfs import sleeper, wait_for_marked
from tests.harness.wire import Json, WireClient

CASES: dict[str, Case] = {}

PATH_ENV = {"PATH": "/usr/bin:/bin"}
_PANIC = re.compile(r"thread '([^']*)' \(\d+\) panicked at ([^:\n]+):\d+:\d+:")
_ALIAS_MISSING = "execvp codex-linux-sandbox"
_PROCESS_TIMEOUT = 30.0


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


# -- the sandbox intent -------------------------------------------------------------------------


def special(kind: str, access: str, **members: Any) -> Json:
    return {"path": {"type": "special", "value": {"kind": kind, **members}}, "access": access}


def root(access: str) -> Json:
    return special("root", access)


def path_entry(ctx: CaseContext, *parts: str, access: str) -> Json:
    return {"path": {"type": "path", "path": ctx.uri(*parts)}, "access": access}


def glob_entry(pattern: str, access: str) -> Json:
    return {"path": {"type": "glob_pattern", "pattern": pattern}, "access": access}


def context(permissions: Json, **members: Any) -> Json:
    """A sandbox context with `windowsSandboxLevel: disabled` and the given extra members."""
    return {"permissions": permissions, "windowsSandboxLevel": "disabled", **members}


def managed(
    entries: list[Json], *, network: str = "restricted", glob_scan_max_depth: int | None = None
) -> Json:
    file_system: Json = {"type": "restricted", "entries": entries}
    if glob_scan_max_depth is not None:
        file_system["glob_scan_max_depth"] = glob_scan_max_depth
    return {"type": "managed", "file_system": file_system, "network": network}


def restricted(entries: list[Json], *, network: str = "restricted", **members: Any) -> Json:
    """A managed, filesystem-restricted sandbox context."""
    return context(managed(entries, network=network), **members)


def unrestricted(network: str) -> Json:
    return context({"type": "managed", "file_system": {"type": "unrestricted"}, "network": network})


DISABLED = context({"type": "disabled"})


def external(network: str) -> Json:
    return context({"type": "external", "network": network})


def workspace_policy(ctx: CaseContext, *extra: Json, network: str = "restricted") -> Json:
    """The common shape: read everything, write only `ws/`."""
    return restricted(
        [root("read"), path_entry(ctx, "ws", access="write"), *extra], network=network
    )


# -- helpers ------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    return _PANIC.sub(r"thread '\1' panicked at \2:", text)


def normalized(value: Any) -> Any:
    if isinstance(value, str):
        return normalize(value)
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


def _check_reference_environment(ctx: CaseContext, text: str) -> None:
    if ctx.kind == "reference" and _ALIAS_MISSING in text:
        raise RuntimeError(
            "the reference could not run its sandbox helper (`bwrap: execvp codex-linux-sandbox`):"
            " start it with CODEX_HOME set to an existing directory outside the temp dir, e.g."
            " CODEX_HOME=$HOME/.codex (see tests/wire/cases_sandbox.py)"
        )


def make_tree(ctx: CaseContext, *dirs: str) -> None:
    """`ws/` and `outside/` (with `outside/target.txt`), plus the given directories."""
    for name in ("ws", "outside", *dirs):
        (ctx.workdir / name).mkdir(parents=True, exist_ok=True)
    (ctx.workdir / "outside" / "target.txt").write_text("original\n")


def snapshot(root_dir: Path) -> list[str]:
    """Everything under `root_dir`, sorted: `dir/`, `file = b'content'`, `link -> target`."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root_dir):
        for name in dirnames + filenames:
            item = Path(dirpath, name)
            rel = str(item.relative_to(root_dir))
            if item.is_symlink():
                out.append(f"{rel} -> {os.readlink(item)}")
            elif item.is_dir():
                out.append(f"{rel}/")
            elif item.is_file():
                try:
                    out.append(f"{rel} = {item.read_bytes()!r}")
                except PermissionError:
                    out.append(f"{rel} (unreadable)")
            else:
                out.append(f"{rel} (special)")
    return sorted(out)


def summarize_streams(events: list[Json]) -> Json:
    ordered = sorted(events, key=lambda m: m["params"]["seq"])
    streams: dict[str, bytes] = {}
    exited: list[Json] = []
    for event in ordered:
        params = event["params"]
        if event["method"] == "process/output":
            streams[params["stream"]] = streams.get(params["stream"], b"") + base64.b64decode(
                params["chunk"]
            )
        elif event["method"] == "process/exited":
            exited.append({k: v for k, v in params.items() if k not in ("seq", "processId")})
    seqs = [e["params"]["seq"] for e in ordered]
    return {
        "output": {k: normalize(v.decode(errors="replace")) for k, v in sorted(streams.items())},
        "exited": exited,
        "gap_free": seqs == list(range(1, len(seqs) + 1)),
        "closed_last": bool(ordered) and ordered[-1]["method"] == "process/closed",
    }


def start_params(
    ctx: CaseContext,
    process_id: str,
    argv: list[str],
    sandbox: Json | None,
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    omit_sandbox: bool = False,
    **extra: Any,
) -> Json:
    params: Json = {
        "processId": process_id,
        "argv": argv,
        "cwd": cwd if cwd is not None else ctx.uri("ws"),
        "env": dict(PATH_ENV) if env is None else env,
        "tty": False,
    }
    if not omit_sandbox:
        params["sandbox"] = sandbox
    params.update(extra)
    return params


async def run_argv(
    client: WireClient,
    ctx: CaseContext,
    process_id: str,
    argv: list[str],
    sandbox: Json | None,
    **extra: Any,
) -> Json:
    """Start a process and return {start, output, exited, ...} once it is closed."""
    response = await client.request(
        "process/start", start_params(ctx, process_id, argv, sandbox, **extra)
    )
    response = {k: v for k, v in response.items() if k != "id"}
    if "error" in response:
        return {"start": response}
    events = await client.process_events(process_id, timeout=_PROCESS_TIMEOUT)
    summary = summarize_streams(events)
    _check_reference_environment(ctx, "".join(summary["output"].values()))
    return {"start": response, **summary}


async def run_sandboxed(
    client: WireClient,
    ctx: CaseContext,
    process_id: str,
    script: str,
    sandbox: Json | None,
    **extra: Any,
) -> Json:
    """`sh -c script` under `sandbox` (cwd `ws/` unless given)."""
    return await run_argv(client, ctx, process_id, ["sh", "-c", script], sandbox, **extra)


async def fs_request(client: WireClient, ctx: CaseContext, method: str, params: Json) -> Json:
    response = await client.request(method, params, timeout=_PROCESS_TIMEOUT)
    response = {k: v for k, v in response.items() if k != "id"}
    _check_reference_environment(ctx, str(response.get("error", {}).get("message", "")))
    return normalized(response)


def metadata_flags(response: Json) -> Json:
    if "result" in response:
        result = response["result"]
        return {"result": {k: result[k] for k in ("isDirectory", "isFile", "isSymlink")}}
    return response


def sorted_entries(response: Json) -> Json:
    if "result" in response:
        entries = sorted(response["result"]["entries"], key=lambda e: e["fileName"])
        return {"result": {"entries": entries}}
    return response


def walk_options() -> Json:
    return {
        "maxDepth": 4,
        "maxDirectories": 100,
        "maxEntries": 1000,
        "followDirectorySymlinks": False,
    }


# Writes one line per attempt, `<label>=<status>`, so the output shows what succeeded.
def attempts(*pairs: tuple[str, str]) -> str:
    return "\n".join(f"{command} 2>/dev/null; echo {label}=$?" for label, command in pairs)


# -- profile types ------------------------------------------------------------------------------


_WRITE_PROBE = attempts(
    ("ws", "echo w > probe.txt"),
    ("outside", "echo w > ../outside/target.txt"),
    ("read_etc", "cat /etc/hostname >/dev/null"),
)


@case
async def sandbox_profile_none_and_null(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    out = [
        await run_sandboxed(client, ctx, "absent", _WRITE_PROBE, None, omit_sandbox=True),
        await run_sandboxed(client, ctx, "null", _WRITE_PROBE, None),
    ]
    out.append(snapshot(ctx.workdir))
    return out


@case
async def sandbox_profile_disabled_runs_wrapped_unrestricted(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    result = await run_sandboxed(client, ctx, "d", _WRITE_PROBE, DISABLED)
    return [result, snapshot(ctx.workdir)]


@case
async def sandbox_profile_external_both_networks(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    out = []
    for network in ("restricted", "enabled"):
        (ctx.workdir / "outside" / "target.txt").write_text("original\n")
        out.append(
            await run_sandboxed(client, ctx, f"e-{network}", _WRITE_PROBE, external(network))
        )
        out.append(snapshot(ctx.workdir))
    return out


@case
async def sandbox_profile_managed_unrestricted_both_networks(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    out = []
    for network in ("restricted", "enabled"):
        (ctx.workdir / "outside" / "target.txt").write_text("original\n")
        out.append(
            await run_sandboxed(client, ctx, f"u-{network}", _WRITE_PROBE, unrestricted(network))
        )
        out.append(snapshot(ctx.workdir))
    return out


@case
async def sandbox_profile_root_read_denies_every_write(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    script = attempts(
        ("ws", "echo w > probe.txt"),
        ("outside", "echo w > ../outside/target.txt"),
        ("mkdir", "mkdir newdir"),
        ("read_outside", "cat ../outside/target.txt >/dev/null"),
        ("devnull", "echo x > /dev/null"),
    )
    result = await run_sandboxed(client, ctx, "r", script, restricted([root("read")]))
    loud = await run_sandboxed(client, ctx, "r2", "touch probe.txt", restricted([root("read")]))
    return [result, loud, snapshot(ctx.workdir)]


@case
async def sandbox_profile_root_read_with_writable_path(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    result = await run_sandboxed(client, ctx, "w", _WRITE_PROBE, workspace_policy(ctx))
    return [result, snapshot(ctx.workdir)]


@case
async def sandbox_profile_root_write_is_unrestricted_filesystem(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    result = await run_sandboxed(client, ctx, "rw", _WRITE_PROBE, restricted([root("write")]))
    return [result, snapshot(ctx.workdir)]


@case
async def sandbox_profile_empty_entries_and_root_deny(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    return [
        await run_sandboxed(client, ctx, "empty", "echo ran", restricted([])),
        await run_sandboxed(client, ctx, "deny", "echo ran", restricted([root("deny")])),
        await run_argv(client, ctx, "abs", ["/bin/echo", "ran"], restricted([])),
    ]


@case
async def sandbox_profile_unknown_special_is_ignored(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    unknown = special("unknown", "write", path=str(ctx.workdir / "ws"), subpath="x")
    return [
        await run_sandboxed(client, ctx, "u", _WRITE_PROBE, restricted([root("read"), unknown])),
        snapshot(ctx.workdir),
    ]


# -- special paths ------------------------------------------------------------------------------


@case
async def sandbox_special_project_roots_with_workspace_roots(ctx: CaseContext) -> Any:
    make_tree(ctx, "ws/sub", "other")
    client = await ctx.client()
    script = attempts(
        ("ws", "echo w > probe.txt"),
        ("sub", "echo w > sub/probe.txt"),
        ("other", f"echo w > {ctx.workdir}/other/probe.txt"),
        ("parent", f"echo w > {ctx.workdir}/probe.txt"),
    )
    policy = [root("read"), special("project_roots", "write")]
    return [
        await run_sandboxed(
            client,
            ctx,
            "one",
            script,
            restricted(policy, workspaceRoots=[ctx.uri("ws")]),
        ),
        await run_sandboxed(
            client,
            ctx,
            "two",
            script,
            restricted(policy, workspaceRoots=[ctx.uri("ws", "sub"), ctx.uri("other")]),
        ),
        snapshot(ctx.workdir),
    ]


@case
async def sandbox_special_project_roots_subpath(ctx: CaseContext) -> Any:
    make_tree(ctx, "ws/sub")
    client = await ctx.client()
    script = attempts(
        ("ws", "echo w > probe.txt"),
        ("sub", "echo w > sub/probe.txt"),
        ("missing", "echo w > nope/probe.txt"),
    )
    out = []
    for index, subpath in enumerate(
        ["sub", "./sub", "sub/", "sub/../sub", "/etc", "../ws", "nope"]
    ):
        policy = restricted(
            [root("read"), special("project_roots", "write", subpath=subpath)],
            workspaceRoots=[ctx.uri("ws")],
        )
        out.append([subpath, await run_sandboxed(client, ctx, f"s{index}", script, policy)])
    out.append(snapshot(ctx.workdir))
    return out


@case
async def sandbox_special_project_roots_without_workspace_roots(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    script = attempts(("ws", "echo w > probe.txt"))
    policy = [root("read"), special("project_roots", "write")]
    return [
        await run_sandboxed(client, ctx, "bare", script, restricted(policy)),
        await run_sandboxed(client, ctx, "cwd", script, restricted(policy, cwd=ctx.uri("ws"))),
        await run_sandboxed(
            client, ctx, "empty", script, restricted(policy, cwd=ctx.uri("ws"), workspaceRoots=[])
        ),
        snapshot(ctx.workdir),
    ]


@case
async def sandbox_special_current_working_directory(ctx: CaseContext) -> Any:
    """`current_working_directory` is materialised like `project_roots` (one entry per workspace
    root); without workspaceRoots it grants nothing, whatever the process or sandbox cwd."""
    make_tree(ctx, "ws/sub")
    client = await ctx.client()
    script = attempts(("ws", "echo w > probe.txt"), ("sub", "echo w > sub/probe.txt"))
    policy = [root("read"), special("current_working_directory", "write")]
    return [
        await run_sandboxed(client, ctx, "bare", script, restricted(policy)),
        await run_sandboxed(client, ctx, "cwd", script, restricted(policy, cwd=ctx.uri("ws"))),
        await run_sandboxed(
            client, ctx, "roots", script, restricted(policy, workspaceRoots=[ctx.uri("ws", "sub")])
        ),
        snapshot(ctx.workdir),
    ]


@case
async def sandbox_special_slash_tmp_is_the_host_tmp(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    under_tmp = ctx.workdir.resolve().is_relative_to("/tmp")
    probe = ctx.workdir / "outside" / "slash-tmp-probe.txt"
    script = attempts(
        ("tmp_visible", "test -d /tmp"),
        ("workdir_visible", f"test -d {ctx.workdir}"),
        ("write_probe", f"echo w > {probe}"),
        ("ws", "echo w > probe.txt"),
    )
    policy = restricted([root("read"), special("slash_tmp", "write")])
    result = await run_sandboxed(client, ctx, "t", script, policy)
    return [under_tmp, result, snapshot(ctx.workdir)]


@case
async def sandbox_special_tmp_is_read_only_host_tmp_under_root_read(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    script = attempts(
        ("tmp_is_dir", "test -d /tmp"),
        ("workdir_visible", f"test -d {ctx.workdir}"),
        ("tmp_write", f"echo w > {ctx.workdir}/outside/tmp-probe.txt"),
    )
    return [
        ctx.workdir.resolve().is_relative_to("/tmp"),
        await run_sandboxed(client, ctx, "t", script, restricted([root("read")])),
        snapshot(ctx.workdir),
    ]


@case
async def sandbox_special_tmpdir(ctx: CaseContext) -> Any:
    """`tmpdir` is resolved from the *process* env's TMPDIR; unset → grants nothing."""
    make_tree(ctx, "ws/tmpdir")
    client = await ctx.client()
    script = attempts(("tmpdir", "echo w > tmpdir/probe.txt"), ("ws", "echo w > probe.txt"))
    policy = restricted([root("read"), special("tmpdir", "write")])
    unset = await run_sandboxed(client, ctx, "unset", script, policy)
    tmpdir = str(ctx.workdir / "ws" / "tmpdir")
    with_env = await run_sandboxed(
        client, ctx, "set", script, policy, env={**PATH_ENV, "TMPDIR": tmpdir}
    )
    probe = ctx.workdir / "ws" / "tmpdir" / "probe.txt"
    return [unset, with_env, probe.exists() and probe.read_text()]


@case
async def sandbox_special_minimal_read_view(ctx: CaseContext) -> Any:
    make_tree(ctx)
    (ctx.workdir / "ws" / "file.txt").write_text("visible?\n")
    client = await ctx.client()
    script = attempts(
        ("pwd_is_root", 'test "$(pwd)" = /'),
        ("usr_bin_sh", "test -x /usr/bin/env"),
        ("etc", "test -d /etc"),
        ("dev_null", "test -c /dev/null"),
        ("proc_self", "test -d /proc/self"),
        ("tmp", "test -e /tmp"),
        ("workdir", f"test -e {ctx.workdir}"),
        ("file", f"cat {ctx.workdir}/ws/file.txt"),
        ("root_tmpfs_write", "echo w > /minimal-probe && test -f /minimal-probe"),
        ("etc_write", "echo w > /etc/minimal-probe"),
    )
    return [
        await run_sandboxed(client, ctx, "m", script, restricted([special("minimal", "read")])),
        await run_sandboxed(
            client,
            ctx,
            "mp",
            script,
            restricted(
                [special("minimal", "read"), path_entry(ctx, "ws", "file.txt", access="read")]
            ),
        ),
        snapshot(ctx.workdir),
    ]


@case
async def sandbox_special_minimal_with_project_root(ctx: CaseContext) -> Any:
    make_tree(ctx)
    (ctx.workdir / "ws" / "file.txt").write_text("content\n")
    client = await ctx.client()
    script = attempts(
        ("pwd", f'test "$(pwd)" = {ctx.workdir}/ws'),
        ("read", "cat file.txt"),
        ("write", "echo w > file.txt"),
        ("outside", f"test -e {ctx.workdir}/outside"),
    )
    policy = restricted(
        [special("minimal", "read"), special("project_roots", "read")],
        workspaceRoots=[ctx.uri("ws")],
    )
    return [await run_sandboxed(client, ctx, "m", script, policy), snapshot(ctx.workdir)]


# -- deny / none / globs / path entries ---------------------------------------------------------


@case
async def sandbox_deny_and_none_under_writable_root(ctx: CaseContext) -> Any:
    make_tree(ctx, "ws/den", "ws/non")
    (ctx.workdir / "ws" / "den" / "secret.txt").write_text("secret\n")
    (ctx.workdir / "ws" / "non" / "secret.txt").write_text("secret\n")
    (ctx.workdir / "ws" / "plain.txt").write_text("plain\n")
    client = await ctx.client()
    script = (
        attempts(
            ("ls_den", "ls den"),
            ("cat_den", "cat den/secret.txt"),
            ("write_den", "echo w > den/new.txt"),
            ("ls_non", "ls non"),
            ("cat_non", "cat non/secret.txt"),
            ("write_non", "echo w > non/new.txt"),
            ("plain", "cat plain.txt"),
            ("ws_write", "echo w > probe.txt"),
            ("rm_den", "rm -rf den"),
        )
        + "\nls -ld den non | cut -c1-10"
    )
    policy = workspace_policy(
        ctx,
        path_entry(ctx, "ws", "den", access="deny"),
        path_entry(ctx, "ws", "non", access="none"),
    )
    result = await run_sandboxed(client, ctx, "d", script, policy)
    loud = await run_sandboxed(client, ctx, "loud", "cat den/secret.txt", policy)
    return [result, loud, snapshot(ctx.workdir)]


@case
async def sandbox_deny_file_and_missing_path(ctx: CaseContext) -> Any:
    make_tree(ctx)
    (ctx.workdir / "ws" / "secret.txt").write_text("secret\n")
    client = await ctx.client()
    script = (
        attempts(
            ("cat_secret", "cat secret.txt"),
            ("write_secret", "echo w > secret.txt"),
            ("missing_exists", "test -e missing.txt"),
            ("missing_cat", "cat missing.txt"),
            ("missing_write", "echo w > missing.txt"),
        )
        + "\nls -l secret.txt missing.txt 2>&1 | cut -c1-10"
    )
    policy = workspace_policy(
        ctx,
        path_entry(ctx, "ws", "secret.txt", access="deny"),
        path_entry(ctx, "ws", "missing.txt", access="deny"),
    )
    return [await run_sandboxed(client, ctx, "d", script, policy), snapshot(ctx.workdir)]


@case
async def sandbox_glob_deny_entries(ctx: CaseContext) -> Any:
    make_tree(ctx, "ws/a/b", "ws/secrets")
    for name in ["k.secret", "a/k.secret", "a/b/k.secret", "secrets/inner.txt", "plain.txt"]:
        (ctx.workdir / "ws" / name).write_text("s\n")
    client = await ctx.client()
    script = " ".join(
        f"cat {name} >/dev/null 2>&1 && echo -n R || echo -n -;"
        f" echo >> {name} 2>/dev/null && echo W || echo -;"
        for name in ["k.secret", "a/k.secret", "a/b/k.secret", "secrets/inner.txt", "plain.txt"]
    )
    ws = str(ctx.workdir / "ws")
    variants: list[tuple[str, Json]] = [
        ("relative", workspace_policy(ctx, glob_entry("**/*.secret", "deny"))),
        ("absolute", workspace_policy(ctx, glob_entry(f"{ws}/**/*.secret", "deny"))),
        ("one_level", workspace_policy(ctx, glob_entry("*.secret", "deny"))),
        ("none_access", workspace_policy(ctx, glob_entry("**/*.secret", "none"))),
        ("read_access_is_ignored", workspace_policy(ctx, glob_entry("**/*.secret", "read"))),
        ("write_access_is_ignored", restricted([root("read"), glob_entry(f"{ws}/*", "write")])),
        ("directory_not_matched", workspace_policy(ctx, glob_entry("secret*", "deny"))),
        ("question_mark", workspace_policy(ctx, glob_entry("?.secret", "deny"))),
        (
            "depth_2",
            context(
                managed(
                    [
                        root("read"),
                        path_entry(ctx, "ws", access="write"),
                        glob_entry(f"{ws}/**/*.secret", "deny"),
                    ],
                    glob_scan_max_depth=2,
                )
            ),
        ),
        (
            "sandbox_cwd",
            workspace_policy(ctx, glob_entry("*.secret", "deny")) | {"cwd": ctx.uri("ws", "a")},
        ),
        ("brace_unsupported", workspace_policy(ctx, glob_entry(f"{ws}/{{k,x}}.secret", "deny"))),
        ("root_prefix_unsupported", workspace_policy(ctx, glob_entry("/**/*.secret", "deny"))),
    ]
    out = []
    for index, (label, policy) in enumerate(variants):
        for name in ["k.secret", "a/k.secret", "a/b/k.secret", "secrets/inner.txt", "plain.txt"]:
            (ctx.workdir / "ws" / name).write_text("s\n")
        out.append([label, await run_sandboxed(client, ctx, f"g{index}", script, policy)])
    return out


@case
async def sandbox_path_entry_naming_a_file(ctx: CaseContext) -> Any:
    make_tree(ctx)
    (ctx.workdir / "ws" / "file.txt").write_text("file\n")
    client = await ctx.client()
    write_policy = restricted([root("read"), path_entry(ctx, "ws", "file.txt", access="write")])
    return [
        await run_sandboxed(client, ctx, "w", "echo ran; echo x > file.txt", write_policy),
        snapshot(ctx.workdir),
    ]


@case
async def sandbox_missing_writable_root_is_ignored(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    policy = restricted([root("read"), path_entry(ctx, "missing", access="write")])
    script = attempts(("ws", "echo w > probe.txt"), ("missing", "mkdir ../missing"))
    return [await run_sandboxed(client, ctx, "m", script, policy), snapshot(ctx.workdir)]


@case
async def sandbox_symlinked_writable_root_resolves_to_target(ctx: CaseContext) -> Any:
    make_tree(ctx)
    os.symlink("ws", ctx.workdir / "wslink")
    client = await ctx.client()
    policy = restricted([root("read"), path_entry(ctx, "wslink", access="write")])
    script = attempts(
        ("via_target", "echo w > probe.txt"), ("via_link", "echo w > ../wslink/l.txt")
    )
    return [await run_sandboxed(client, ctx, "s", script, policy), snapshot(ctx.workdir)]


@case
async def sandbox_read_entry_inside_writable_root(ctx: CaseContext) -> Any:
    make_tree(ctx, "ws/ro")
    client = await ctx.client()
    policy = workspace_policy(ctx, path_entry(ctx, "ws", "ro", access="read"))
    script = attempts(("ws", "echo w > probe.txt"), ("ro", "echo w > ro/probe.txt"))
    return [await run_sandboxed(client, ctx, "r", script, policy), snapshot(ctx.workdir)]


# -- protected metadata names -------------------------------------------------------------------


_PROTECTED = [".git", ".codex", ".agents", ".aws"]
_UNPROTECTED = [".ssh", ".env", ".hg", ".svn", ".vscode", ".config", ".gitignore"]


@case
async def sandbox_protected_names_when_missing(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    lines = ["ls -a | sort | tr '\\n' ' '; echo"]
    for name in _PROTECTED:
        lines.append(
            attempts(
                (f"{name}_is_dir", f"test -d {name}"),
                (f"{name}_write", f"echo w > {name}/x"),
                (f"{name}_rename", f"mv {name} {name}-renamed"),
                (f"{name}_rmdir", f"rmdir {name}"),
            )
        )
    result = await run_sandboxed(client, ctx, "p", "\n".join(lines), workspace_policy(ctx))
    return [result, snapshot(ctx.workdir)]


@case
async def sandbox_protected_names_when_present(ctx: CaseContext) -> Any:
    make_tree(ctx)
    ws = ctx.workdir / "ws"
    for name in _PROTECTED:
        (ws / name).mkdir()
        (ws / name / "content.txt").write_text(f"{name} content\n")
    for name in _UNPROTECTED:
        if name.startswith(".git") or name == ".env":
            (ws / name).write_text("x\n")
        else:
            (ws / name).mkdir()
    client = await ctx.client()
    lines = []
    for name in _PROTECTED:
        lines.append(
            attempts(
                (f"{name}_read", f"cat {name}/content.txt"),
                (f"{name}_write", f"echo w > {name}/content.txt"),
                (f"{name}_new", f"echo w > {name}/new.txt"),
                (f"{name}_rename", f"mv {name} {name}-renamed"),
                (f"{name}_rm", f"rm -rf {name}"),
            )
        )
    for name in _UNPROTECTED:
        lines.append(attempts((f"{name}_rename", f"mv {name} {name}-renamed")))
    result = await run_sandboxed(client, ctx, "p", "\n".join(lines), workspace_policy(ctx))
    return [result, snapshot(ctx.workdir)]


@case
async def sandbox_protected_git_pointer_file_and_nested(ctx: CaseContext) -> Any:
    make_tree(ctx, "ws/realgit", "ws/sub/.git")
    ws = ctx.workdir / "ws"
    (ws / ".git").write_text("gitdir: realgit\n")
    (ws / "realgit" / "HEAD").write_text("ref: refs/heads/main\n")
    client = await ctx.client()
    script = attempts(
        ("pointer_read", "cat .git"),
        ("pointer_write", "echo w > .git"),
        ("pointer_rm", "rm -f .git"),
        ("gitdir_write", "echo w > realgit/HEAD"),
        ("gitdir_new", "echo w > realgit/new"),
        ("nested_write", "echo w > sub/.git/x"),
    )
    result = await run_sandboxed(client, ctx, "p", script, workspace_policy(ctx))
    return [result, snapshot(ctx.workdir)]


@case
async def sandbox_protected_git_symlink_refuses_to_run(ctx: CaseContext) -> Any:
    make_tree(ctx, "gitdir")
    os.symlink("../gitdir", ctx.workdir / "ws" / ".git")
    client = await ctx.client()
    result = await run_sandboxed(client, ctx, "p", "echo ran", workspace_policy(ctx))
    return [result, snapshot(ctx.workdir)]


@case
async def sandbox_protected_names_only_at_writable_roots(ctx: CaseContext) -> Any:
    """With `root:write` the writable root is `/`: `.git` inside a project is writable."""
    make_tree(ctx, "ws/.git")
    client = await ctx.client()
    script = attempts(("git_write", "echo w > .git/x"))
    policies = [restricted([root("write")]), unrestricted("restricted"), DISABLED]
    out = []
    for index, policy in enumerate(policies):
        out.append(await run_sandboxed(client, ctx, f"p{index}", script, policy))
    out.append(snapshot(ctx.workdir))
    return out


# -- `root` writable with restrictions ----------------------------------------------------------


_DEVICES_AND_WRITES = attempts(
    ("devnull", "echo x > /dev/null"),
    ("zero", "head -c1 /dev/zero | wc -c | grep -q 1"),
    ("urandom", "head -c1 /dev/urandom | wc -c | grep -q 1"),
    ("ptmx", "test -e /dev/pts/ptmx"),
    ("tty_or_null_ok", "test -c /dev/null"),
    ("ws", "echo w > probe.txt"),
    ("outside", "echo w > ../outside/target.txt"),
    ("mkdir_elsewhere", "mkdir ../made-by-sandbox"),
    ("read_denied", "cat ../denied/secret.txt"),
    ("write_denied", "echo w > ../denied/new.txt"),
)


@case
async def sandbox_root_write_with_deny_keeps_devices_and_writes(ctx: CaseContext) -> Any:
    """`root` writable plus a deny entry (the restricted-view path): /dev is usable, writes
    outside the denied path work, the denied path is neither readable nor writable, with and
    without the escalated override; compared with `root` read + a writable workspace."""
    make_tree(ctx, "denied")
    (ctx.workdir / "denied" / "secret.txt").write_text("secret\n")
    client = await ctx.client()
    deny = path_entry(ctx, "denied", access="deny")
    policies: list[tuple[str, Json]] = [
        ("root_write", restricted([root("write")])),
        ("root_write_deny", restricted([root("write"), deny])),
        (
            "root_write_deny_escalated",
            restricted([root("write"), deny], sandboxOverride="escalatedSandboxWithRestrictions"),
        ),
        ("root_write_none", restricted([root("write"), path_entry(ctx, "denied", access="none")])),
        ("root_read_ws_write", workspace_policy(ctx)),
    ]
    out: list[Any] = []
    for label, policy in policies:
        result = await run_sandboxed(client, ctx, label, _DEVICES_AND_WRITES, policy)
        out.append([label, result, snapshot(ctx.workdir)])
        for leftover in ("made-by-sandbox",):
            with contextlib.suppress(OSError):
                (ctx.workdir / leftover).rmdir()
        (ctx.workdir / "outside" / "target.txt").write_text("original\n")
        with contextlib.suppress(OSError):
            (ctx.workdir / "ws" / "probe.txt").unlink()
        dev = await run_sandboxed(
            client, ctx, f"{label}-dev", "ls /dev | sort | tr '\\n' ' '", policy
        )
        out.append(dev["output"])
    fs_policy = restricted([root("write"), deny])
    out.append(
        [
            await fs_request(
                client,
                ctx,
                "fs/writeFile",
                {"path": ctx.uri("ws", "fs.txt"), "dataBase64": "eA==", "sandbox": fs_policy},
            ),
            await fs_request(
                client,
                ctx,
                "fs/writeFile",
                {"path": ctx.uri("denied", "fs.txt"), "dataBase64": "eA==", "sandbox": fs_policy},
            ),
            await fs_request(
                client,
                ctx,
                "fs/readFile",
                {"path": ctx.uri("denied", "secret.txt"), "sandbox": fs_policy},
            ),
            snapshot(ctx.workdir),
        ]
    )
    return out


@case
async def sandbox_root_write_with_read_entries(ctx: CaseContext) -> Any:
    """`root` writable plus read entries: those stay read-only (the restricted view is used),
    and the protected names are read-only under every other writable root; write entries alone
    restrict nothing."""
    make_tree(ctx, "ws/.git", "ws/ro")
    client = await ctx.client()
    script = attempts(
        ("ro", "echo w > ro/f"),
        ("git", "echo w > .git/x"),
        ("ws", "echo w > f"),
        ("outside", "echo w > ../outside/target.txt"),
    )
    roots = {"workspaceRoots": [ctx.uri("ws")]}
    ro = path_entry(ctx, "ws", "ro", access="read")
    git = special("project_roots", "read", subpath=".git")
    project = special("project_roots", "write")
    policies: list[tuple[str, Json]] = [
        ("ro_read", restricted([root("write"), ro], **roots)),
        ("git_read", restricted([root("write"), git], **roots)),
        ("project_write", restricted([root("write"), project], **roots)),
        ("project_write_ro_read", restricted([root("write"), project, ro], **roots)),
    ]
    out: list[Any] = []
    for label, policy in policies:
        out.append([label, await run_sandboxed(client, ctx, label, script, policy)])
        out.append(snapshot(ctx.workdir))
        for name in ("ro/f", ".git/x", "f"):
            with contextlib.suppress(OSError):
                (ctx.workdir / "ws" / name).unlink()
        (ctx.workdir / "outside" / "target.txt").write_text("original\n")
    fs_policy = policies[0][1]
    out.append(
        [
            await fs_request(
                client,
                ctx,
                "fs/writeFile",
                {"path": ctx.uri("ws", "ro", "fs.txt"), "dataBase64": "eA==", "sandbox": fs_policy},
            ),
            await fs_request(
                client,
                ctx,
                "fs/writeFile",
                {"path": ctx.uri("ws", "fs.txt"), "dataBase64": "eA==", "sandbox": fs_policy},
            ),
            snapshot(ctx.workdir),
        ]
    )
    return out


@case
async def sandbox_read_only_path_crossing_writable_symlink(ctx: CaseContext) -> Any:
    """A read-only path (a read entry, a protected name) that crosses a symlink inside a
    writable root cannot be enforced, `root` writable or not, with or without the escalated
    override; names directly under `/` (usr-merge links) do not count."""
    make_tree(ctx, "gitdir", "outside/sub")
    os.symlink("../gitdir", ctx.workdir / "ws" / ".git")
    os.symlink("../outside", ctx.workdir / "ws" / "link")
    client = await ctx.client()
    roots = {"workspaceRoots": [ctx.uri("ws")]}
    git = special("project_roots", "read", subpath=".git")
    link_sub = path_entry(ctx, "ws", "link", "sub", access="read")
    link = path_entry(ctx, "ws", "link", access="read")
    script = attempts(
        ("gitdir", f"echo w > {ctx.workdir}/gitdir/x"),
        ("via_link", "echo w > .git/y"),
        ("outside", f"echo w > {ctx.workdir}/outside/sub/x"),
        ("ws", "echo w > z"),
    )
    lib64 = {"path": {"type": "path", "path": "file:///lib64"}, "access": "read"}
    deny = path_entry(ctx, "outside", "target.txt", access="deny")
    policies: list[tuple[str, Json]] = [
        ("root_write_git", restricted([root("write"), git], **roots)),
        (
            "root_write_git_escalated",
            restricted(
                [root("write"), git], sandboxOverride="escalatedSandboxWithRestrictions", **roots
            ),
        ),
        (
            "workspace_git",
            restricted([root("read"), special("project_roots", "write"), git], **roots),
        ),
        ("workspace_link_sub", workspace_policy(ctx, link_sub)),
        ("workspace_link", workspace_policy(ctx, link)),
        ("root_write_link_sub", restricted([root("write"), link_sub])),
        ("root_write_top_level_link", restricted([root("write"), deny, lib64])),
    ]
    out: list[Any] = []
    for label, policy in policies:
        result = await run_sandboxed(client, ctx, label, script, policy)
        out.append([label, result, snapshot(ctx.workdir)])
        for name in ("gitdir/x", "gitdir/y", "outside/sub/x", "ws/z"):
            with contextlib.suppress(OSError):
                (ctx.workdir / name).unlink()
    return out


# -- escapes ------------------------------------------------------------------------------------


@case
async def sandbox_escape_attempts_are_denied(ctx: CaseContext) -> Any:
    make_tree(ctx)
    ws = ctx.workdir / "ws"
    target = ctx.workdir / "outside" / "target.txt"
    os.symlink(target, ws / "link")
    os.symlink(ctx.workdir / "outside", ws / "dirlink")
    client = await ctx.client()
    script = attempts(
        ("dotdot", "echo x > ../outside/target.txt"),
        ("absolute", f"echo x > {target}"),
        ("file_link", "echo x > link"),
        ("dir_link", "echo x > dirlink/target.txt"),
        ("proc_self_root", f"echo x > /proc/self/root{target}"),
        ("hard_link", f"ln {target} hard"),
        ("new_symlink", f"ln -s {target} made && echo x > made"),
        ("mount", f"mount -t tmpfs none {ws}"),
        ("chmod_outside", f"chmod 777 {target}"),
    )
    result = await run_sandboxed(client, ctx, "e", script, workspace_policy(ctx))
    return [result, snapshot(ctx.workdir)]


@case
async def sandbox_escape_symlink_swapped_after_start(ctx: CaseContext) -> Any:
    make_tree(ctx, "ws/swap")
    client = await ctx.client()
    params = start_params(
        ctx,
        "swap",
        ["sh", "-c", "echo ready; read go; echo x > swap/target.txt; echo write=$?"],
        workspace_policy(ctx),
        pipeStdin=True,
    )
    start = await client.request("process/start", params)
    if "error" in start:
        return [{k: v for k, v in start.items() if k != "id"}, snapshot(ctx.workdir)]
    await client.wait_for(
        lambda m: (
            m.get("method") in ("process/output", "process/exited")
            and m["params"]["processId"] == "swap"
        ),
        timeout=_PROCESS_TIMEOUT,
    )
    swap = ctx.workdir / "ws" / "swap"
    swap.rmdir()
    os.symlink(ctx.workdir / "outside", swap)
    write = await client.request(
        "process/write",
        {"processId": "swap", "chunk": base64.b64encode(b"go\n").decode(), "writeId": "1"},
    )
    events = await client.process_events("swap", timeout=_PROCESS_TIMEOUT)
    return [
        {k: v for k, v in start.items() if k != "id"},
        write["result"],
        summarize_streams(events),
        snapshot(ctx.workdir),
    ]


# -- network ------------------------------------------------------------------------------------


_CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
    "    s.sendall(b'hello\\n')\n"
    "    print('reply', s.recv(16))\n"
    "except OSError as e:\n"
    "    print('error', type(e).__name__, e.errno)\n"
)
_SOCKETS = (
    "import socket\n"
    "for name, make in [('inet', lambda: socket.socket()),\n"
    "                   ('inet6', lambda: socket.socket(socket.AF_INET6)),\n"
    "                   ('unix', lambda: socket.socket(socket.AF_UNIX)),\n"
    "                   ('pair', lambda: socket.socketpair())]:\n"
    "    try:\n"
    "        make(); print(name, 'ok')\n"
    "    except OSError as e:\n"
    "        print(name, 'errno', e.errno)\n"
    "a, b = socket.socketpair()\n"
    "try:\n"
    "    a.send(b'x'); print('pair_send', b.recv(1))\n"
    "except OSError as e:\n"
    "    print('pair_send errno', e.errno)\n"
)


class TcpListener:
    """A TCP listener on 127.0.0.1 that answers `ok` to each line and counts connections."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> TcpListener:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        self.received.append(line)
        writer.write(b"ok\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def barrier(self) -> None:
        """Connect once ourselves; when that is handled, earlier connections were handled too."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b"barrier\n")
        await reader.readline()
        writer.close()
        await writer.wait_closed()

    def seen(self) -> list[str]:
        return [line.decode() for line in self.received if line != b"barrier\n"]


@case
async def sandbox_network_restricted_vs_enabled(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    policies: list[tuple[str, Json | None]] = [
        ("none", None),
        ("disabled", DISABLED),
        ("external_restricted", external("restricted")),
        ("external_enabled", external("enabled")),
        ("unrestricted_restricted", unrestricted("restricted")),
        ("unrestricted_enabled", unrestricted("enabled")),
        ("root_read_restricted", restricted([root("read")])),
        ("root_read_enabled", restricted([root("read")], network="enabled")),
        ("workspace_restricted", workspace_policy(ctx)),
        ("workspace_enabled", workspace_policy(ctx, network="enabled")),
    ]
    out = []
    async with TcpListener() as listener:
        for index, (label, policy) in enumerate(policies):
            argv = ["python3", "-c", _CONNECT, str(listener.port)]
            result = await run_argv(client, ctx, f"n{index}", argv, policy)
            await listener.barrier()
            out.append([label, result, listener.seen()])
            listener.received.clear()
    return out


@case
async def sandbox_network_socket_families(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    out = []
    policies = [
        ("restricted", workspace_policy(ctx)),
        ("enabled", workspace_policy(ctx, network="enabled")),
        ("external_restricted", external("restricted")),
    ]
    for index, (label, policy) in enumerate(policies):
        result = await run_argv(client, ctx, f"s{index}", ["python3", "-c", _SOCKETS], policy)
        out.append([label, result])
    return out


@case
async def sandbox_pid_namespace_hides_host_processes(ctx: CaseContext) -> Any:
    make_tree(ctx)
    marker = f"sandbox-pid-marker-{os.getpid()}-{ctx.kind}"
    host = await asyncio.create_subprocess_exec(*sleeper(marker, 60))
    try:
        client = await ctx.client()
        # `[s]andbox…` matches the marker but not this script's own command line.
        script = (
            f"n=$(grep -l -a '[s]{marker[1:]}' /proc/[0-9]*/cmdline 2>/dev/null | wc -l);"
            ' if [ "$n" -gt 0 ]; then echo visible; else echo hidden; fi'
        )
        assert await wait_for_marked(marker, 1), "the host marker process did not start"

        out = []
        for index, (label, policy) in enumerate(
            [
                ("none", None),
                ("disabled", DISABLED),
                ("unrestricted", unrestricted("restricted")),
                ("workspace", workspace_policy(ctx)),
            ]
        ):
            out.append([label, await run_sandboxed(client, ctx, f"p{index}", script, policy)])
        return out
    finally:
        host.kill()
        await host.wait()


# -- sandboxDenied ------------------------------------------------------------------------------


_DENIED_SCRIPTS = [
    "exit 1",
    "echo 'Permission denied' >&2; exit 127",
    "exit 2",
    "exit 126",
    "exit 127",
    "exit 159",
    "kill -SYS $$",
    "kill -KILL $$",
    "echo SandBox; exit 3",
    "echo 'operation not permitted'; exit 0",
    "echo LANDLOCK >&2; exit 1",
    "echo seccomp; exit 2",
    "echo 'failed to write file'; exit 5",
    "echo 'read-only file system'; exit 126",
    "echo 'Permission Denied' >&2; exit 1",
    "exit 255",
]


@case
async def sandbox_denied_classification(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    out = []
    for index, script in enumerate(_DENIED_SCRIPTS):
        row = [script]
        for label, policy in [
            ("none", None),
            ("disabled", DISABLED),
            ("ws", workspace_policy(ctx)),
        ]:
            result = await run_sandboxed(client, ctx, f"d{index}-{label}", script, policy)
            row.append([result["start"], result.get("exited")])
        out.append(row)
    return out


@case
async def sandbox_denied_real_denials(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    policy = restricted([root("read")])
    return [
        await run_sandboxed(client, ctx, "erofs", "touch x", policy),
        await run_sandboxed(client, ctx, "quiet", "touch x 2>/dev/null", policy),
        await run_sandboxed(client, ctx, "sh2", "echo x > x", policy),
        await run_sandboxed(client, ctx, "ok0", "touch x; exit 0", policy),
    ]


@case
async def sandbox_denied_is_sticky_on_read(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    await run_sandboxed(client, ctx, "r", "echo permission denied; exit 4", workspace_policy(ctx))
    read = await client.request("process/read", {"processId": "r"})
    if "result" not in read:
        return {k: v for k, v in read.items() if k != "id"}
    result = read["result"]
    return {k: result[k] for k in ("exited", "exitCode", "closed", "sandboxDenied") if k in result}


# -- params errors ------------------------------------------------------------------------------


def _sandbox_variants() -> list[Any]:
    ok = restricted([root("read")])

    def fs_entries(entries: Any) -> Json:
        return context(
            {
                "type": "managed",
                "file_system": {"type": "restricted", "entries": entries},
                "network": "restricted",
            }
        )

    def perms(value: Any) -> Json:
        return {"permissions": value, "windowsSandboxLevel": "disabled"}

    return [
        {},
        {"permissions": {"type": "disabled"}},
        {"windowsSandboxLevel": "disabled"},
        perms({}),
        perms({"type": "bogus"}),
        perms({"type": "Managed", "file_system": {"type": "unrestricted"}, "network": "enabled"}),
        perms({"type": "external"}),
        perms({"type": "external", "network": "bogus"}),
        perms({"type": "managed"}),
        perms({"type": "managed", "network": "enabled"}),
        perms({"type": "managed", "file_system": {"type": "unrestricted"}}),
        perms({"type": "managed", "file_system": {"type": "bogus"}, "network": "restricted"}),
        perms({"type": "managed", "file_system": {"type": "restricted"}, "network": "restricted"}),
        perms({"type": "managed", "file_system": {}, "network": "restricted"}),
        fs_entries([{}]),
        fs_entries([{"path": {"type": "bogus"}, "access": "read"}]),
        fs_entries([{"path": {"type": "special", "value": {"kind": "bogus"}}, "access": "read"}]),
        fs_entries([{"path": {"type": "special", "value": {}}, "access": "read"}]),
        fs_entries([{"path": {"type": "special", "value": {"kind": "root"}}, "access": "bogus"}]),
        fs_entries([{"path": {"type": "special", "value": {"kind": "root"}}}]),
        fs_entries([{"path": {"type": "special"}, "access": "read"}]),
        fs_entries([{"path": {"type": "path"}, "access": "read"}]),
        fs_entries([{"path": {"type": "path", "path": "/tmp"}, "access": "read"}]),
        fs_entries([{"path": {"type": "path", "path": "relative"}, "access": "read"}]),
        fs_entries([{"path": {"type": "glob_pattern"}, "access": "read"}]),
        fs_entries(
            [
                {
                    "path": {"type": "special", "value": {"kind": "project_roots", "subpath": 5}},
                    "access": "read",
                }
            ]
        ),
        fs_entries([{"path": {"type": "special", "value": {"kind": "unknown"}}, "access": "read"}]),
        fs_entries("x"),
        context(managed([], glob_scan_max_depth=0)),
        context(
            {
                "type": "managed",
                "file_system": {"type": "restricted", "entries": [], "glob_scan_max_depth": -1},
                "network": "restricted",
            }
        ),
        context(
            {
                "type": "managed",
                "file_system": {"type": "restricted", "entries": [], "glob_scan_max_depth": "x"},
                "network": "restricted",
            }
        ),
        {**ok, "windowsSandboxLevel": "bogus"},
        {**ok, "windowsSandboxLevel": "Disabled"},
        {**ok, "windowsSandboxLevel": "restrictedToken"},
        {**ok, "windowsSandboxLevel": None},
        {**ok, "windowsSandboxLevel": 1},
        {**ok, "windowsSandboxLevel": {}},
        {**ok, "windowsSandboxLevel": {"disabled": 1}},
        {**ok, "windowsSandboxLevel": {"disabled": None, "mxc": None}},
        {**ok, "cwd": "/tmp"},
        {**ok, "workspaceRoots": ["/tmp"]},
        {**ok, "workspaceRoots": "file:///tmp"},
        {**ok, "workspaceRoots": None},
        {**ok, "useLegacyLandlock": "yes"},
        {**ok, "useLegacyLandlock": None},
        {**ok, "sandboxOverride": "bogus"},
        {**ok, "windowsSandboxProxySettingsMode": "bogus"},
        {**ok, "policyContext": 5},
        [],
        "x",
        5,
        True,
    ]


@case
async def sandbox_params_errors_process_start(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    out = []
    for index, sandbox in enumerate(_sandbox_variants()):
        response = await client.request(
            "process/start", start_params(ctx, f"v{index}", ["true"], sandbox)
        )
        out.append({k: v for k, v in response.items() if k != "id"})
        if "result" in response:
            await client.process_events(f"v{index}", timeout=_PROCESS_TIMEOUT)
    return out


@case
async def sandbox_spawn_failures_reported_up_front(ctx: CaseContext) -> Any:
    """A program that cannot be started (not found on PATH, a missing path, not executable, a
    directory), pipe and PTY, restricted and `disabled` profiles; a script whose interpreter is
    missing (seen only when it runs)."""
    make_tree(ctx)
    ws = ctx.workdir / "ws"
    (ws / "plain").write_text("#!/bin/sh\necho plain\n")
    (ws / "badinterp").write_text("#!/nonexistent/interpreter\n")
    (ws / "badinterp").chmod(0o755)
    (ws / "dir").mkdir()
    client = await ctx.client()
    programs = [
        "definitely-not-a-program-xyz",
        str(ws / "missing"),
        str(ws / "plain"),
        str(ws / "dir"),
        "./plain",
        str(ws / "badinterp"),
    ]
    out: list[Any] = []
    for label, policy in [("ws", workspace_policy(ctx)), ("disabled", DISABLED)]:
        for index, program in enumerate(programs):
            for tty in (False, True):
                process_id = f"{label}-{index}-{'tty' if tty else 'pipe'}"
                result = await run_argv(client, ctx, process_id, [program], policy, tty=tty)
                if "output" in result:  # the helper's panic names the host thread id
                    result = {k: result[k] for k in ("start", "exited")}
                out.append([process_id, program.replace(str(ctx.workdir), "<dir>"), result])
    return out


@case
async def sandbox_spawn_cwd_and_nul(ctx: CaseContext) -> Any:
    """Sandboxed starts check the cwd first (missing: spawnNotFound, a file: spawnFailed), a
    PTY falls back to the home directory, NUL bytes fail as without a sandbox."""
    make_tree(ctx)
    (ctx.workdir / "ws" / "file.txt").write_text("x")
    client = await ctx.client()
    sandbox = restricted([root("read")])
    out = []
    variants: list[tuple[list[str], str, dict[str, Any]]] = [
        (["true"], ctx.uri("ws", "missing"), {}),
        (["true"], ctx.uri("ws", "file.txt"), {}),
        (["pwd"], ctx.uri("ws", "missing"), {"tty": True, "env": {**PATH_ENV, "HOME": "/"}}),
        (["tr\0ue"], ctx.uri("ws"), {}),
        (["true", "a\0b"], ctx.uri("ws"), {}),
    ]
    for index, (argv, cwd, extra) in enumerate(variants):
        response = await client.request(
            "process/start", start_params(ctx, f"c{index}", argv, sandbox, cwd=cwd, **extra)
        )
        out.append({k: v for k, v in response.items() if k != "id"})
        if "result" in response:
            events = await client.process_events(f"c{index}", timeout=_PROCESS_TIMEOUT)
            # Which events, not how many: bwrap writes its message in several writes, which a
            # PTY read may return as one chunk or several.
            out.append(sorted({e["method"] for e in events}))
    return out


@case
async def sandbox_params_errors_fs(ctx: CaseContext) -> Any:
    make_tree(ctx)
    (ctx.workdir / "ws" / "file.txt").write_text("x")
    client = await ctx.client()
    out = []
    for sandbox in _sandbox_variants():
        out.append(
            await fs_request(
                client, ctx, "fs/readFile", {"path": ctx.uri("ws", "file.txt"), "sandbox": sandbox}
            )
        )
    return out


@case
async def sandbox_params_accepted_members(ctx: CaseContext) -> Any:
    """Members that are accepted (and, on Linux, ignored)."""
    make_tree(ctx)
    client = await ctx.client()
    ok = workspace_policy(ctx)
    variants: list[Json] = [
        {**ok, "windowsSandboxLevel": "restricted-token"},
        {**ok, "windowsSandboxLevel": "elevated"},
        {**ok, "windowsSandboxLevel": {"disabled": None}},
        {**ok, "windowsSandboxLevel": {"elevated": None}},
        {**ok, "sandboxOverride": "noOverride"},
        {**ok, "sandboxOverride": "bypassSandboxFirstAttempt"},
        {**ok, "sandboxOverride": "escalatedSandboxWithRestrictions"},
        {**ok, "windowsSandboxProxySettingsMode": "reconcile"},
        {**ok, "windowsSandboxProxySettingsMode": "preserve"},
        {**ok, "policyContext": {}},
        {**ok, "policyContext": {"anything": [1]}},
        {**ok, "policyContext": None},
        {**ok, "cwd": None},
        {**ok, "cwd": "file:///nonexistent-sandbox-cwd"},
        {**ok, "useLegacyLandlock": False},
        {**ok, "windowsSandboxPrivateDesktop": "ignored"},
        {**ok, "unknownMember": {"x": 1}},
        {
            **ok,
            "permissions": {
                "type": "managed",
                "file_system": {"type": "unrestricted", "extra": 1},
                "network": "enabled",
                "extra": 1,
            },
        },
        {**ok, "permissions": {"type": "disabled", "network": "bogus"}},
    ]
    out = []
    for index, sandbox in enumerate(variants):
        out.append(
            await run_sandboxed(client, ctx, f"a{index}", attempts(("ws", "echo w > p")), sandbox)
        )
    return out


@case
async def sandbox_params_host_invalid_paths(ctx: CaseContext) -> Any:
    make_tree(ctx)
    (ctx.workdir / "ws" / "file.txt").write_text("x")
    client = await ctx.client()
    variants = [
        restricted(
            [root("read"), {"path": {"type": "path", "path": "file://server/x"}, "access": "read"}]
        ),
        restricted(
            [root("read"), {"path": {"type": "path", "path": "file:///C:/x"}, "access": "read"}]
        ),
        restricted([root("read")], cwd="file://server/x"),
        restricted([root("read")], workspaceRoots=["file://server/x"]),
        restricted([root("read")], workspaceRoots=["file:///C:/x"]),
    ]
    out = []
    for index, sandbox in enumerate(variants):
        start = await client.request(
            "process/start", start_params(ctx, f"h{index}", ["true"], sandbox)
        )
        if "result" in start:
            await client.process_events(f"h{index}", timeout=_PROCESS_TIMEOUT)
        read = await fs_request(
            client, ctx, "fs/readFile", {"path": ctx.uri("ws", "file.txt"), "sandbox": sandbox}
        )
        out.append([{k: v for k, v in start.items() if k != "id"}, read])
    return out


@case
async def sandbox_windows_level_mxc_process_vs_fs(ctx: CaseContext) -> Any:
    make_tree(ctx)
    (ctx.workdir / "ws" / "file.txt").write_text("x")
    client = await ctx.client()
    out = []
    for index, level in enumerate(["mxc", {"mxc": None}]):
        for label, base in [("disabled", DISABLED), ("workspace", workspace_policy(ctx))]:
            sandbox = {**base, "windowsSandboxLevel": level}
            start = await client.request(
                "process/start", start_params(ctx, f"m{index}{label}", ["true"], sandbox)
            )
            if "result" in start:
                await client.process_events(f"m{index}{label}", timeout=_PROCESS_TIMEOUT)
            read = await fs_request(
                client, ctx, "fs/readFile", {"path": ctx.uri("ws", "file.txt"), "sandbox": sandbox}
            )
            write = await fs_request(
                client,
                ctx,
                "fs/writeFile",
                {"path": ctx.uri("ws", "new.txt"), "dataBase64": "eA==", "sandbox": sandbox},
            )
            out.append([label, {k: v for k, v in start.items() if k != "id"}, read, write])
    out.append(snapshot(ctx.workdir))
    return out


# -- enforceManagedNetwork / managedNetwork / useLegacyLandlock ---------------------------------


@case
async def sandbox_enforce_managed_network(ctx: CaseContext) -> Any:
    make_tree(ctx)
    client = await ctx.client()
    script = "echo ran"
    variants: list[tuple[str, Json | None, Json]] = [
        ("no_sandbox", None, {"enforceManagedNetwork": True}),
        ("no_sandbox_managed", None, {"enforceManagedNetwork": True, "managedNetwork": {}}),
        ("disabled", DISABLED, {"enforceManagedNetwork": True}),
        ("unrestricted_enabled", unrestricted("enabled"), {"enforceManagedNetwork": True}),
        ("workspace", workspace_policy(ctx), {"enforceManagedNetwork": True}),
        (
            "workspace_managed",
            workspace_policy(ctx),
            {
                "enforceManagedNetwork": True,
                "managedNetwork": {"loopbackPorts": [1], "allowLocalBinding": True},
            },
        ),
        (
            "false_with_managed",
            workspace_policy(ctx),
            {"enforceManagedNetwork": False, "managedNetwork": {}},
        ),
        ("managed_only", workspace_policy(ctx), {"managedNetwork": {"domainPolicy": {}}}),
        ("bad_port", workspace_policy(ctx), {"managedNetwork": {"loopbackPorts": [70000]}}),
        ("null_flag", workspace_policy(ctx), {"enforceManagedNetwork": None}),
        ("string_flag", workspace_policy(ctx), {"enforceManagedNetwork": "yes"}),
    ]
    out = []
    for index, (label, sandbox, extra) in enumerate(variants):
        out.append([label, await run_sandboxed(client, ctx, f"m{index}", script, sandbox, **extra)])
    return out


@case
async def sandbox_legacy_landlock(ctx: CaseContext) -> Any:
    make_tree(ctx)
    (ctx.workdir / "ws" / "file.txt").write_text("x")
    client = await ctx.client()
    variants: list[tuple[str, Json]] = [
        ("root_read", restricted([root("read")], useLegacyLandlock=True)),
        ("workspace", workspace_policy(ctx) | {"useLegacyLandlock": True}),
        ("minimal", restricted([special("minimal", "read")], useLegacyLandlock=True)),
        ("root_write", restricted([root("write")], useLegacyLandlock=True)),
        ("unrestricted", unrestricted("restricted") | {"useLegacyLandlock": True}),
        ("disabled", DISABLED | {"useLegacyLandlock": True}),
        ("false", workspace_policy(ctx) | {"useLegacyLandlock": False}),
    ]
    out = []
    for index, (label, sandbox) in enumerate(variants):
        process = await run_sandboxed(
            client, ctx, f"l{index}", attempts(("ws", "echo w > p")), sandbox
        )
        read = await fs_request(
            client, ctx, "fs/readFile", {"path": ctx.uri("ws", "file.txt"), "sandbox": sandbox}
        )
        write = await fs_request(
            client,
            ctx,
            "fs/writeFile",
            {"path": ctx.uri("ws", "new.txt"), "dataBase64": "eA==", "sandbox": sandbox},
        )
        out.append([label, process, read, write])
    out.append(snapshot(ctx.workdir))
    return out


# -- fs methods under restricted profiles -------------------------------------------------------


def _fs_tree(ctx: CaseContext) -> None:
    make_tree(ctx, "ws/sub", "ws/den", "outside/dir")
    ws = ctx.workdir / "ws"
    (ws / "a.txt").write_text("A")
    (ws / "sub" / "b.txt").write_text("B")
    (ws / "den" / "s.txt").write_text("S")
    (ctx.workdir / "outside" / "dir" / "c.txt").write_text("C")


async def _fs_battery(client: WireClient, ctx: CaseContext, sandbox: Json, tag: str) -> list[Any]:
    """Every fs method against: a readable file outside, the writable workspace, the `den`
    directory (denied in some policies)."""

    def req(method: str, **params: Any) -> tuple[str, Json]:
        return method, {**params, "sandbox": sandbox}

    walk = walk_options()
    requests = [
        req("fs/readFile", path=ctx.uri("outside", "target.txt")),
        req("fs/readFile", path=ctx.uri("ws", "a.txt")),
        req("fs/readFile", path=ctx.uri("ws", "den", "s.txt")),
        req("fs/getMetadata", path=ctx.uri("ws", "den")),
        req("fs/getMetadata", path=ctx.uri("ws", "den", "s.txt")),
        req("fs/canonicalize", path=ctx.uri("ws", "den", "s.txt")),
        req("fs/readDirectory", path=ctx.uri("ws", "den")),
        req("fs/readDirectory", path=ctx.uri("ws")),
        req("fs/walk", path=ctx.uri("ws"), options=walk),
        req("fs/writeFile", path=ctx.uri("ws", "new.txt"), dataBase64="bmV3"),
        req("fs/writeFile", path=ctx.uri("outside", "target.txt"), dataBase64="eA=="),
        req("fs/writeFile", path=ctx.uri("ws", "den", "s.txt"), dataBase64="eA=="),
        req("fs/createDirectory", path=ctx.uri("ws", "made")),
        req("fs/createDirectory", path=ctx.uri("outside", "made")),
        req(
            "fs/copy",
            sourcePath=ctx.uri("outside", "target.txt"),
            destinationPath=ctx.uri("ws", "copy.txt"),
            recursive=False,
        ),
        req(
            "fs/copy",
            sourcePath=ctx.uri("ws", "a.txt"),
            destinationPath=ctx.uri("outside", "copy.txt"),
            recursive=False,
        ),
        req(
            "fs/copy",
            sourcePath=ctx.uri("ws", "den", "s.txt"),
            destinationPath=ctx.uri("ws", "copy2.txt"),
            recursive=False,
        ),
        req(
            "fs/copy",
            sourcePath=ctx.uri("outside", "dir"),
            destinationPath=ctx.uri("ws", "dircopy"),
            recursive=True,
        ),
        req("fs/remove", path=ctx.uri("ws", "sub", "b.txt")),
        req("fs/remove", path=ctx.uri("outside", "dir")),
        req("fs/remove", path=ctx.uri("ws", "den")),
        req("fs/remove", path=ctx.uri("outside", "missing"), force=False),
    ]
    out: list[Any] = []
    for method, params in requests:
        response = await fs_request(client, ctx, method, params)
        if method == "fs/getMetadata":
            response = metadata_flags(response)
        elif method == "fs/readDirectory":
            response = sorted_entries(response)
        out.append([method, response])
    # Handles: read, replace (+ write + close + read back), replace outside, read denied.
    handles = [
        req("fs/open", handleId=f"{tag}-r", path=ctx.uri("outside", "target.txt")),
        req("fs/open", handleId=f"{tag}-w", path=ctx.uri("ws", "h.txt"), mode="replace"),
        req("fs/open", handleId=f"{tag}-o", path=ctx.uri("outside", "h.txt"), mode="replace"),
        req("fs/open", handleId=f"{tag}-d", path=ctx.uri("ws", "den", "s.txt")),
    ]
    for method, params in handles:
        out.append([method, await fs_request(client, ctx, method, params)])
    out.append(
        await fs_request(
            client, ctx, "fs/readBlock", {"handleId": f"{tag}-r", "offset": 0, "len": 100}
        )
    )
    out.append(
        await fs_request(
            client, ctx, "fs/writeBlock", {"handleId": f"{tag}-w", "offset": 0, "chunk": "aGFuZGxl"}
        )
    )
    for suffix in ("r", "w", "o", "d"):
        await client.request("fs/close", {"handleId": f"{tag}-{suffix}"})
    out.append(snapshot(ctx.workdir))
    return out


@case
async def sandbox_fs_root_read_only(ctx: CaseContext) -> Any:
    _fs_tree(ctx)
    client = await ctx.client()
    return await _fs_battery(client, ctx, restricted([root("read")]), "ro")


@case
async def sandbox_fs_workspace_writable(ctx: CaseContext) -> Any:
    _fs_tree(ctx)
    client = await ctx.client()
    return await _fs_battery(client, ctx, workspace_policy(ctx), "ws")


@case
async def sandbox_fs_workspace_with_deny(ctx: CaseContext) -> Any:
    _fs_tree(ctx)
    client = await ctx.client()
    policy = workspace_policy(ctx, path_entry(ctx, "ws", "den", access="deny"))
    return await _fs_battery(client, ctx, policy, "deny")


@case
async def sandbox_fs_workspace_with_none(ctx: CaseContext) -> Any:
    _fs_tree(ctx)
    client = await ctx.client()
    policy = workspace_policy(ctx, path_entry(ctx, "ws", "den", access="none"))
    return await _fs_battery(client, ctx, policy, "none")


@case
async def sandbox_fs_minimal(ctx: CaseContext) -> Any:
    _fs_tree(ctx)
    client = await ctx.client()
    policy = restricted([special("minimal", "read"), path_entry(ctx, "ws", access="write")])
    return await _fs_battery(client, ctx, policy, "min")


@case
async def sandbox_fs_unrestricted_profiles(ctx: CaseContext) -> Any:
    _fs_tree(ctx)
    client = await ctx.client()
    out = []
    for index, policy in enumerate(
        [DISABLED, external("restricted"), unrestricted("restricted"), restricted([root("write")])]
    ):
        out.append(
            [
                await fs_request(
                    client,
                    ctx,
                    "fs/writeFile",
                    {
                        "path": ctx.uri("outside", f"w{index}.txt"),
                        "dataBase64": "eA==",
                        "sandbox": policy,
                    },
                ),
                await fs_request(
                    client,
                    ctx,
                    "fs/readDirectory",
                    {"path": ctx.uri("ws"), "sandbox": policy},
                ),
            ]
        )
    for row in out:
        row[-1] = sorted_entries(row[-1])
    out.append(snapshot(ctx.workdir))
    return out


@case
async def sandbox_fs_dynamic_permissions_require_cwd(ctx: CaseContext) -> Any:
    _fs_tree(ctx)
    client = await ctx.client()
    ws = ctx.uri("ws")
    variants: list[tuple[str, Json]] = [
        ("project_roots", restricted([root("read"), special("project_roots", "write")])),
        (
            "project_roots_ws",
            restricted([root("read"), special("project_roots", "write")], workspaceRoots=[ws]),
        ),
        ("project_roots_read", restricted([root("read"), special("project_roots", "read")])),
        ("cwd_special", restricted([root("read"), special("current_working_directory", "write")])),
        ("relative_glob", restricted([root("read"), glob_entry("*.txt", "deny")])),
        (
            "absolute_glob",
            restricted([root("read"), glob_entry(f"{ctx.workdir}/ws/*.txt", "deny")]),
        ),
        ("tmpdir", restricted([root("read"), special("tmpdir", "write")])),
        (
            "project_roots_ws_cwd",
            restricted(
                [root("read"), special("project_roots", "write")],
                workspaceRoots=[ws],
                cwd=ctx.uri(),
            ),
        ),
        (
            "cwd_special_ws_cwd",
            restricted(
                [root("read"), special("current_working_directory", "write")],
                workspaceRoots=[ws],
                cwd="file:///nonexistent-sandbox-cwd",
            ),
        ),
        (
            "project_roots_no_ws_cwd",
            restricted([root("read"), special("project_roots", "write")], cwd=ws),
        ),
        ("relative_glob_cwd", restricted([root("read"), glob_entry("*.txt", "deny")], cwd=ws)),
    ]
    out = []
    for index, (label, sandbox) in enumerate(variants):
        read = await fs_request(
            client, ctx, "fs/readFile", {"path": ctx.uri("ws", "a.txt"), "sandbox": sandbox}
        )
        write = await fs_request(
            client,
            ctx,
            "fs/writeFile",
            {"path": ctx.uri("ws", f"w{index}.txt"), "dataBase64": "eA==", "sandbox": sandbox},
        )
        out.append([label, read, write])
    out.append(snapshot(ctx.workdir))
    return out


@case
async def sandbox_fs_protected_names(ctx: CaseContext) -> Any:
    _fs_tree(ctx)
    ws = ctx.workdir / "ws"
    (ws / ".git").mkdir()
    (ws / ".git" / "config").write_text("cfg")
    (ws / "copy-src.txt").write_text("src")
    client = await ctx.client()
    policy = workspace_policy(ctx)
    requests: list[tuple[str, Json]] = [
        ("fs/writeFile", {"path": ctx.uri("ws", ".git", "config"), "dataBase64": "eA=="}),
        ("fs/writeFile", {"path": ctx.uri("ws", ".git", "new"), "dataBase64": "eA=="}),
        ("fs/remove", {"path": ctx.uri("ws", ".git")}),
        ("fs/remove", {"path": ctx.uri("ws", ".git", "config")}),
        (
            "fs/copy",
            {
                "sourcePath": ctx.uri("ws", "copy-src.txt"),
                "destinationPath": ctx.uri("ws", ".git", "config"),
                "recursive": False,
            },
        ),
        ("fs/writeFile", {"path": ctx.uri("ws", ".codex"), "dataBase64": "eA=="}),
        ("fs/writeFile", {"path": ctx.uri("ws", ".codex", "x"), "dataBase64": "eA=="}),
        ("fs/createDirectory", {"path": ctx.uri("ws", ".agents", "x")}),
        ("fs/createDirectory", {"path": ctx.uri("ws", ".aws")}),
        ("fs/writeFile", {"path": ctx.uri("ws", "sub", ".git"), "dataBase64": "eA=="}),
        ("fs/readFile", {"path": ctx.uri("ws", ".git", "config")}),
    ]
    out = []
    for method, params in requests:
        out.append([method, await fs_request(client, ctx, method, {**params, "sandbox": policy})])
    deny = workspace_policy(ctx, path_entry(ctx, "ws", "den", access="deny"))
    out.append(
        await fs_request(
            client,
            ctx,
            "fs/walk",
            {"path": ctx.uri("ws"), "options": walk_options(), "sandbox": deny},
        )
    )
    out.append(
        sorted_entries(
            await fs_request(
                client, ctx, "fs/readDirectory", {"path": ctx.uri("ws"), "sandbox": deny}
            )
        )
    )
    out.append(snapshot(ctx.workdir))
    return out


@case
async def sandbox_fs_escape_attempts(ctx: CaseContext) -> Any:
    _fs_tree(ctx)
    ws = ctx.workdir / "ws"
    target = ctx.workdir / "outside" / "target.txt"
    os.symlink(target, ws / "link")
    os.symlink(ctx.workdir / "outside", ws / "dirlink")
    client = await ctx.client()
    policy = workspace_policy(ctx)
    data = "ZXNjYXBl"
    requests: list[tuple[str, Json]] = [
        ("fs/writeFile", {"path": ctx.uri("ws") + "/../outside/target.txt", "dataBase64": data}),
        (
            "fs/writeFile",
            {"path": ctx.uri("ws") + "/%2E%2E/outside/target.txt", "dataBase64": data},
        ),
        ("fs/writeFile", {"path": ctx.uri("outside", "target.txt"), "dataBase64": data}),
        ("fs/writeFile", {"path": ctx.uri("ws", "link"), "dataBase64": data}),
        ("fs/writeFile", {"path": ctx.uri("ws", "dirlink", "target.txt"), "dataBase64": data}),
        ("fs/writeFile", {"path": f"file:///proc/self/root{target}", "dataBase64": data}),
        ("fs/open", {"path": ctx.uri("ws", "link"), "handleId": "esc", "mode": "replace"}),
        (
            "fs/copy",
            {
                "sourcePath": ctx.uri("ws", "a.txt"),
                "destinationPath": ctx.uri("ws", "link"),
                "recursive": False,
            },
        ),
        (
            "fs/copy",
            {
                "sourcePath": ctx.uri("ws", "sub"),
                "destinationPath": ctx.uri("ws", "dirlink", "sub"),
                "recursive": True,
            },
        ),
        ("fs/createDirectory", {"path": ctx.uri("ws", "dirlink", "made")}),
        ("fs/remove", {"path": ctx.uri("ws", "dirlink", "target.txt")}),
        ("fs/remove", {"path": ctx.uri("ws", "link")}),
    ]
    out = []
    for method, params in requests:
        out.append([method, await fs_request(client, ctx, method, {**params, "sandbox": policy})])
    await client.request("fs/close", {"handleId": "esc"})
    out.append(snapshot(ctx.workdir))
    return out


@case
async def sandbox_fs_symlink_swapped_between_requests(ctx: CaseContext) -> Any:
    _fs_tree(ctx)
    swap = ctx.workdir / "ws" / "swap"
    swap.mkdir()
    client = await ctx.client()
    policy = workspace_policy(ctx)
    params = {
        "path": ctx.uri("ws", "swap", "target.txt"),
        "dataBase64": "c3dhcA==",
        "sandbox": policy,
    }
    first = await fs_request(client, ctx, "fs/writeFile", params)
    (swap / "target.txt").unlink(missing_ok=True)
    swap.rmdir()
    os.symlink(ctx.workdir / "outside", swap)
    second = await fs_request(client, ctx, "fs/writeFile", params)
    return [first, second, snapshot(ctx.workdir)]


@case
async def sandbox_fs_path_entry_naming_a_file(ctx: CaseContext) -> Any:
    _fs_tree(ctx)
    client = await ctx.client()
    policy = restricted([root("read"), path_entry(ctx, "ws", "a.txt", access="write")])
    return [
        await fs_request(
            client, ctx, "fs/readFile", {"path": ctx.uri("ws", "a.txt"), "sandbox": policy}
        ),
        await fs_request(
            client,
            ctx,
            "fs/writeFile",
            {"path": ctx.uri("ws", "a.txt"), "dataBase64": "eA==", "sandbox": policy},
        ),
        snapshot(ctx.workdir),
    ]


@case
async def sandbox_fs_slash_tmp_and_tmpdir(ctx: CaseContext) -> Any:
    _fs_tree(ctx)
    client = await ctx.client()
    out: list[Any] = [ctx.workdir.resolve().is_relative_to("/tmp")]
    for label, sandbox in [
        ("slash_tmp", restricted([root("read"), special("slash_tmp", "write")])),
        ("tmpdir", restricted([root("read"), special("tmpdir", "write")])),
    ]:
        out.append(
            [
                label,
                await fs_request(
                    client,
                    ctx,
                    "fs/writeFile",
                    {
                        "path": ctx.uri("outside", f"{label}.txt"),
                        "dataBase64": "eA==",
                        "sandbox": sandbox,
                    },
                ),
            ]
        )
    out.append(snapshot(ctx.workdir))
    return out
