"""Differential wire cases for executor discovery: `fs/watchMissing` + `fs/missingChanged`,
`environmentConfig/read`, `capabilities/discoverV2` and `capabilityRoots/discoverV1`.

Cases that read `$CODEX_HOME` or `$HOME` start a dedicated server (`ctx.server()`) whose
`CODEX_HOME` and `HOME` point into a fixture tree. That tree lives in the user's cache, not in
the temp dir: the reference refuses to create its sandbox helper under a temporary
`CODEX_HOME`, and sandboxed discovery needs it. Its path is the same for both servers of one
test, so paths in the answers compare equal.

Watch sequences stay deterministic without sleeps: a change that must not fire is followed by
one that must, and the case waits for that notification; inotify reports in order, so a wrong
notification would have arrived first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.harness.differential import Case, CaseContext
from tests.harness.servers import CACHE_DIR
from tests.harness.wire import Json, WireClient

CASES: dict[str, Case] = {}

MISSING_CHANGED = "fs/missingChanged"
WARNING = "some capability metadata could not be loaded; discovery may be incomplete"


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def uri(path: Path | str) -> str:
    return "file://" + str(path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def skill(name: str | None, description: str | None, extra: str = "") -> str:
    lines = ["---"]
    if name is not None:
        lines.append(f"name: {name}")
    if description is not None:
        lines.append(f"description: {description}")
    return "\n".join([*lines, *([extra] if extra else []), "---", "body", ""])


@contextmanager
def fixture_root(ctx: CaseContext) -> Iterator[Path]:
    """A fresh directory outside the temp dir, the same path for both servers of a test."""
    test_dir = ctx.workdir.parent
    digest = hashlib.sha256(str(test_dir).encode()).hexdigest()[:10]
    root = CACHE_DIR / "discovery-cases" / f"{test_dir.name}-{digest}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def dedicated(ctx: CaseContext, codex_home: Path, home: Path) -> WireClient:
    url = await ctx.server({"CODEX_HOME": str(codex_home), "HOME": str(home)})
    return await ctx.client(url=url)


def answer(response: Json) -> Any:
    return response.get("result", response.get("error"))


# -- gates and params ---------------------------------------------------------------------------

DISCOVERY_REQUESTS: list[tuple[str, Any]] = [
    ("fs/watchMissing", {"watchId": 1, "missing": []}),
    (
        "environmentConfig/read",
        {"cwd": "file:///", "configPaths": [["a"]], "requirementsPaths": []},
    ),
    ("capabilities/discoverV2", {"cwd": "file:///"}),
    ("capabilityRoots/discoverV1", {"roots": []}),
]


@case
async def discovery_gates(ctx: CaseContext) -> Any:
    """Each method's family in the handshake gate (before `initialize`, before `initialized`)."""
    client = await ctx.client(initialize=False)
    before = [answer(await client.request(m, p)) for m, p in DISCOVERY_REQUESTS]
    await client.request("initialize", {"clientName": "gates"})
    between = [answer(await client.request(m, p)) for m, p in DISCOVERY_REQUESTS]
    return [before, between]


