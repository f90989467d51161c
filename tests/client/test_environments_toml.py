"""environments.toml (PROTOCOL.md §13.1) against the pinned codex.

Every expected message below was recorded from the pinned reference binary: each TOML text was
written to ``<fresh CODEX_HOME>/environments.toml`` and ``codex exec --skip-git-repo-check hi``
was run; an invalid registry makes it exit with ``Error: exec-server protocol error: <message>``
before anything else happens, a valid one gets as far as printing its ``OpenAI Codex v<version>``
banner.  ``{path}`` stands for ``<CODEX_HOME>/environments.toml``.  `test_reference_agrees`
replays the same tables against the binary when it is installed.

Selection (`EnvironmentsConfig.select`) was recorded from ``codex app-server``: ``thread/start``
with an ``environments[].environmentId`` that is not selectable answers ``-32600 unknown turn
environment id `<id>```.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execserver.client.environments import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_INITIALIZE_TIMEOUT_S,
    EnvironmentsConfig,
    EnvironmentsError,
    StdioEnvironment,
    UrlEnvironment,
    environments_path,
    load_environments,
    parse_environments,
)
from tests.conftest import require_reference
from tests.harness.servers import REFERENCE_CODEX_HOME, reference_binary

HOME = Path("/home/user/.codex")
URL = 'url = "ws://127.0.0.1:1"\n'
PROGRAM = 'program = "true"\n'
PARSE = "failed to parse environment config `{path}`: "
ENV_FIELDS = (
    "`id`, `skills`, `url`, `auth_bearer_token`, `program`, `args`, `env`, `cwd`, "
    "`connect_timeout_sec`, `initialize_timeout_sec`"
)
HEADERS = "exec-server WebSocket headers require wss:// or a loopback destination"


def env(body: str) -> str:
    return "[[environments]]\n" + body + "\n"


def url_env(url: str, extra: str = "", env_id: str = "a") -> str:
    return env(f'id = "{env_id}"\nurl = "{url}"\n{extra}')


def tok_env(url: str, token: str = "t") -> str:
    return url_env(url, f'auth_bearer_token = "{token}"')


def expected_text(template: str, codex_home: Path) -> str:
    return template.replace("{path}", environments_path(codex_home))


# --- rejected files: (case id, environments.toml, message) -----------------------------------

DECODING_ERRORS: list[tuple[str, str, str]] = [
    # unknown keys, at the top level (no key path) and below
    (
        "unknown-top-level-key",
        "foo = 1\n",
        PARSE + "unknown field `foo`, expected one of `default`, `include_local`, `environments`\n",
    ),
    (
        "unknown-top-level-table",
        "[foo]\nx = 1\n",
        PARSE + "unknown field `foo`, expected one of `default`, `include_local`, `environments`\n",
    ),
    (
        "unknown-environment-key",
        env('id = "a"\n' + URL + "bar = 1"),
        PARSE + f"unknown field `bar`, expected one of {ENV_FIELDS}\nin `environments`\n",
    ),
    (
        "unknown-skills-key",
        env('id = "a"\n' + URL + "skills = { foo = 1 }"),
        PARSE + "unknown field `foo`, expected `required`\nin `environments.skills`\n",
    ),
    ("missing-id", env(URL), PARSE + "missing field `id`\nin `environments`\n"),
    (
        "empty-environment-table",
        "environments = [{}]\n",
        PARSE + "missing field `id`\nin `environments`\n",
    ),
    # wrong types: serde's wording, the key path joined with "."
    (
        "default-integer",
        "default = 1\n",
        PARSE + "invalid type: integer `1`, expected a string\nin `default`\n",
    ),
    (
        "include-local-string",
        'include_local = "yes"\n',
        PARSE + 'invalid type: string "yes", expected a boolean\nin `include_local`\n',
    ),
    (
        "environments-integer",
        "environments = 1\n",
        PARSE + "invalid type: integer `1`, expected a sequence\nin `environments`\n",
    ),
    (
        "environments-table",
        "[environments]\nid = 'a'\n",
        PARSE + "invalid type: map, expected a sequence\nin `environments`\n",
    ),
    (
        "environment-integer",
        "environments = [7]\n",
        PARSE + "invalid type: integer `7`, expected struct EnvironmentToml\nin `environments`\n",
    ),
    (
        "id-integer",
        env("id = 1\n" + URL),
        PARSE + "invalid type: integer `1`, expected a string\nin `environments.id`\n",
    ),
    (
        "url-boolean",
        env('id = "a"\nurl = true'),
        PARSE + "invalid type: boolean `true`, expected a string\nin `environments.url`\n",
    ),
    (
        "program-float",
        env('id = "a"\nprogram = 1.5'),
        PARSE
        + "invalid type: floating point `1.5`, expected a string\nin `environments.program`\n",
    ),
    (
        "float-shown-with-decimal-point",
        env('id = "a"\nprogram = 2.0'),
        PARSE
        + "invalid type: floating point `2.0`, expected a string\nin `environments.program`\n",
    ),
    (
        "float-shown-without-exponent",
        env('id = "a"\nprogram = 1e30'),
        PARSE + "invalid type: floating point `1000000000000000000000000000000.0`, expected a "
        "string\nin `environments.program`\n",
    ),
    (
        "small-float-shown-without-exponent",
        env('id = "a"\nprogram = 1e-7'),
        PARSE + "invalid type: floating point `0.0000001`, expected a string\n"
        "in `environments.program`\n",
    ),
    (
        "float-shown-with-all-digits",
        env('id = "a"\nprogram = 123456789012345680000.0'),
        PARSE + "invalid type: floating point `123456789012345680000.0`, expected a string\n"
        "in `environments.program`\n",
    ),
    (
        "token-table",
        env('id = "a"\n' + URL + "auth_bearer_token = {}"),
        PARSE + "invalid type: map, expected a string\nin `environments.auth_bearer_token`\n",
    ),
    (
        "args-string-shown-escaped",
        env('id = "a"\n' + PROGRAM + 'args = "x\\ty"'),
        PARSE + 'invalid type: string "x\\ty", expected a sequence\nin `environments.args`\n',
    ),
    (
        "args-element-integer-path-has-no-index",
        env('id = "a"\n' + PROGRAM + 'args = ["ok", 7]'),
        PARSE + "invalid type: integer `7`, expected a string\nin `environments.args`\n",
    ),
    (
        "env-array",
        env('id = "a"\n' + PROGRAM + "env = []"),
        PARSE + "invalid type: sequence, expected a map\nin `environments.env`\n",
    ),
    (
        "env-value-integer",
        env('id = "a"\n' + PROGRAM + "env = { K = 1 }"),
        PARSE + "invalid type: integer `1`, expected a string\nin `environments.env.K`\n",
    ),
    (
        "env-key-is-not-quoted-in-the-path",
        env('id = "a"\n' + PROGRAM + 'env = { "a.b" = 1 }'),
        PARSE + "invalid type: integer `1`, expected a string\nin `environments.env.a.b`\n",
    ),
    (
        "cwd-integer",
        env('id = "a"\n' + PROGRAM + "cwd = 7"),
        PARSE + "invalid type: integer `7`, expected path string\nin `environments.cwd`\n",
    ),
    (
        "timeout-string",
        env('id = "a"\n' + URL + 'connect_timeout_sec = "10"'),
        PARSE + 'invalid type: string "10", expected f64\nin `environments.connect_timeout_sec`\n',
    ),
    (
        "timeout-boolean",
        env('id = "a"\n' + URL + "initialize_timeout_sec = true"),
        PARSE + "invalid type: boolean `true`, expected f64\n"
        "in `environments.initialize_timeout_sec`\n",
    ),
    (
        "skills-string",
        env('id = "a"\n' + URL + 'skills = "x"'),
        PARSE + 'invalid type: string "x", expected struct ScopedSkillsConfig\n'
        "in `environments.skills`\n",
    ),
    (
        "skills-required-boolean",
        env('id = "a"\n' + URL + "skills = { required = true }"),
        PARSE + "invalid type: boolean `true`, expected a sequence\n"
        "in `environments.skills.required`\n",
    ),
    (
        "skills-required-element-table",
        env('id = "a"\n' + URL + "skills = { required = [{ name = 'x' }] }"),
        PARSE + "invalid type: map, expected a string\nin `environments.skills.required`\n",
    ),
    # timeouts become durations while decoding
    (
        "timeout-negative",
        env('id = "a"\n' + URL + "connect_timeout_sec = -1"),
        PARSE + "cannot convert float seconds to Duration: value is negative\n"
        "in `environments.connect_timeout_sec`\n",
    ),
    (
        "timeout-tiny-negative",
        env('id = "a"\n' + PROGRAM + "initialize_timeout_sec = -1e-20"),
        PARSE + "cannot convert float seconds to Duration: value is negative\n"
        "in `environments.initialize_timeout_sec`\n",
    ),
    (
        "timeout-minus-infinity",
        env('id = "a"\n' + URL + "connect_timeout_sec = -inf"),
        PARSE + "cannot convert float seconds to Duration: value is negative\n"
        "in `environments.connect_timeout_sec`\n",
    ),
    (
        "timeout-nan",
        env('id = "a"\n' + URL + "connect_timeout_sec = nan"),
        PARSE + "cannot convert float seconds to Duration: value is either too big or NaN\n"
        "in `environments.connect_timeout_sec`\n",
    ),
    (
        "timeout-infinity",
        env('id = "a"\n' + URL + "connect_timeout_sec = inf"),
        PARSE + "cannot convert float seconds to Duration: value is either too big or NaN\n"
        "in `environments.connect_timeout_sec`\n",
    ),
    (
        "timeout-2-pow-64",
        env('id = "a"\n' + URL + "connect_timeout_sec = 18446744073709551616.0"),
        PARSE + "cannot convert float seconds to Duration: value is either too big or NaN\n"
        "in `environments.connect_timeout_sec`\n",
    ),
    (
        "timeout-checked-before-url",
        env('id = "a"\nurl = "http://x"\nconnect_timeout_sec = -1'),
        PARSE + "cannot convert float seconds to Duration: value is negative\n"
        "in `environments.connect_timeout_sec`\n",
    ),
    # serde also builds a struct from an array of its fields; the index reported is the
    # first missing field that has no default (skills and the timeouts have one)
    (
        "array-form-missing-url",
        'environments = [["dev"]]\n',
        PARSE + "invalid length 2, expected struct EnvironmentToml with 10 elements\n"
        "in `environments`\n",
    ),
    (
        "array-form-missing-token",
        'environments = [["dev", {}, "ws://127.0.0.1:1"]]\n',
        PARSE + "invalid length 3, expected struct EnvironmentToml with 10 elements\n"
        "in `environments`\n",
    ),
    (
        "array-form-element-type",
        "environments = [[1]]\n",
        PARSE + "invalid type: integer `1`, expected a string\nin `environments`\n",
    ),
    (
        "array-form-skills-unknown-key",
        "environments = [['dev', { zz = 1 }]]\n",
        PARSE + "unknown field `zz`, expected `required`\nin `environments`\n",
    ),
    (
        "skills-array-form-element-type",
        env('id = "a"\n' + URL + 'skills = ["x"]'),
        PARSE + 'invalid type: string "x", expected a sequence\nin `environments.skills`\n',
    ),
    # a datetime reaches serde as a one-entry table
    (
        "environment-datetime",
        "environments = [1979-05-27]\n",
        PARSE + f"unknown field `$__toml_private_datetime`, expected one of {ENV_FIELDS}\n"
        "in `environments`\n",
    ),
    (
        "skills-datetime",
        env('id = "a"\n' + URL + "skills = 07:32:00"),
        PARSE + "unknown field `$__toml_private_datetime`, expected `required`\n"
        "in `environments.skills`\n",
    ),
    (
        "id-datetime",
        env("id = 1979-05-27T07:32:00Z\n" + URL),
        PARSE + "invalid type: map, expected a string\nin `environments.id`\n",
    ),
    # decoding is complete before any validation, and goes in document order
    (
        "document-order-type-before-unknown",
        env('url = 1\nzzz = 1\nid = "a"'),
        PARSE + "invalid type: integer `1`, expected a string\nin `environments.url`\n",
    ),
    (
        "document-order-top-level",
        'include_local = "x"\nfoo = 1\n',
        PARSE + 'invalid type: string "x", expected a boolean\nin `include_local`\n',
    ),
    (
        "decoding-before-validation",
        env('id = "bad id"\n' + URL) + env(URL),
        PARSE + "missing field `id`\nin `environments`\n",
    ),
]

VALIDATION_ERRORS: list[tuple[str, str, str]] = [
    # ids
    ("id-empty", env('id = ""\n' + URL), "environment id cannot be empty"),
    ("id-blank", env('id = "   "\n' + URL), "environment id cannot be empty"),
    (
        "id-surrounding-space",
        env('id = " a"\n' + URL),
        "environment id ` a` must not contain surrounding whitespace",
    ),
    (
        "id-surrounding-tab",
        env('id = "\\tab"\n' + URL),
        "environment id `\tab` must not contain surrounding whitespace",
    ),
    (
        "id-surrounding-ideographic-space",
        env('id = "\\u3000a"\n' + URL),
        "environment id `\u3000a` must not contain surrounding whitespace",
    ),
    (
        "id-control-is-not-whitespace",
        env('id = "\\u001ca"\n' + URL),
        "environment id `\x1ca` must contain only ASCII letters, numbers, '-' or '_'",
    ),
    ("id-local", env('id = "local"\n' + URL), "environment id `local` is reserved"),
    (
        "id-local-reserved-when-excluded",
        "include_local = false\n" + env('id = "local"\n' + URL),
        "environment id `local` is reserved",
    ),
    ("id-none", env('id = "none"\n' + URL), "environment id `none` is reserved"),
    ("id-none-any-case", env('id = "NoNe"\n' + URL), "environment id `NoNe` is reserved"),
    (
        "id-65-chars",
        env(f'id = "{"a" * 65}"\n' + URL),
        f"environment id `{'a' * 65}` cannot be longer than 64 characters",
    ),
    (
        "id-length-counts-bytes",
        env(f'id = "{"é" * 33}"\n' + URL),
        f"environment id `{'é' * 33}` cannot be longer than 64 characters",
    ),
    (
        "id-space",
        env('id = "bad id"\n' + URL),
        "environment id `bad id` must contain only ASCII letters, numbers, '-' or '_'",
    ),
    (
        "id-non-ascii",
        env('id = "é"\n' + URL),
        "environment id `é` must contain only ASCII letters, numbers, '-' or '_'",
    ),
    (
        "id-dot",
        env('id = "a.b"\n' + URL),
        "environment id `a.b` must contain only ASCII letters, numbers, '-' or '_'",
    ),
    (
        "id-checked-first",
        env('id = "bad id"\nargs = []'),
        "environment id `bad id` must contain only ASCII letters, numbers, '-' or '_'",
    ),
    # which keys go together
    (
        "args-without-program",
        env('id = "dev"\n' + URL + 'args = ["x"]'),
        "environment `dev` args, env, and cwd require program",
    ),
    (
        "env-without-program",
        env('id = "dev"\n' + URL + 'env = { A = "b" }'),
        "environment `dev` args, env, and cwd require program",
    ),
    (
        "cwd-without-program",
        env('id = "dev"\n' + URL + 'cwd = "x"'),
        "environment `dev` args, env, and cwd require program",
    ),
    (
        "args-alone",
        env('id = "dev"\nargs = []\nauth_bearer_token = "t"'),
        "environment `dev` args, env, and cwd require program",
    ),
    (
        "token-without-url",
        env('id = "dev"\n' + PROGRAM + 'auth_bearer_token = "t"'),
        "environment `dev` auth_bearer_token requires url",
    ),
    (
        "token-checked-before-connect-timeout",
        env('id = "dev"\n' + PROGRAM + 'auth_bearer_token = "t"\nconnect_timeout_sec = 1'),
        "environment `dev` auth_bearer_token requires url",
    ),
    (
        "connect-timeout-without-url",
        env('id = "dev"\n' + PROGRAM + "connect_timeout_sec = 1"),
        "environment `dev` connect_timeout_sec requires url",
    ),
    (
        "connect-timeout-alone",
        env('id = "dev"\nconnect_timeout_sec = 1'),
        "environment `dev` connect_timeout_sec requires url",
    ),
    (
        "neither-url-nor-program",
        env('id = "dev"'),
        "environment `dev` must set exactly one of url or program",
    ),
    (
        "both-url-and-program",
        env('id = "dev"\n' + URL + PROGRAM),
        "environment `dev` must set exactly one of url or program",
    ),
    (
        "both-with-bad-url",
        env('id = "a"\nurl = "http://x"\n' + PROGRAM),
        "environment `a` must set exactly one of url or program",
    ),
    (
        "array-form-sets-both",
        "environments = [['dev', {}, 'ws://127.0.0.1:1', 't', 'p', [], {}, 'c']]\n",
        "environment `dev` must set exactly one of url or program",
    ),
    # program
    ("program-empty", env('id = "dev"\nprogram = ""'), "environment `dev` program cannot be empty"),
    (
        "program-blank",
        env('id = "dev"\nprogram = "  "'),
        "environment `dev` program cannot be empty",
    ),
    # url: scheme (after trimming, case-sensitive)
    ("url-empty", env('id = "dev"\nurl = ""'), "environment url cannot be empty"),
    ("url-blank", env('id = "dev"\nurl = "   "'), "environment url cannot be empty"),
    (
        "url-http",
        url_env("http://example.com"),
        "environment url `http://example.com` must use ws:// or wss://",
    ),
    (
        "url-shown-trimmed",
        url_env(" http://x "),
        "environment url `http://x` must use ws:// or wss://",
    ),
    (
        "url-scheme-case-sensitive",
        url_env("WS://127.0.0.1:1"),
        "environment url `WS://127.0.0.1:1` must use ws:// or wss://",
    ),
    ("url-single-slash", url_env("ws:/x"), "environment url `ws:/x` must use ws:// or wss://"),
    (
        "url-control-not-trimmed",
        url_env("\\u001cws://127.0.0.1:1"),
        "environment url `\x1cws://127.0.0.1:1` must use ws:// or wss://",
    ),
    # url: what http::Uri (via tungstenite's into_client_request) refuses
    (
        "uri-no-authority",
        url_env("ws://"),
        "environment url `ws://` is invalid: HTTP format error: empty string",
    ),
    (
        "uri-no-authority-wss",
        url_env("wss://"),
        "environment url `wss://` is invalid: HTTP format error: empty string",
    ),
    (
        "uri-empty-authority",
        url_env("ws:///x"),
        "environment url `ws:///x` is invalid: HTTP format error: invalid format",
    ),
    (
        "uri-fragment-only",
        url_env("ws://#x"),
        "environment url `ws://#x` is invalid: HTTP format error: invalid format",
    ),
    (
        "uri-query-only",
        url_env("ws://?x"),
        "environment url `ws://?x` is invalid: HTTP format error: invalid format",
    ),
    (
        "uri-at-only",
        url_env("ws://@"),
        "environment url `ws://@` is invalid: HTTP format error: invalid authority",
    ),
    (
        "uri-empty-host-after-userinfo",
        url_env("ws://user@"),
        "environment url `ws://user@` is invalid: HTTP format error: invalid authority",
    ),
    (
        "uri-unclosed-bracket",
        url_env("ws://[::1"),
        "environment url `ws://[::1` is invalid: HTTP format error: invalid authority",
    ),
    (
        "uri-two-ports",
        url_env("ws://h:1:2"),
        "environment url `ws://h:1:2` is invalid: HTTP format error: invalid authority",
    ),
    (
        "uri-percent-in-host",
        url_env("ws://a%41"),
        "environment url `ws://a%41` is invalid: HTTP format error: invalid authority",
    ),
    (
        "uri-space-in-host",
        url_env("ws://exa mple.com"),
        "environment url `ws://exa mple.com` is invalid: HTTP format error: invalid uri character",
    ),
    (
        "uri-non-ascii-host",
        url_env("ws://é.com/"),
        "environment url `ws://é.com/` is invalid: HTTP format error: invalid uri character",
    ),
    (
        "uri-caret-in-host",
        url_env("ws://h^/"),
        "environment url `ws://h^/` is invalid: HTTP format error: invalid uri character",
    ),
    (
        "uri-pipe-in-host",
        url_env("ws://h|"),
        "environment url `ws://h|` is invalid: HTTP format error: invalid uri character",
    ),
    (
        "uri-space-in-path",
        url_env("ws://h/a b"),
        "environment url `ws://h/a b` is invalid: HTTP format error: invalid uri character",
    ),
    (
        "uri-backquote-in-path",
        url_env("ws://h/`"),
        "environment url `ws://h/`` is invalid: HTTP format error: invalid uri character",
    ),
    (
        "uri-quote-in-query",
        url_env('ws://h?\\"'),
        'environment url `ws://h?"` is invalid: HTTP format error: invalid uri character',
    ),
    (
        "uri-too-long",
        url_env("ws://" + "a" * 70000),
        f"environment url `ws://{'a' * 70000}` is invalid: HTTP format error: uri too long",
    ),
    (
        "uri-checked-before-token",
        tok_env("ws://h^"),
        "environment url `ws://h^` is invalid: HTTP format error: invalid uri character",
    ),
    # a bearer token: the url crate's parse, then wss:// or loopback, then a valid header value
    ("token-remote-ws", tok_env("ws://example.com"), HEADERS),
    ("token-empty-still-counts", tok_env("ws://example.com", ""), HEADERS),
    ("token-unspecified-address", tok_env("ws://0.0.0.0:1"), HEADERS),
    ("token-localhost-subdomain", tok_env("ws://foo.localhost:1"), HEADERS),
    ("token-localhost-trailing-dot", tok_env("ws://localhost.:1"), HEADERS),
    ("token-ipv4-mapped-loopback", tok_env("ws://[::ffff:127.0.0.1]:1"), HEADERS),
    ("token-percent-userinfo", tok_env("ws://u%41@h"), HEADERS),
    (
        "token-bad-port",
        tok_env("ws://127.0.0.1:99999"),
        "invalid exec-server WebSocket URL: invalid port number",
    ),
    (
        "token-bad-ipv4",
        tok_env("wss://300.1.1.1/"),
        "invalid exec-server WebSocket URL: invalid IPv4 address",
    ),
    (
        "token-bad-ipv6",
        tok_env("ws://[::1]x"),
        "invalid exec-server WebSocket URL: invalid IPv6 address",
    ),
    (
        "token-delete-character",
        tok_env("ws://127.0.0.1:1", "a\\u007fb"),
        "invalid value for exec-server WebSocket header `authorization`",
    ),
    (
        "token-newline",
        tok_env("wss://example.com", "a\\nb"),
        "invalid value for exec-server WebSocket header `authorization`",
    ),
    (
        "token-destination-before-value",
        tok_env("ws://example.com", "a\\u007fb"),
        HEADERS,
    ),
    # duplicates, then the default, after every environment validated
    (
        "duplicate",
        env('id = "dev"\n' + URL) + env('id = "dev"\n' + PROGRAM),
        "environment id `dev` is duplicated",
    ),
    (
        "environments-validated-in-order",
        env('id = "a"\n' + URL) + env('id = "a"\nurl = "http://x"'),
        "environment url `http://x` must use ws:// or wss://",
    ),
    (
        "token-checked-with-its-environment",
        'default = "nope"\n' + tok_env("ws://example.com") + env('id = "bad id"\n' + URL),
        HEADERS,
    ),
    (
        "duplicate-before-default",
        'default = "nope"\n' + env('id = "dev"\n' + URL) + env('id = "dev"\n' + URL),
        "environment id `dev` is duplicated",
    ),
    ("default-empty", 'default = ""\n', "default environment id cannot be empty"),
    ("default-blank", 'default = "  "\n', "default environment id cannot be empty"),
    ("default-unknown", 'default = "nope"\n', "default environment `nope` is not configured"),
    (
        "default-shown-trimmed",
        'default = " nope "\n',
        "default environment `nope` is not configured",
    ),
    (
        "default-local-upper-case",
        'default = "LOCAL"\n',
        "default environment `LOCAL` is not configured",
    ),
    (
        "default-local-excluded",
        'default = "local"\ninclude_local = false\n',
        "default environment `local` is not configured",
    ),
    (
        "default-case-sensitive",
        'default = "DEV"\n' + env('id = "dev"\n' + URL),
        "default environment `DEV` is not configured",
    ),
    (
        "default-string-shown-raw",
        'default = "x\\ty"\n',
        "default environment `x\ty` is not configured",
    ),
]

ERRORS = DECODING_ERRORS + VALIDATION_ERRORS


@pytest.mark.parametrize(
    ("text", "message"), [pytest.param(t, m, id=name) for name, t, m in ERRORS]
)
def test_rejected(text: str, message: str) -> None:
    with pytest.raises(EnvironmentsError) as info:
        parse_environments(text, codex_home=HOME)
    expected = expected_text(message, HOME)
    assert str(info.value) == expected
    assert info.value.display == "exec-server protocol error: " + expected


def test_case_ids_are_unique() -> None:
    names = [name for name, _, _ in ERRORS] + [name for name, _, _ in VALID]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("default = \n", id="missing-value"),
        pytest.param("[[environments]\n", id="unclosed-array-table"),
        pytest.param('default = "a"\ndefault = "b"\n', id="duplicate-key"),
    ],
)
def test_toml_syntax_errors(text: str) -> None:
    # The reference words these after the toml crate ("string values must be quoted, expected
    # literal string", "unclosed array table, expected `]`", "duplicate key"); we keep its
    # frame but tomllib's wording.
    with pytest.raises(EnvironmentsError) as info:
        parse_environments(text, codex_home=HOME)
    message = str(info.value)
    assert message.startswith(expected_text(PARSE, HOME))
    assert message.endswith("\n")


# --- accepted files -----------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What a valid file yields: (id, kind, details) per environment, default, include_local."""

    environments: tuple[UrlEnvironment | StdioEnvironment, ...] = ()
    default: str | None = "local"
    include_local: bool = True


