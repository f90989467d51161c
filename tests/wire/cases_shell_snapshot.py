"""Differential wire cases for shell snapshots (`process/start.shellSnapshot`).

What is compared is what a command observes, never how the snapshot travels (the rewritten
argv and the descriptor number are internal): each case gives the command a HOME whose login
profile prints a marker on stderr and defines a variable, a function and an alias, then checks
that login-shell commands of a scope see the definitions without the profile running again.
The capture runs with the command's own environment, so the reference needs no special setup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.harness.differential import Case, CaseContext
from tests.harness.wire import Json
from tests.wire.cases_sandbox import summarize_streams

CASES: dict[str, Case] = {}

MARKER = "PROFILE-MARKER-RAN"
_TIMEOUT = 30.0


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


BASHRC = f"""echo "{MARKER} bashrc" >&2
export SNAPVAR=from_profile
export SNAPPATHLIKE="/opt/a b:/opt/c"
export SNAPQUOTE="it's \\"quoted\\" \\$HOME \\`x\\`"
snapfunc() {{ echo "snapfunc called with $*"; }}
alias snapalias='echo alias-ran'
set -o noglob
"""
BASH_PROFILE = f"""echo "{MARKER} bash_profile" >&2
[ -r "$HOME/.bashrc" ] && . "$HOME/.bashrc"
"""
PROFILE = f"""echo "{MARKER} profile" >&2
export PROFVAR=from_dot_profile
"""

# Prints what the command can see of the profile (no line numbers, no argv, no descriptors).
PROBE = "; ".join(
    [
        'echo "SNAPVAR=$SNAPVAR PROFVAR=$PROFVAR"',
        'echo "SNAPPATHLIKE=$SNAPPATHLIKE"',
        'echo "SNAPQUOTE=$SNAPQUOTE"',
        "snapfunc a b 2>/dev/null || echo no-function",
        "alias snapalias 2>/dev/null || echo no-alias",
        "case $- in *f*) echo noglob-on;; *) echo noglob-off;; esac",
        'echo "FROMENV=${FROMENV-unset}"',
    ]
)
SH_PROBE = 'echo "PROFVAR=$PROFVAR SNAPVAR=$SNAPVAR"; echo "FROMENV=${FROMENV-unset}"'


def make_home(ctx: CaseContext) -> Path:
    home = ctx.workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / ".bashrc").write_text(BASHRC)
    (home / ".bash_profile").write_text(BASH_PROFILE)
    (home / ".profile").write_text(PROFILE)
    (ctx.workdir / "ws").mkdir(exist_ok=True)
    return home


def snapshot_request(scope: str, name: str = "bash", path: str = "/bin/bash") -> Json:
    return {"scopeId": scope, "shell": {"name": name, "path": path}}


async def run(
    ctx: CaseContext,
    client: Any,
    process_id: str,
    argv: list[str],
    env: dict[str, str],
    **extra: Any,
) -> Json:
    params: Json = {
        "processId": process_id,
        "argv": argv,
        "cwd": ctx.uri("ws"),
        "env": env,
        "tty": False,
        **extra,
    }
    response = await client.request("process/start", params, timeout=_TIMEOUT)
    response = {k: v for k, v in response.items() if k != "id"}
    if "error" in response:
        return {"start": response}
    events = await client.process_events(process_id, timeout=_TIMEOUT)
    summary = summarize_streams(events)  # each stream whole: two pipes interleave arbitrarily
    if extra.get("tty"):  # the terminal's line endings
        summary["output"] = {s: text.replace("\r\n", "\n") for s, text in summary["output"].items()}
    return {"start": response, **summary}


@case
async def shell_snapshot_replays_login_profile(ctx: CaseContext) -> Any:
    """First and later uses of a scope see the profile's variable, function, alias and
    options; the profile's marker never shows; the command's own environment wins over the
    snapshot; a scope's snapshot is kept even when a later command's HOME differs."""
    home = make_home(ctx)
    client = await ctx.client()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    argv = ["/bin/bash", "-lc", PROBE]
    out = [
        await run(ctx, client, "first", argv, env, shellSnapshot=snapshot_request("s1")),
        await run(ctx, client, "second", argv, env, shellSnapshot=snapshot_request("s1")),
        await run(
            ctx,
            client,
            "env-wins",
            argv,
            {**env, "SNAPVAR": "from_request", "FROMENV": "set"},
            shellSnapshot=snapshot_request("s1"),
        ),
        await run(
            ctx,
            client,
            "other-home",
            argv,
            {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent-home"},
            shellSnapshot=snapshot_request("s1"),
        ),
        await run(
            ctx,
            client,
            "extra-args",
            ["/bin/bash", "-lc", 'echo "$0 $1 $SNAPVAR"', "zero", "one"],
            env,
            shellSnapshot=snapshot_request("s1"),
        ),
    ]
    return out


@case
async def shell_snapshot_only_for_the_login_shell_argv(ctx: CaseContext) -> Any:
    """Commands that are not `[shell.path, "-lc", script]` run unchanged (the profile runs
    for `-lc` without a snapshot, not at all for `-c`); so does a bare `-lc`."""
    home = make_home(ctx)
    client = await ctx.client()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    request = {"shellSnapshot": snapshot_request("s2")}
    return [
        await run(ctx, client, "no-snapshot", ["/bin/bash", "-lc", PROBE], env),
        await run(ctx, client, "dash-c", ["/bin/bash", "-c", PROBE], env, **request),
        await run(ctx, client, "relative", ["bash", "-lc", PROBE], env, **request),
        await run(ctx, client, "other-shell", ["/bin/sh", "-lc", SH_PROBE], env, **request),
        await run(ctx, client, "bare-lc", ["/bin/bash", "-lc"], env, **request),
        await run(ctx, client, "null", ["/bin/bash", "-lc", PROBE], env, shellSnapshot=None),
    ]


@case
async def shell_snapshot_scopes_shells_and_policies(ctx: CaseContext) -> Any:
    """Each scope, shell and environment policy has its own snapshot: `sh` replays
    `.profile`; a scope first used with another HOME keeps that one; an `envPolicy` scope is
    captured from the environment the policy builds."""
    home = make_home(ctx)
    client = await ctx.client()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    policy = {
        "inherit": "none",
        "ignoreDefaultExcludes": True,
        "exclude": [],
        "set": {"HOME": str(home), "PATH": "/usr/bin:/bin"},
        "includeOnly": [],
    }
    argv = ["/bin/bash", "-lc", PROBE]
    return [
        await run(
            ctx,
            client,
            "sh",
            ["/bin/sh", "-lc", SH_PROBE],
            env,
            shellSnapshot=snapshot_request("s3", "sh", "/bin/sh"),
        ),
        await run(
            ctx,
            client,
            "sh-again",
            ["/bin/sh", "-lc", SH_PROBE],
            env,
            shellSnapshot=snapshot_request("s3", "sh", "/bin/sh"),
        ),
        await run(
            ctx,
            client,
            "empty-home-first",
            argv,
            {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent-home"},
            shellSnapshot=snapshot_request("s4"),
        ),
        await run(ctx, client, "real-home-later", argv, env, shellSnapshot=snapshot_request("s4")),
        await run(
            ctx, client, "policy", argv, {}, envPolicy=policy, shellSnapshot=snapshot_request("s5")
        ),
        await run(
            ctx,
            client,
            "policy-again",
            argv,
            {},
            envPolicy=policy,
            shellSnapshot=snapshot_request("s5"),
        ),
    ]


@case
async def shell_snapshot_with_tty_and_sandbox(ctx: CaseContext) -> Any:
    """A snapshot is captured and replayed in a PTY and inside a restricted sandbox (where the
    capture itself runs sandboxed: a `minimal` view hides the HOME, so nothing is replayed)."""
    home = make_home(ctx)
    client = await ctx.client()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    argv = ["/bin/bash", "-lc", PROBE]
    read_only = {
        "permissions": {
            "type": "managed",
            "file_system": {
                "type": "restricted",
                "entries": [
                    {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"}
                ],
            },
            "network": "restricted",
        },
        "windowsSandboxLevel": "disabled",
    }
    minimal = {
        **read_only,
        "permissions": {
            "type": "managed",
            "file_system": {
                "type": "restricted",
                "entries": [
                    {"path": {"type": "special", "value": {"kind": "minimal"}}, "access": "read"}
                ],
            },
            "network": "restricted",
        },
    }
    return [
        await run(ctx, client, "tty", argv, env, tty=True, shellSnapshot=snapshot_request("t1")),
        await run(
            ctx, client, "tty-again", argv, env, tty=True, shellSnapshot=snapshot_request("t1")
        ),
        await run(
            ctx,
            client,
            "sandboxed",
            argv,
            env,
            sandbox=read_only,
            shellSnapshot=snapshot_request("t2"),
        ),
        await run(
            ctx,
            client,
            "sandboxed-again",
            argv,
            env,
            sandbox=read_only,
            shellSnapshot=snapshot_request("t2"),
        ),
        await run(
            ctx, client, "minimal", argv, env, sandbox=minimal, shellSnapshot=snapshot_request("t3")
        ),
    ]


@case
async def shell_snapshot_failed_capture_runs_unchanged(ctx: CaseContext) -> Any:
    """A profile that exits during the capture: the scope's commands run as sent (the login
    shell runs its profile as usual), on every use; a missing shell fails like a missing
    program."""
    home = ctx.workdir / "exiting-home"
    home.mkdir(parents=True)
    (home / ".bashrc").write_text(f'export EXITVAR=yes\necho "{MARKER} exiting" >&2\nexit 3\n')
    (home / ".profile").write_text("export PROFVAR=from_dot_profile\n")
    (ctx.workdir / "ws").mkdir()
    client = await ctx.client()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    argv = ["/bin/bash", "-lc", 'echo "EXITVAR=$EXITVAR PROFVAR=$PROFVAR"']
    return [
        await run(ctx, client, "first", argv, env, shellSnapshot=snapshot_request("f1")),
        await run(ctx, client, "again", argv, env, shellSnapshot=snapshot_request("f1")),
        await run(
            ctx,
            client,
            "missing-shell",
            ["/nonexistent/bash", "-lc", "echo hi"],
            env,
            shellSnapshot=snapshot_request("f2", "bash", "/nonexistent/bash"),
        ),
    ]