@case
async def discovery_params_errors(ctx: CaseContext) -> Any:
    client = await ctx.client()
    requests: list[tuple[str, Any]] = [
        ("fs/watchMissing", []),
        ("fs/watchMissing", 5),
        ("fs/watchMissing", {"watchId": 1}),
        ("fs/watchMissing", {"watchId": -1, "missing": []}),
        ("fs/watchMissing", {"watchId": 2**64, "missing": []}),
        ("fs/watchMissing", {"watchId": 1, "missing": ["/tmp/x"]}),
        ("fs/watchMissing", {"watchId": 1, "missing": [], "present": ["file:///tmp"]}),
        ("fs/watchMissing", [1, []]),
        ("fs/watchMissing", [1, [], None, 4]),
        ("environmentConfig/read", []),
        ("environmentConfig/read", "x"),
        ("environmentConfig/read", {"cwd": "file:///"}),
        ("environmentConfig/read", {"cwd": "file:///", "configPaths": [], "requirementsPaths": []}),
        (
            "environmentConfig/read",
            {"cwd": "file:///", "configPaths": [[]], "requirementsPaths": []},
        ),
        (
            "environmentConfig/read",
            {"cwd": "file:///", "configPaths": [["a"]], "requirementsPaths": [[]]},
        ),
        (
            "environmentConfig/read",
            {"cwd": "file:///", "configPaths": ["a"], "requirementsPaths": []},
        ),
        (
            "environmentConfig/read",
            {"cwd": "file://srv/x", "configPaths": [["a"]], "requirementsPaths": []},
        ),
        (
            "environmentConfig/read",
            {"cwd": "file:///C:/x", "configPaths": [["a"]], "requirementsPaths": []},
        ),
        ("capabilities/discoverV2", []),
        ("capabilities/discoverV2", True),
        ("capabilities/discoverV2", {}),
        ("capabilities/discoverV2", {"cwd": "/tmp"}),
        ("capabilities/discoverV2", {"cwd": "file:///", "sandbox": 5}),
        ("capabilities/discoverV2", {"cwd": "file:///", "sandbox": []}),
        ("capabilities/discoverV2", {"cwd": "file:///", "sandbox": {}}),
        (
            "capabilities/discoverV2",
            {
                "cwd": "file:///",
                "sandbox": {"permissions": {"type": "disabled"}, "windowsSandboxLevel": "disabled"},
            },
        ),
        ("capabilityRoots/discoverV1", []),
        ("capabilityRoots/discoverV1", 1),
        ("capabilityRoots/discoverV1", {}),
        ("capabilityRoots/discoverV1", {"roots": [[]]}),
        ("capabilityRoots/discoverV1", {"roots": [5]}),
        ("capabilityRoots/discoverV1", {"roots": [{"id": "a"}]}),
        ("capabilityRoots/discoverV1", {"roots": [["a", "file:///tmp"]]}),
        ("capabilityRoots/discoverV1", {"roots": [{"id": "a", "path": "file:///", "sandbox": 5}]}),
        (
            "capabilityRoots/discoverV1",
            {"roots": [{"id": f"r{i}", "path": ctx.uri()} for i in range(129)]},
        ),
        ("capabilityRoots/discoverV1", [[]]),
    ]
    return [[method, answer(await client.request(method, params))] for method, params in requests]


# -- fs/watchMissing ----------------------------------------------------------------------------


class Watcher:
    """Registers watches on one connection and records what they answered and sent."""

    def __init__(self, client: WireClient, base: Path) -> None:
        self.client = client
        self.base = base
        self.log: list[Any] = []

    async def watch(self, watch_id: int, missing: list[str], present: str | None = None) -> None:
        params: Json = {"watchId": watch_id, "missing": [uri(self.base / m) for m in missing]}
        if present is not None:
            params["present"] = uri(self.base / present)
        response = await self.client.request("fs/watchMissing", params)
        self.log.append([watch_id, missing, present, answer(response)])

    async def fired(self, watch_id: int) -> None:
        """Wait for the watch's notification, then record every notification so far."""
        await self.client.wait_for(
            lambda m: m.get("method") == MISSING_CHANGED and m["params"]["watchId"] == watch_id
        )
        seen = [m["params"]["watchId"] for m in self.client.notifications(MISSING_CHANGED)]
        self.log.append(["notifications", seen])