def ws(env_id: str, url: str, **kwargs: object) -> UrlEnvironment:
    return UrlEnvironment(id=env_id, url=url, **kwargs)  # type: ignore[arg-type]


def stdio(env_id: str, program: str, **kwargs: object) -> StdioEnvironment:
    return StdioEnvironment(id=env_id, program=program, **kwargs)  # type: ignore[arg-type]


LOOP = "ws://127.0.0.1:1"

VALID: list[tuple[str, str, Expect]] = [
    ("empty-file", "", Expect()),
    ("comments-only", "  \n\n# nothing\n", Expect()),
    ("byte-order-mark", "\ufeffinclude_local = true\n", Expect()),
    (
        "include-local-false-no-default",
        "include_local = false\n",
        Expect(default=None, include_local=False),
    ),
    ("default-none", 'default = "none"\n', Expect(default=None)),
    ("default-none-any-case-trimmed", 'default = " None "\n', Expect(default=None)),
    (
        "default-none-without-local",
        'default = "none"\ninclude_local = false\n',
        Expect(default=None, include_local=False),
    ),
    ("default-local", 'default = "local"\n', Expect()),
    (
        "default-trimmed",
        'default = " dev "\n' + env('id = "dev"\n' + URL),
        Expect((ws("dev", LOOP),), default="dev"),
    ),
    (
        "default-configured-without-local",
        'default = "ssh-dev"\ninclude_local = false\n' + env('id = "ssh-dev"\nprogram = "ssh"'),
        Expect((stdio("ssh-dev", "ssh"),), default="ssh-dev", include_local=False),
    ),
    ("id-64-chars", env(f'id = "{"a" * 64}"\n' + URL), Expect((ws("a" * 64, LOOP),))),
    ("id-local-other-case", env('id = "Local"\n' + URL), Expect((ws("Local", LOOP),))),
    (
        "ids-differ-by-case",
        env('id = "Dev"\n' + URL) + env('id = "dev"\n' + URL),
        Expect((ws("Dev", LOOP), ws("dev", LOOP))),
    ),
    ("url-trimmed", url_env(" ws://127.0.0.1:1 ", env_id="dev"), Expect((ws("dev", LOOP),))),
    ("url-nbsp-trimmed", url_env("\\u00a0ws://h", env_id="dev"), Expect((ws("dev", "ws://h"),))),
    ("url-empty-host-with-port", url_env("ws://:80"), Expect((ws("a", "ws://:80"),))),
    (
        "url-bad-port-without-token",
        url_env("ws://127.0.0.1:99999"),
        Expect((ws("a", "ws://127.0.0.1:99999"),)),
    ),
    (
        "url-bad-ipv4-without-token",
        url_env("ws://300.1.1.1/"),
        Expect((ws("a", "ws://300.1.1.1/"),)),
    ),
    ("url-non-ascii-path", url_env("ws://h/é"), Expect((ws("a", "ws://h/é"),))),
    ("url-fragment", url_env("ws://h/#<"), Expect((ws("a", "ws://h/#<"),))),
    ("url-json-path", url_env("ws://h/{}"), Expect((ws("a", "ws://h/{}"),))),
    ("url-userinfo", url_env("ws://user@h"), Expect((ws("a", "ws://user@h"),))),
    ("url-underscore-host", url_env("ws://a_b/"), Expect((ws("a", "ws://a_b/"),))),
    ("url-ipv6", url_env("ws://[::1]:80"), Expect((ws("a", "ws://[::1]:80"),))),
    *[
        (
            f"token-{name}",
            tok_env(url),
            Expect((ws("a", url, auth_bearer_token="t"),)),
        )
        for name, url in [
            ("loopback-ipv4", LOOP),
            ("loopback-ipv4-range", "ws://127.5.6.7:1"),
            ("loopback-short-ipv4", "ws://127.1:1"),
            ("loopback-hex-ipv4", "ws://0x7f000001:1"),
            ("localhost", "ws://localhost:1"),
            ("localhost-any-case", "ws://LocalHost:1"),
            ("loopback-ipv6", "ws://[::1]:1"),
            ("loopback-userinfo", "ws://u:p@127.0.0.1:1"),
            ("wss-remote", "wss://example.com"),
        ]
    ],
    ("token-empty-loopback", tok_env(LOOP, ""), Expect((ws("a", LOOP, auth_bearer_token=""),))),
    ("token-spaces-kept", tok_env(LOOP, " t "), Expect((ws("a", LOOP, auth_bearer_token=" t "),))),
    ("token-non-ascii", tok_env(LOOP, "é"), Expect((ws("a", LOOP, auth_bearer_token="é"),))),
    ("token-tab", tok_env(LOOP, "a\\tb"), Expect((ws("a", LOOP, auth_bearer_token="a\tb"),))),
    (
        "timeouts-integer",
        url_env(LOOP, "connect_timeout_sec = 12\ninitialize_timeout_sec = 34"),
        Expect((ws("a", LOOP, connect_timeout_s=12.0, initialize_timeout_s=34.0),)),
    ),
    (
        "timeouts-float-and-zero",
        url_env(LOOP, "connect_timeout_sec = 2.5\ninitialize_timeout_sec = 0"),
        Expect((ws("a", LOOP, connect_timeout_s=2.5, initialize_timeout_s=0.0),)),
    ),
    (
        "timeout-negative-zero",
        url_env(LOOP, "connect_timeout_sec = -0.0"),
        Expect((ws("a", LOOP, connect_timeout_s=0.0),)),
    ),
    (
        "timeout-huge-below-2-pow-64",
        url_env(LOOP, "connect_timeout_sec = 18446744073709549568.0"),
        Expect((ws("a", LOOP, connect_timeout_s=18446744073709549568.0),)),
    ),
    (
        "stdio-initialize-timeout",
        env('id = "a"\nprogram = "ssh"\ninitialize_timeout_sec = 56'),
        Expect((stdio("a", "ssh", initialize_timeout_s=56.0),)),
    ),
    (
        "stdio-full",
        env(
            'id = "ssh-dev"\nprogram = " ssh "\n'
            'args = ["dev", "codex exec-server --listen stdio"]\n'
            'env = { CODEX_LOG = "debug" }\ncwd = "workspace"'
        ),
        Expect(
            (
                stdio(
                    "ssh-dev",
                    "ssh",
                    args=("dev", "codex exec-server --listen stdio"),
                    env={"CODEX_LOG": "debug"},
                    cwd=HOME / "workspace",
                ),
            )
        ),
    ),
    (
        "stdio-absolute-cwd",
        env('id = "a"\nprogram = "p"\ncwd = "/srv/work"'),
        Expect((stdio("a", "p", cwd=Path("/srv/work")),)),
    ),
    (
        "stdio-env-subtable",
        env('id = "a"\nprogram = "p"') + '[environments.env]\nK = "v"\n',
        Expect((stdio("a", "p", env={"K": "v"}),)),
    ),
    (
        "stdio-env-datetime-quirk",
        env('id = "a"\nprogram = "p"\nenv = 1979-05-27T07:32:00Z'),
        Expect((stdio("a", "p", env={"$__toml_private_datetime": "1979-05-27T07:32:00Z"}),)),
    ),
    (
        "program-control-not-trimmed",
        env('id = "a"\nprogram = "\\u001c"'),
        Expect((stdio("a", "\x1c"),)),
    ),
    ("skills-empty-table", url_env(LOOP, "skills = {}"), Expect((ws("a", LOOP),))),
    ("skills-empty-array", url_env(LOOP, "skills = []"), Expect((ws("a", LOOP),))),
    (
        "skills-required",
        url_env(LOOP, 'skills = { required = ["x", "y"] }'),
        Expect((ws("a", LOOP, required_skills=("x", "y")),)),
    ),
    (
        "skills-array-form",
        url_env(LOOP, 'skills = [["x"], 1]'),
        Expect((ws("a", LOOP, required_skills=("x",)),)),
    ),
    (
        "inline-environments",
        'environments = [{ id = "a", url = "ws://127.0.0.1:1" }]\n',
        Expect((ws("a", LOOP),)),
    ),
]