@case
async def watch_missing_fires_once_per_watch(ctx: CaseContext) -> Any:
    base = ctx.workdir
    (base / "present-dir").mkdir()
    (base / "present-file").write_text("x")
    (base / "exists").mkdir()
    watcher = Watcher(await ctx.client(), base)

    await watcher.watch(1, ["a"])
    (base / "unrelated").mkdir()  # a sibling: no notification
    (base / "a").mkdir()
    await watcher.fired(1)

    await watcher.watch(2, ["b1", "b2"])
    (base / "b2").write_text("")  # the second path fires too, once
    await watcher.fired(2)
    (base / "b1").write_text("")

    await watcher.watch(3, ["deep/er/path"])
    (base / "deep").mkdir()  # an ancestor on the way appearing fires
    await watcher.fired(3)

    await watcher.watch(4, ["deep/er/path"])
    (base / "deep" / "er").mkdir()
    await watcher.fired(4)

    await watcher.watch(5, ["n5"], present="present-dir")
    (base / "present-dir" / "inner").write_text("")  # inside the present directory: nothing
    shutil.rmtree(base / "present-dir")
    await watcher.fired(5)

    await watcher.watch(6, ["n6"], present="present-file")
    with open(base / "present-file", "a") as file:
        file.write("more")  # a write to a present file fires
    await watcher.fired(6)

    await watcher.watch(7, ["n7"])
    os.symlink("/nonexistent", base / "n7")  # a dangling symlink counts as appearing
    await watcher.fired(7)

    await watcher.watch(8, ["n8"])
    (base / "tmp8").write_text("")
    os.rename(base / "tmp8", base / "n8")  # renamed into place
    await watcher.fired(8)

    await watcher.watch(9, ["n9"], present="exists")
    (base / "exists").rename(base / "exists-moved")  # the present path moved away
    await watcher.fired(9)
    return watcher.log


@case
async def watch_missing_ids_replace_and_ignore(ctx: CaseContext) -> Any:
    base = ctx.workdir
    watcher = Watcher(await ctx.client(), base)
    await watcher.watch(10, ["x10"])
    await watcher.watch(11, [])  # larger id, cannot watch: still ends watch 10
    await watcher.watch(12, ["x12"])
    (base / "x10").write_text("")
    (base / "x12").write_text("")
    await watcher.fired(12)

    await watcher.watch(20, ["x20"])
    await watcher.watch(5, ["x5"])  # not larger than every id so far: ignored
    await watcher.watch(20, ["x20b"])  # the same id again: ignored
    (base / "x5").write_text("")
    (base / "x20b").write_text("")
    (base / "x20").write_text("")
    await watcher.fired(20)

    await watcher.watch(30, ["x30"])
    await watcher.watch(31, ["x31"])  # replaces 30
    (base / "x30").write_text("")
    (base / "x31").write_text("")
    await watcher.fired(31)

    # Another connection has its own ids and its own watch.
    other = Watcher(await ctx.client(), base)
    await other.watch(1, ["y1"])
    await watcher.watch(40, ["x40"])
    (base / "y1").write_text("")
    await other.fired(1)
    (base / "x40").write_text("")
    await watcher.fired(40)
    await watcher.watch(2**64 - 1, ["big"])
    (base / "big").write_text("")
    await watcher.fired(2**64 - 1)
    return [watcher.log, other.log]


@case
async def watch_missing_refusals(ctx: CaseContext) -> Any:
    base = ctx.workdir
    (base / "dir").mkdir()
    (base / "file").write_text("")
    os.symlink("/nonexistent", base / "dangling")
    os.symlink(base / "dir", base / "link-dir")
    os.symlink(base / "file", base / "link-file")
    client = await ctx.client()
    cases: list[Json] = [
        {"missing": []},
        {"missing": [], "present": uri(base / "dir")},
        {"missing": [uri(base / "dir")]},
        {"missing": [uri(base / "n"), uri(base / "file")]},
        {"missing": [uri(base / "dangling")]},
        {"missing": [uri(base / "file/x")]},
        {"missing": [uri(base / "link-dir/x")]},
        {"missing": [uri(base / "n")], "present": uri(base / "nothere")},
        {"missing": [uri(base / "n")], "present": uri(base / "dangling")},
        {"missing": [uri(base / "n")], "present": uri(base / "link-dir")},
        {"missing": [uri(base / "n")], "present": uri(base / "link-file")},
        {"missing": [uri(base / "n")], "present": "file://srv/x"},
        {"missing": [uri(base / "n"), "file://srv/x"]},
        {"missing": ["file:///C:/x"]},
        {"missing": ["file:///"]},
        {"missing": [uri(base / "n")], "present": uri(base / "file")},
        {"missing": [uri(base / "n"), uri(base / "n")], "present": None},
        {"missing": [uri(base / "new/deeper")], "present": "file:///"},
    ]
    answers = []
    for watch_id, params in enumerate(cases, 1):
        response = await client.request("fs/watchMissing", {"watchId": watch_id, **params})
        answers.append(answer(response))
    return answers


# -- environmentConfig/read ---------------------------------------------------------------------

USER_CONFIG = """\
model = "gpt-5"
"quoted key" = 1
num = 42
flt = 1e10
inf = -inf
bool = true
date = 1979-05-27T07:32:00.5+01:30
ldate = 1979-05-27
ltime = 07:32:00.120
str_esc = "a\\"b\\\\c\\nd\\te\\u0001"
lit = 'C:\\path'
quote = 'x"y'
multi = \"\"\"
line1
line2\"\"\"
uni = "héllo ✓"
arr = [1, 2, 3]
arr_nested = [[1, 2], ["x"]]
arr_inline = [{a = 1}, {b = "x"}]
mixed = [1, {a = 1}]
dotted.key = "v"
inline = { x = 1, y = { z = 2 } }
"a.b" = "dot in key"
'k\\ey' = 2

[mcp_servers.foo]
command = "echo"
args = ["hi", "there"]
env = { A = "1", B = "two" }
startup_timeout_sec = 10.5

[mcp_servers."we ird"]
url = "https://example.com/mcp"

[[arrtab]]
name = "one"
[[arrtab]]
name = "two"
sub = { k = 1 }

[empty]

[tbl]
z = 1
a = 2
[tbl.sub]
m = 1
[tbl.sub.deeper]
n = 2
"""


def config_tree(root: Path) -> tuple[Path, Path, Path]:
    """CODEX_HOME, HOME and a directory of projects (trusted, untrusted, nested)."""
    codex_home, home, projects = root / "codex-home", root / "home", root / "projects"
    home.mkdir(parents=True)
    trust = "".join(
        f'\n[projects."{projects / name}"]\ntrust_level = "{level}"\n'
        for name, level in [
            ("repo", "trusted"),
            ("untrusted", "untrusted"),
            ("plain", "trusted"),
            ("repo2/sub", "trusted"),
            ("worktree", "trusted"),
        ]
    )
    write(codex_home / "config.toml", USER_CONFIG + trust)
    for repo in ("repo", "untrusted", "repo2"):
        write(projects / repo / ".git" / "HEAD", "ref: refs/heads/main\n")
    write(projects / "worktree" / ".git", "gitdir: /nonexistent/x\n")
    (projects / "objects-only" / ".git" / "objects").mkdir(parents=True)
    project_configs = {
        "repo": '[mcp_servers.bar]\ncommand = "cat"\nmodel = "x"\n',
        "repo/sub": 'model = "sub-model"\n[mcp_servers.subsrv]\ncommand = "sub"\n',
        "untrusted": 'model = "untrusted"\n',
        "plain": 'model = "plain"\n',
        "plain/sub": 'model = "plain-sub"\n',
        "repo2": 'model = "repo2"\n',
        "repo2/sub": 'model = "repo2-sub"\n',
        "worktree/sub": 'model = "worktree-sub"\n',
        "objects-only": 'model = "objects-only"\n',
        "objects-only/sub": 'model = "objects-only-sub"\n',
    }
    for directory, text in project_configs.items():
        write(projects / directory / ".codex" / "config.toml", text)
    (projects / "repo" / "sub" / "deep").mkdir()
    return codex_home, home, projects