@pytest.mark.parametrize(("text", "expect"), [pytest.param(t, e, id=name) for name, t, e in VALID])
def test_accepted(text: str, expect: Expect) -> None:
    config = parse_environments(text, codex_home=HOME)
    assert config == EnvironmentsConfig(expect.environments, expect.default, expect.include_local)
    for got, want in zip(config.environments, expect.environments, strict=True):
        if isinstance(want, StdioEnvironment):
            assert isinstance(got, StdioEnvironment)
            assert dict(got.env) == dict(want.env)


def test_defaults() -> None:
    config = parse_environments(url_env(LOOP) + env('id = "b"\nprogram = "p"'), codex_home=HOME)
    url, program = config.environments
    assert isinstance(url, UrlEnvironment)
    assert url.connect_timeout_s == DEFAULT_CONNECT_TIMEOUT_S == 10.0
    assert url.initialize_timeout_s == DEFAULT_INITIALIZE_TIMEOUT_S == 10.0
    assert url.auth_bearer_token is None
    assert url.http_headers() == {}
    assert isinstance(program, StdioEnvironment)
    assert program.initialize_timeout_s == 10.0
    assert (program.args, dict(program.env), program.cwd) == ((), {}, None)
    assert config.ids == ("local", "a", "b")


def test_bearer_header() -> None:
    config = parse_environments(tok_env(LOOP, "tok123"), codex_home=HOME)
    (url,) = config.environments
    assert isinstance(url, UrlEnvironment)
    assert url.http_headers() == {"Authorization": "Bearer tok123"}
    assert "tok123" not in repr(url)