@case
async def environment_config_layers(ctx: CaseContext) -> Any:
    with fixture_root(ctx) as root:
        codex_home, home, projects = config_tree(root)
        client = await dedicated(ctx, codex_home, home)
        reads: list[tuple[str, list[list[str]], list[list[str]]]] = [
            ("repo", [["mcp_servers"]], [["mcp_servers"]]),
            ("repo/sub/deep", [["model"], ["mcp_servers"]], []),
            ("repo/sub/nonexistent", [["model"]], []),
            ("repo", [["nope"]], []),
            ("repo", [["mcp_servers", "foo", "env"], ["num", "x"], ["tbl", "nope"]], []),
            ("repo", [["tbl", "sub"], ["tbl", "z"], ["arrtab", "name"], ["inline", "y", "z"]], []),
            ("repo", [["tbl"], ["tbl", "sub"], ["model"], ["model"], [""]], []),
            ("untrusted", [["model"]], []),
            ("plain", [["model"]], []),
            ("plain/sub", [["model"]], []),
            ("repo2/sub", [["model"]], []),
            ("worktree/sub", [["model"]], []),
            ("objects-only/sub", [["model"]], []),
            ("nonexistent", [["model"]], [["model"]]),
        ]
        answers = []
        for cwd, config_paths, requirements_paths in reads:
            params = {
                "cwd": uri(projects / cwd),
                "configPaths": config_paths,
                "requirementsPaths": requirements_paths,
            }
            response = await client.request("environmentConfig/read", params)
            answers.append([cwd, answer(response)])
        keys = [
            [key]
            for key in (
                "model",
                "quoted key",
                "num",
                "flt",
                "inf",
                "bool",
                "date",
                "ldate",
                "ltime",
                "str_esc",
                "lit",
                "quote",
                "multi",
                "uni",
                "arr",
                "arr_nested",
                "arr_inline",
                "mixed",
                "dotted",
                "inline",
                "a.b",
                "k\\ey",
                "mcp_servers",
                "arrtab",
                "empty",
                "tbl",
                "projects",
            )
        ]
        params = {"cwd": "file:///", "configPaths": keys, "requirementsPaths": []}
        answers.append(answer(await client.request("environmentConfig/read", params)))
        return answers


@case
async def environment_config_load_errors(ctx: CaseContext) -> Any:
    """Files that cannot be loaded fail the request; the parser's own wording differs (tomllib
    vs. the toml crate), so only the message up to the file name is compared."""
    with fixture_root(ctx) as root:
        codex_home, home, projects = config_tree(root)
        write(projects / "bad" / ".git" / "HEAD", "")
        write(projects / "bad" / ".codex" / "config.toml", "model = \n")
        with open(codex_home / "config.toml", "a") as file:
            file.write(f'\n[projects."{projects / "bad"}"]\ntrust_level = "trusted"\n')
        client = await dedicated(ctx, codex_home, home)
        params = {"cwd": uri(projects / "bad"), "configPaths": [["model"]], "requirementsPaths": []}
        bad_project = answer(await client.request("environmentConfig/read", params))
        project_file = str(projects / "bad" / ".codex" / "config.toml")
        bad_project["message"] = bad_project["message"].split(project_file)[0] + project_file
        results: list[Any] = [bad_project]

        broken_home, dir_home = root / "broken-home", root / "dir-home"
        write(broken_home / "config.toml", "x = [1,\n")
        (dir_home / "config.toml").mkdir(parents=True)
        for codex in (broken_home, dir_home):
            other = await dedicated(ctx, codex, home)
            params = {"cwd": "file:///", "configPaths": [["x"]], "requirementsPaths": []}
            error = answer(await other.request("environmentConfig/read", params))
            user_file = str(codex / "config.toml")
            error["message"] = error["message"].split(user_file)[0] + user_file
            results.append(error)
        return results


# -- capabilities/discoverV2 --------------------------------------------------------------------