# --- selection ------------------------------------------------------------------------------

TWO = env('id = "dev"\n' + URL) + env('id = "ssh-dev"\nprogram = "ssh"')


@pytest.mark.parametrize(
    ("text", "name", "selected"),
    [
        pytest.param(TWO, None, "local", id="default-omitted-is-local"),
        pytest.param('default = "dev"\n' + TWO, None, "dev", id="default-configured"),
        pytest.param('default = "local"\n' + TWO, None, "local", id="default-local"),
        pytest.param('default = "none"\n' + TWO, None, None, id="default-none"),
        pytest.param("include_local = false\n" + TWO, None, None, id="no-local-no-default"),
        pytest.param(TWO, "ssh-dev", "ssh-dev", id="explicit-stdio"),
        pytest.param('default = "none"\n' + TWO, "dev", "dev", id="explicit-despite-none"),
        pytest.param(TWO, "local", "local", id="explicit-local"),
    ],
)
def test_select(text: str, name: str | None, selected: str | None) -> None:
    config = parse_environments(text, codex_home=HOME)
    chosen = config.select(name)
    if selected is None or selected == "local":
        assert chosen == selected
    else:
        assert not isinstance(chosen, str)
        assert chosen is not None
        assert chosen.id == selected
        assert chosen is config.get(selected)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        pytest.param(TWO, "nope", id="unknown"),
        pytest.param(TWO, "DEV", id="case-sensitive"),
        pytest.param(TWO, "none", id="none-is-not-an-environment"),
        pytest.param("include_local = false\n" + TWO, "local", id="local-excluded"),
    ],
)
def test_select_unknown(text: str, name: str) -> None:
    config = parse_environments(text, codex_home=HOME)
    with pytest.raises(EnvironmentsError) as info:
        config.select(name)
    assert str(info.value) == f"unknown turn environment id `{name}`"


# --- ids --------------------------------------------------------------------------------------

ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
valid_ids = st.text(alphabet=ID_CHARS, min_size=1, max_size=64).filter(
    lambda s: s != "local" and s.lower() != "none"
)


@settings(max_examples=300)
@given(env_id=valid_ids, stdio_env=st.booleans())
def test_valid_id_round_trips(env_id: str, stdio_env: bool) -> None:
    transport = 'program = "p"' if stdio_env else 'url = "ws://127.0.0.1:1"'
    text = f'default = "{env_id}"\n' + env(f'id = "{env_id}"\n{transport}')
    config = parse_environments(text, codex_home=HOME)
    (parsed,) = config.environments
    assert parsed.id == env_id
    assert config.default == env_id
    assert config.select(None) is parsed
    assert config.select(env_id) is parsed


@settings(max_examples=200)
@given(
    env_id=st.text(alphabet=ID_CHARS + " .:/!@#$%^&*()+=é\u3000", min_size=1, max_size=30).filter(
        lambda s: s.strip(" \u3000") == s and any(c not in ID_CHARS for c in s)
    )
)
def test_invalid_id_characters(env_id: str) -> None:
    with pytest.raises(EnvironmentsError) as info:
        parse_environments(env(f'id = "{env_id}"\n' + URL), codex_home=HOME)
    if len(env_id.encode()) > 64:
        assert str(info.value).endswith("cannot be longer than 64 characters")
    else:
        assert str(info.value) == (
            f"environment id `{env_id}` must contain only ASCII letters, numbers, '-' or '_'"
        )