def discovery_tree(root: Path) -> tuple[Path, Path, Path]:
    """CODEX_HOME (skills, installed plugins), HOME (~/.agents/skills) and a project."""
    codex_home, home, work = root / "codex-home", root / "home", root / "work"
    skills = codex_home / "skills"
    write(skills / "alpha" / "SKILL.md", skill("alpha", "alpha skill."))
    write(skills / "alpha" / "sub" / "SKILL.md", skill("alpha-sub", "inside a skill"))
    write(
        skills / "zeta" / "SKILL.md",
        skill("zeta-name", "zeta  desc", "metadata:\n  short-description: zeta short"),
    )
    write(skills / "group" / "nested" / "SKILL.md", skill("nested", "nested one"))
    write(skills / ".system" / "sys" / "SKILL.md", skill("sys", "system skill"))
    write(skills / "noname" / "SKILL.md", skill(None, "no name"))
    write(skills / "nonstr" / "SKILL.md", skill("123", "true"))
    write(skills / "block" / "SKILL.md", skill("block", "|\n  line one\n  line two"))
    write(skills / "crlf" / "SKILL.md", "---\r\nname: crlf\r\ndescription: d\r\n---\r\n")
    write(skills / "long" / "SKILL.md", skill("n" * 64, "d" * 1100))
    write(skills / "nofront" / "SKILL.md", "just text\n")
    write(skills / "nodesc" / "SKILL.md", skill("nodesc", None))
    write(skills / "badyaml" / "SKILL.md", "---\nname: [unclosed\n---\n")
    write(skills / "toolong" / "SKILL.md", skill("m" * 65, "d"))
    write(skills / "upper" / "Skill.md", skill("upper", "wrong file name"))
    write(skills / "deps" / "SKILL.md", skill("deps", "with openai.yaml"))
    write(
        skills / "deps" / "agents" / "openai.yaml",
        "dependencies:\n  tools:\n    - type: mcp\n      value: github\n      description: GitHub\n"
        "      transport: streamable_http\n      url: https://example.com/mcp\n"
        "    - type: env_var\n      value: TOKEN\n    - value: no-type\n"
        "policy:\n  allow_implicit_invocation: false\n  products: [codex]\n",
    )
    write(skills / "emptypolicy" / "SKILL.md", skill("emptypolicy", "policy {}"))
    write(skills / "emptypolicy" / "agents" / "openai.yaml", "policy: {}\ndependencies: {}\n")
    write(skills / "yes" / "SKILL.md", skill("yes", "yes is not a bool"))
    write(skills / "yes" / "agents" / "openai.yaml", "policy:\n  allow_implicit_invocation: yes\n")
    write(skills / "badmeta" / "SKILL.md", skill("badmeta", "broken openai.yaml"))
    write(skills / "badmeta" / "agents" / "openai.yaml", "policy: [\n")
    target = write(root / "elsewhere" / "SKILL.md", skill("linked", "through a symlink")).parent
    os.symlink(target, skills / "linked")
    (skills / "filelink").mkdir()
    os.symlink(target / "SKILL.md", skills / "filelink" / "SKILL.md")  # a file symlink: skipped

    agents = home / ".agents" / "skills"
    write(
        agents / "agent-one" / "SKILL.md",
        skill("agent-one", "from agents", "metadata:\n  short-description: short one"),
    )
    write(agents / "z" / "y" / "SKILL.md", skill("zy", "nested agents"))
    write(home / ".codex" / "skills" / "legacy" / "SKILL.md", skill("legacy", "not read"))
    write(work / ".agents" / "skills" / "proj" / "SKILL.md", skill("proj", "project skill"))

    cache = codex_home / "plugins" / "cache"
    write(
        cache / "mkt" / "named" / "1.0.0" / ".codex-plugin" / "plugin.json",
        '{"name":"other-name","version":"9.9.9","interface":{"displayName":"Pretty Name"},'
        '"skills":"./custom-skills/"}',
    )
    write(
        cache / "mkt" / "named" / "1.0.0" / "custom-skills" / "k" / "SKILL.md", skill("k", "custom")
    )
    write(cache / "mkt" / "named" / "1.0.0" / "skills" / "s" / "SKILL.md", skill("s", "default"))
    write(cache / "mkt" / "named" / "1.0.0" / ".app.json", '{"apps":{}}')
    write(cache / "mkt" / "named" / "1.0.0" / ".mcp.json", '{"mcpServers":{}}')
    write(cache / "mkt" / "multi" / "1.0.0" / ".codex-plugin" / "plugin.json", '{"name":"multi"}')
    write(cache / "mkt" / "multi" / "2.0.0" / ".codex-plugin" / "plugin.json", '{"name":"multi"}')
    write(cache / "mkt" / "badjson" / "1.0.0" / ".codex-plugin" / "plugin.json", "{bad")
    write(cache / "mkt" / "nomanifest" / "1.0.0" / "README", "x")
    write(
        cache / "mkt" / "skills-fail" / "1.0.0" / ".codex-plugin" / "plugin.json", '{"name":"sf"}'
    )
    write(cache / "mkt" / "skills-fail" / "1.0.0" / "skills" / "bad" / "SKILL.md", "no front\n")
    write(
        cache / "mkt" / "skills-fail" / "1.0.0" / "skills" / "deep" / "er" / "SKILL.md",
        skill("deeper", "nested plugin skill"),
    )
    write(cache / "mkt2" / "zed" / "local" / ".codex-plugin" / "plugin.json", '{"name":"zed"}')
    (cache / "mkt2" / "empty-plugin").mkdir()
    write(cache / "stray.txt", "x")
    write(codex_home / "config.toml", '[plugins."named@mkt"]\nenabled = false\n')
    return codex_home, home, work


MINIMAL = {"type": "special", "value": {"kind": "minimal"}}
ROOT = {"type": "special", "value": {"kind": "root"}}


def restricted(cwd: Path, *entries: Json) -> Json:
    return {
        "permissions": {
            "type": "managed",
            "file_system": {"type": "restricted", "entries": list(entries)},
            "network": "restricted",
        },
        "windowsSandboxLevel": "disabled",
        "cwd": uri(cwd),
    }


@case
async def discover_v2_inventory(ctx: CaseContext) -> Any:
    with fixture_root(ctx) as root:
        codex_home, home, work = discovery_tree(root)
        client = await dedicated(ctx, codex_home, home)
        answers = [
            answer(await client.request("capabilities/discoverV2", {"cwd": uri(work)})),
            answer(await client.request("capabilities/discoverV2", {"cwd": uri(root / "nope")})),
        ]
        empty = await dedicated(ctx, root / "empty-home", root / "empty")
        answers.append(answer(await empty.request("capabilities/discoverV2", {"cwd": "file:///"})))
        # Through symlinks: CODEX_HOME is reported resolved, HOME as given.
        os.symlink(codex_home, root / "codex-home-link")
        os.symlink(home, root / "home-link")
        linked = await dedicated(ctx, root / "codex-home-link", root / "home-link")
        answers.append(answer(await linked.request("capabilities/discoverV2", {"cwd": "file:///"})))
        params = {"cwd": "file:///", "configPaths": [["plugins"]], "requirementsPaths": []}
        answers.append(answer(await linked.request("environmentConfig/read", params)))
        return answers


@case
async def discover_v2_sandboxed(ctx: CaseContext) -> Any:
    """The discovery sees what the sandbox lets it see (it runs inside the sandbox)."""
    with fixture_root(ctx) as root:
        codex_home, home, work = discovery_tree(root)
        client = await dedicated(ctx, codex_home, home)
        deny_agents = {"path": {"type": "path", "path": uri(home / ".agents")}, "access": "deny"}
        deny_plugin = {
            "path": {"type": "path", "path": uri(codex_home / "plugins/cache/mkt/named")},
            "access": "deny",
        }
        sandboxes = [
            {
                "permissions": {"type": "disabled"},
                "windowsSandboxLevel": "disabled",
                "cwd": uri(work),
            },
            restricted(work, {"path": MINIMAL, "access": "read"}),
            restricted(work, {"path": ROOT, "access": "read"}, deny_agents),
            restricted(work, {"path": ROOT, "access": "read"}, deny_plugin),
            {**restricted(work, {"path": MINIMAL, "access": "read"}), "windowsSandboxLevel": "mxc"},
            restricted(work, {"path": {"type": "path", "path": "file://srv/x"}, "access": "read"}),
        ]
        results = []
        for sandbox in sandboxes:
            params = {"cwd": uri(work), "sandbox": sandbox}
            result = answer(await client.request("capabilities/discoverV2", params))
            if "plugins" not in result:
                results.append(result)
                continue
            results.append(
                {
                    "plugins": [p["id"] for p in result["plugins"]],
                    "skills": [s["path"] for s in result["skills"]],
                    "warnings": result["warnings"],
                }
            )
        return results