# --- load_environments ------------------------------------------------------------------------


def test_load_missing_file(tmp_path: Path) -> None:
    assert load_environments(tmp_path) == EnvironmentsConfig((), "local", True)


def test_load_file(tmp_path: Path) -> None:
    (tmp_path / "environments.toml").write_text(
        'default = "ssh-dev"\n' + env('id = "ssh-dev"\nprogram = "ssh"\ncwd = "w"')
    )
    config = load_environments(tmp_path)
    assert config.environments == (stdio("ssh-dev", "ssh", cwd=tmp_path / "w"),)
    assert config.default == "ssh-dev"


def test_load_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "environments.toml").write_text("foo = 1\n")
    with pytest.raises(EnvironmentsError) as info:
        load_environments(tmp_path)
    assert str(info.value).startswith(
        f"failed to parse environment config `{tmp_path}/environments.toml`: unknown field"
    )


def test_load_directory(tmp_path: Path) -> None:
    (tmp_path / "environments.toml").mkdir()
    with pytest.raises(EnvironmentsError) as info:
        load_environments(tmp_path)
    assert str(info.value) == (
        f"failed to read environment config `{tmp_path}/environments.toml`: "
        "Is a directory (os error 21)"
    )


def test_load_invalid_utf8(tmp_path: Path) -> None:
    (tmp_path / "environments.toml").write_bytes(b'default = "\xff"\n')
    with pytest.raises(EnvironmentsError) as info:
        load_environments(tmp_path)
    assert str(info.value) == (
        f"failed to read environment config `{tmp_path}/environments.toml`: "
        "stream did not contain valid UTF-8"
    )