# -- capabilityRoots/discoverV1 -----------------------------------------------------------------


def roots_tree(base: Path) -> None:
    write(base / "plug" / ".codex-plugin" / "plugin.json", '{"name":"plug","skills":"./extra"}')
    write(base / "plug" / ".mcp.json", '{"mcpServers":{}}')
    write(base / "plug" / ".app.json", "{}")
    write(base / "plug" / "SKILL.md", "root skill\n")
    write(base / "plug" / "skills" / "a" / "SKILL.md", skill("a", "d"))
    write(base / "plug" / "skills" / "a" / "agents" / "openai.yaml", "policy: {}\n")
    write(base / "plug" / "skills" / "nofront" / "SKILL.md", "text\n")
    write(base / "plug" / "extra" / "e" / "SKILL.md", "extra\n")
    write(base / "plug" / "other" / "z" / "SKILL.md", "outside skills/\n")
    write(base / "skills" / "x" / "SKILL.md", "x skill\n")
    write(base / "skills" / "x" / "agents" / "openai.yaml", "bad: [\n")
    write(base / "skills" / "y" / "z" / "SKILL.md", "yz\n")
    write(base / "skills" / ".hidden" / "SKILL.md", "hidden\n")
    write(base / "single" / "SKILL.md", "single\n")
    write(base / "single" / "sub" / "SKILL.md", "single sub\n")
    write(base / "file.txt", "f")
    write(base / "badplug" / ".codex-plugin" / "plugin.json", "{bad")
    write(base / "badplug" / "skills" / "q" / "SKILL.md", "q\n")
    (base / "empty").mkdir()
    target = write(base / "target" / "SKILL.md", "target\n").parent
    links = base / "links"
    links.mkdir()
    os.symlink(target, links / "linked")
    os.symlink("/nonexistent", links / "SKILL.md")
    os.symlink("loop", links / "loop")
    (links / "fl").mkdir()
    os.symlink(target / "SKILL.md", links / "fl" / "SKILL.md")
    os.symlink(links, links / "fl" / "cycle")
    bad_name = os.path.join(os.fsencode(links), b"bad\xff")
    os.makedirs(bad_name)
    with open(os.path.join(bad_name, b"SKILL.md"), "w") as file:
        file.write("x")


@case
async def discover_v1_roots(ctx: CaseContext) -> Any:
    base = ctx.workdir
    roots_tree(base)
    client = await ctx.client()
    names = ["plug", "skills", "single", "file.txt", "badplug", "empty", "links", "nonexist"]
    roots: list[Json] = [{"id": name, "path": ctx.uri(name)} for name in names]
    roots += [
        {"id": "", "path": ctx.uri("single")},
        {"id": "plug", "path": ctx.uri("single")},
        {"id": "host", "path": "file://srv/x"},
        {"id": "null-sandbox", "path": ctx.uri("single"), "sandbox": None},
    ]
    response = await client.request("capabilityRoots/discoverV1", {"roots": roots})
    return answer(response)


@case
async def discover_v1_sandboxed_roots(ctx: CaseContext) -> Any:
    base = ctx.workdir
    roots_tree(base)
    client = await ctx.client()
    deny_skills = {"path": {"type": "path", "path": ctx.uri("plug", "skills")}, "access": "deny"}
    disabled = {"permissions": {"type": "disabled"}, "windowsSandboxLevel": "disabled"}
    roots = [
        {
            "id": "minimal",
            "path": ctx.uri("plug"),
            "sandbox": restricted(base, {"path": MINIMAL, "access": "read"}),
        },
        {
            "id": "deny",
            "path": ctx.uri("plug"),
            "sandbox": restricted(base, {"path": ROOT, "access": "read"}, deny_skills),
        },
        {
            "id": "deny-missing",
            "path": ctx.uri("nonexist"),
            "sandbox": restricted(base, {"path": ROOT, "access": "read"}, deny_skills),
        },
        {"id": "disabled", "path": ctx.uri("single"), "sandbox": disabled},
    ]
    response = await client.request("capabilityRoots/discoverV1", {"roots": roots})
    return answer(response)