# --- the same tables against the reference --------------------------------------------------

PROBE_ROOT = REFERENCE_CODEX_HOME.parent / "environments-toml"


def run_reference(binary: Path, name: str, text: str) -> tuple[Path, str | None]:
    """Run ``codex exec`` with `text` as the registry: the message it fails with, or None
    when it accepted the file (it printed its banner; it is stopped there)."""
    home = PROBE_ROOT / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "environments.toml").write_text(text, encoding="utf-8")
    process = subprocess.Popen(
        [str(binary), "exec", "--skip-git-repo-check", "hi"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=home,
        env={**os.environ, "CODEX_HOME": str(home)},
        start_new_session=True,
    )
    assert process.stderr is not None
    captured = b""
    try:
        for line in process.stderr:
            captured += line
            if line.startswith(b"OpenAI Codex v"):
                return home, None
            if b"Stack backtrace:" in line:
                break
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
    text_err = captured.decode()
    start = text_err.index("Error: exec-server protocol error: ")
    end = text_err.index("\n\nStack backtrace:")
    return home, text_err[start + len("Error: exec-server protocol error: ") : end]


@pytest.mark.reference
@pytest.mark.parametrize(
    ("name", "text", "message"),
    [pytest.param(n, t, m, id=n) for n, t, m in ERRORS]
    + [pytest.param(n, t, None, id=n) for n, t, _ in VALID],
)
def test_reference_agrees(name: str, text: str, message: str | None) -> None:
    binary = require_reference()
    assert binary == reference_binary()
    home, got = run_reference(binary, name, text)
    if message is None:
        assert got is None
        parse_environments(text, codex_home=home)
        return
    assert got == expected_text(message, home)
    with pytest.raises(EnvironmentsError) as info:
        parse_environments(text, codex_home=home)
    assert str(info.value) == got
