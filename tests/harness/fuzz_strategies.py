"""Hypothesis strategies that fuzz the JSON-RPC surface of a live server.

Used by tests/server/test_fuzz.py.

A generated frame is either a `Call` (a request for any method a client may call, or an unknown
one, with valid or mutated params and envelope) or a `Raw` frame of garbage. `render()` turns a
`Call` into the exact frame text and says how the server must answer it: with the request's id,
or (for envelopes that are not JSON-RPC requests) with a parse error whose id is -1.

Safety: everything a frame can make the server do is confined. `render()` passes every call's
params through `sanitize()`, whatever strategy produced them, so nothing unsafe is ever sent:

* a string that a `file:` URI parser could accept must name `<root>` or `<root>/<name>`, where
  `name` has no `/`, `\\`, `.` or `%` (so no traversal, encoded or not); other strings are never
  file URIs (relative references and other schemes are rejected by the server);
* `process/start` runs only `true`, `echo`, `cat` (no file arguments), `sleep` with a short
  argument, `python -c` with a fixed snippet, or programs that do not exist; the child's `PATH`
  is fixed and its other variables are `FUZZ_*`;
* `http/request` goes only to the test's HTTP server on 127.0.0.1 (anything else with a scheme
  is replaced), never with `CONNECT`, and with `x-fuzz-*` or syntactically invalid header names;
* `process/read` never waits more than 200 ms and `fs/writeBlock` never writes past 1 MiB, so
  every request is answered quickly and no sparse giant file appears.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec
from hypothesis import strategies as st

from execserver.protocol import methods
from execserver.protocol.file_system import FsWriteBlockParams
from execserver.protocol.http import HttpRequestParams
from execserver.protocol.process import ExecEnvPolicy, ProcessReadParams, ProcessStartParams

Json = Any
Draw = st.DrawFn

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
U64_MAX = 2**64 - 1
MAX_WAIT_MS = 200
MAX_WRITE_OFFSET = 1 << 20

# Generated text stays below U+10FFFE; U+10FFFF marks the placeholders of `Verbatim` fragments.
MARK = "\U0010ffff"
MAX_CODEPOINT = 0x10FFFD

# -- verbatim JSON fragments ---------------------------------------------------------------------


class Verbatim(str):
    """A JSON fragment sent exactly as written: numbers Python's json cannot write (`1e400`),
    escapes, and lone surrogate escapes. It travels inside params as a placeholder string (so it
    can also be a key) and `render()` splices the fragment into the frame text."""

    def __new__(cls, fragment: str, *, malformed: bool = False) -> Verbatim:
        tag = "m" if malformed else "o"
        return super().__new__(cls, f"{MARK}{tag}{fragment.encode().hex()}{MARK}")

    @property
    def fragment(self) -> str:
        return bytes.fromhex(self[2:-1]).decode()

    @property
    def malformed(self) -> bool:
        """Whether the fragment makes any message holding it invalid JSON for serde_json."""
        return self[1] == "m"

    def __repr__(self) -> str:
        fragment = self.fragment
        if len(fragment) > 40:
            fragment = f"{fragment[:20]}...({len(fragment)} chars)"
        return f"Verbatim({fragment!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis's reports
        printer.text(repr(self))

    @property
    def value(self) -> Json:
        """What the server decodes, for the safety checks (not a JSON-RPC expectation)."""
        return json.loads(self.fragment, parse_int=wide_int)


def wide_int(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:  # beyond int()'s digit limit
        return float(text)


_PLACEHOLDER = re.compile(
    r'"(?:\\udbff\\udfff|\U0010ffff)([mo])([0-9a-f]*)(?:\\udbff\\udfff|\U0010ffff)"'
)

LONE_SURROGATES = tuple(
    Verbatim(text, malformed=True)
    for text in (r'"\ud800"', r'"\udfff"', r'"a\udbffb"', r'"\ud800\u0041"', r'"\udc00\ud800"')
)
# Escapes serde decodes to ordinary strings (all harmless wherever they land).
ESCAPED_STRINGS = tuple(
    Verbatim(text)
    for text in (r'"\u0000"', r'"\/\b\f\n\r\t"', r'"\ud83d\ude00"', r'"e\u0301"', r'"\u00e9\""')
)
ODD_NUMBERS = tuple(
    Verbatim(text)
    for text in (
        "1e400",
        "-1e400",
        "1e-400",
        "1E2",
        "-0",
        "0.0",
        "1.0e+2",
        "1" * 5000,
        "-" + "9" * 400,
        "123456789012345678901234567890",
    )
)


class Long(str):
    """A long string (a body, a huge argument) that reports compactly in failure messages."""

    def __repr__(self) -> str:
        return f"Long({self[:16]!r}... {len(self)} chars)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis's reports
        printer.text(repr(self))


def plain(value: Json) -> Json:
    """The value the server sees for `value` (a Verbatim's decoded fragment)."""
    return value.value if isinstance(value, Verbatim) else value


# -- frames --------------------------------------------------------------------------------------

ID_STYLES = ("int", "int", "str", "neg", "max", "min", "unicode")


@dataclass(frozen=True)
class Call:
    """A request; `render()` gives it a fresh id in `id_style`, sends it as text or (`binary`)
    as bytes.

    `envelope` names a mutation that turns it into something the server must refuse as a whole
    (`bad-id`, `method-type`, `bad-trace`, `dup-key`, `truncate`, `trailing`, `deep`, `nan`,
    `array`): such frames are answered with id -1, and nothing in them runs."""

    method: Json
    params: Json = None
    has_params: bool = True
    id_style: str = "int"
    id_text: str = ""
    extras: tuple[tuple[str, Json], ...] = ()
    ascii_only: bool = True
    binary: bool = False
    id_last: bool = False
    envelope: str = ""
    envelope_arg: Json = None


@dataclass(frozen=True)
class Raw:
    """A frame of garbage (text or bytes) that is not a JSON-RPC object: answered with id -1."""

    data: str | bytes


Frame = Call | Raw


@dataclass
class Rendered:
    data: str | bytes
    request_id: int | str | None  # None: the server must answer with a parse error (id -1)
    method: str
    fresh_processes: list[str] = field(default_factory=list)


# -- the fuzz context: where things may happen ----------------------------------------------------


@dataclass(frozen=True)
class Context:
    """Where the fuzzer may act: `root_uri` (a directory under the test's tmp dir), the base
    URL of the test's HTTP server (`http://127.0.0.1:PORT`), and sessions `initialize` may try
    to resume."""

    root_uri: str
    http_base: str
    session_ids: tuple[str, ...] = ()

    def inside_root(self, text: str) -> bool:
        """Whether `text` (a string starting with `file:`, already stripped the WHATWG way) is
        `<root>` or `<root>/<name>` with a `name` that cannot leave the root."""
        root_path = self.root_uri[len("file://") :]
        rest = text[len("file:") :]
        if rest[: len("//localhost")].lower() == "//localhost":
            rest = rest[len("//localhost") :]
        elif rest.startswith("//"):
            rest = rest[len("//") :]
        else:
            return False
        if not rest.startswith(root_path):  # the path itself is case-sensitive
            return False
        tail = rest[len(root_path) :]
        if tail == "" or tail[0] in "?#":
            return True
        return tail[0] == "/" and not any(c in tail[1:] for c in "/\\.%")

    def url_is_local(self, text: str) -> bool:
        base = self.http_base.lower()
        lowered = _url_text(text).lower()
        if not lowered.startswith(base):
            return False
        tail = lowered[len(base) :]
        return tail == "" or tail[0] in "/?#"


# -- safety --------------------------------------------------------------------------------------

SAFE_SLEEP_ARGS = ("0", "0.05", "0.3", "1", "x", "-1", "")
SAFE_SNIPPETS = (
    "pass",
    "import sys; sys.stdout.write('out')",
    "import sys; sys.stderr.write('err'); sys.exit(3)",
    "import sys; sys.stdout.write(sys.stdin.read(100))",
)
MISSING_PROGRAMS = ("execserver-fuzz-missing-", "/nonexistent/execserver-fuzz/")
CHILD_PATH = "/usr/bin:/bin"
_WHATWG_STRIP = "".join(chr(c) for c in range(0x21))
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _url_text(value: str) -> str:
    """`value` as a WHATWG URL parser starts from: tabs and newlines removed, C0 controls and
    spaces stripped from both ends."""
    return re.sub("[\t\n\r]", "", value).strip(_WHATWG_STRIP)


def harmless_string(value: str, ctx: Context) -> bool:
    """False for a string a `file:` URI parser could accept outside the root."""
    text = _url_text(value)
    return not text.lower().startswith("file:") or ctx.inside_root(text)


def harmless_argv(argv: Json) -> bool:
    """Whether `argv` (any JSON) can only start a harmless program, or nothing."""
    if not isinstance(argv, list) or not argv:
        return True
    values = [plain(a) for a in argv]
    if not all(isinstance(v, str) for v in values):
        return True  # not a list of strings: params are refused before anything runs
    if any(isinstance(a, Verbatim) and a.malformed for a in argv):
        return True  # the frame is not JSON for the server
    program, args = values[0], values[1:]
    if program in ("true", "echo"):
        return True
    if program == "cat":
        return all(a == "-" for a in args)
    if program == "sleep":
        return len(args) == 1 and args[0] in SAFE_SLEEP_ARGS
    if program == sys.executable:
        return len(args) == 2 and args[0] == "-c" and args[1] in SAFE_SNIPPETS
    return program.startswith(MISSING_PROGRAMS) and "\0" not in program


def _field_names(struct: type[msgspec.Struct]) -> tuple[str, ...]:
    return tuple(f.encode_name for f in msgspec.structs.fields(struct))


START_FIELDS = _field_names(ProcessStartParams)
READ_FIELDS = _field_names(ProcessReadParams)
HTTP_FIELDS = _field_names(HttpRequestParams)
WRITE_BLOCK_FIELDS = _field_names(FsWriteBlockParams)
ENV_POLICY_FIELDS = _field_names(ExecEnvPolicy)


def _strings_harmless(value: Json, ctx: Context) -> Json:
    """Replace every string that could be a file URI outside the root (keys are never paths)."""
    if isinstance(value, str):
        decoded = plain(value)
        if isinstance(decoded, str) and not harmless_string(decoded, ctx):
            return ctx.root_uri + "/sanitized"
        return value
    if isinstance(value, list):
        return [_strings_harmless(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: _strings_harmless(v, ctx) for k, v in value.items()}
    return value


def _as_fields(params: Json, names: tuple[str, ...]) -> dict[str, Json] | None:
    """Struct params as a dict, from either the map or the positional (array) form."""
    if isinstance(params, dict):
        return params
    if isinstance(params, list):
        return dict(zip(names, params, strict=False))
    return None


def _with_fields(params: Json, names: tuple[str, ...], fields: dict[str, Json]) -> Json:
    if isinstance(params, list):
        return [fields.get(name) for name in names[: len(params)]] + params[len(names) :]
    return fields


def _safe_env(env: Json) -> Json:
    if not isinstance(env, dict):
        return env
    safe = {
        k: v for k, v in env.items() if isinstance(plain(k), str) and plain(k).startswith("FUZZ_")
    }
    if "PATH" in env:
        safe["PATH"] = CHILD_PATH
    return safe


def _sanitize_start(fields: dict[str, Json]) -> None:
    if not harmless_argv(fields.get("argv")):
        fields["argv"] = ["echo", "sanitized"]
    arg0 = plain(fields.get("arg0"))
    if isinstance(arg0, str) and not arg0.startswith("fuzz"):
        fields["arg0"] = "fuzz-arg0"
    if "env" in fields:
        fields["env"] = _safe_env(fields["env"])
    policy = _as_fields(fields.get("envPolicy"), ENV_POLICY_FIELDS)
    if policy is not None and "set" in policy:
        policy = dict(policy, set=_safe_env(policy["set"]))
        fields["envPolicy"] = _with_fields(fields["envPolicy"], ENV_POLICY_FIELDS, policy)


def _sanitize_read(fields: dict[str, Json]) -> None:
    wait = plain(fields.get("waitMs"))
    if isinstance(wait, int) and not isinstance(wait, bool) and MAX_WAIT_MS < wait <= U64_MAX:
        fields["waitMs"] = MAX_WAIT_MS


def _sanitize_http(fields: dict[str, Json], ctx: Context) -> None:
    url = plain(fields.get("url"))
    if isinstance(url, str) and _SCHEME.match(_url_text(url)) and not ctx.url_is_local(url):
        fields["url"] = ctx.http_base + "/sanitized"
    method = plain(fields.get("method"))
    if isinstance(method, str) and method.strip().upper() == "CONNECT":
        fields["method"] = "GET"
    headers = fields.get("headers")
    if isinstance(headers, list):
        fields["headers"] = [_safe_header(h) for h in headers]


def _safe_header(header: Json) -> Json:
    fields = _as_fields(header, ("name", "value", "valueEnvVar"))
    if fields is None:
        return header
    name = plain(fields.get("name"))
    if (
        isinstance(name, str)
        and _TOKEN.fullmatch(name.strip())
        and not name.strip().lower().startswith("x-fuzz")
    ):
        return _with_fields(header, ("name", "value", "valueEnvVar"), dict(fields, name="x-fuzz-n"))
    return header


def _sanitize_write_block(fields: dict[str, Json]) -> None:
    offset = plain(fields.get("offset"))
    if isinstance(offset, int) and not isinstance(offset, bool) and offset > MAX_WRITE_OFFSET:
        fields["offset"] = 4096 if offset <= U64_MAX else offset


_METHOD_RULES: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Json], Context], None]]] = {
    methods.PROCESS_START: (START_FIELDS, lambda f, _: _sanitize_start(f)),
    methods.PROCESS_READ: (READ_FIELDS, lambda f, _: _sanitize_read(f)),
    methods.HTTP_REQUEST: (HTTP_FIELDS, _sanitize_http),
    methods.FS_WRITE_BLOCK: (WRITE_BLOCK_FIELDS, lambda f, _: _sanitize_write_block(f)),
}


def sanitize(method: Json, params: Json, ctx: Context) -> Json:
    """`params` made harmless for `method` (idempotent; see the module docstring)."""
    params = _strings_harmless(params, ctx)
    rule = _METHOD_RULES.get(plain(method)) if isinstance(plain(method), str) else None
    if rule is None:
        return params
    names, fix = rule
    fields = _as_fields(params, names)
    if fields is None:
        return params
    fields = dict(fields)
    fix(fields, ctx)
    return _with_fields(params, names, fields)


# -- rendering -------------------------------------------------------------------------------------

FRESH_PROCESS_IDS = ("@0", "@1", "@2")


def _request_id(style: str, number: int, text: str) -> int | str:
    if style == "neg":
        return -(number + 1)  # never -1 (the id of parse errors)
    if style == "max":
        return I64_MAX - number
    if style == "min":
        return I64_MIN + number
    if style == "str":
        return f"r{number}"
    if style == "unicode":
        return f"{text}#{number}"
    return number


def _splice(text: str) -> tuple[str, bool]:
    malformed = False

    def fragment(match: re.Match[str]) -> str:
        nonlocal malformed
        malformed = malformed or match.group(1) == "m"
        return bytes.fromhex(match.group(2)).decode()

    return _PLACEHOLDER.sub(fragment, text), malformed


def _substitute(value: Json, table: dict[str, str]) -> Json:
    if isinstance(value, str) and not isinstance(value, Verbatim):
        return table.get(value, value)
    if isinstance(value, list):
        return [_substitute(v, table) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, table) for k, v in value.items()}
    return value


def render(call: Call, number: int, example: int, ctx: Context) -> Rendered:
    """The frame text of `call` with request id number `number` (unique over the run), its
    process ids `@k` made unique to `example`, its params sanitized."""
    table = {token: f"x{example}-{token[1:]}" for token in FRESH_PROCESS_IDS}
    params = sanitize(call.method, _substitute(call.params, table), ctx)
    method = plain(call.method) if isinstance(plain(call.method), str) else "?"
    fresh = []
    if method == methods.PROCESS_START:
        fresh = [v for v in table.values() if v in json.dumps(params)]
    request_id = _request_id(call.id_style, number, call.id_text)
    message: dict[str, Json] = {}
    if not call.id_last:
        message["id"] = request_id
    message["method"] = call.method
    if call.has_params:
        message["params"] = params
    for key, value in call.extras:
        message.setdefault(key, _strings_harmless(value, ctx))
    if call.id_last:
        message["id"] = request_id
    expect: int | str | None = request_id
    envelope = call.envelope
    if envelope == "bad-id":
        message["id"] = call.envelope_arg
    elif envelope == "method-type":
        message["method"] = call.envelope_arg
    elif envelope == "bad-trace":
        message["trace"] = call.envelope_arg
    elif envelope == "deep":
        message["params"] = _nest(params, int(call.envelope_arg))
    text = json.dumps(message, ensure_ascii=call.ascii_only, separators=(",", ":"))
    if envelope == "dup-key":
        key = str(call.envelope_arg) if call.envelope_arg in message else "id"
        text = text[:-1] + f',"{key}":' + json.dumps(message[key]) + "}"
    elif envelope == "truncate":
        text = text[: max(1, min(len(text) - 1, int(call.envelope_arg)))]
    elif envelope == "trailing":
        text = text + str(call.envelope_arg)
    elif envelope == "nan":
        text = text[:-1] + ',"fuzz":' + str(call.envelope_arg) + "}"
    elif envelope == "array":
        text = "[" + text + "]"
    text, malformed = _splice(text)
    if envelope or malformed:
        expect = None
    data = text.encode() if call.binary else text  # bytes travel as binary WebSocket frames
    return Rendered(data, expect, method, fresh if expect is not None else [])


def _nest(value: Json, depth: int) -> Json:
    for _ in range(depth):
        value = [value]
    return value


def render_raw(raw: Raw, *, line_based: bool) -> Rendered:
    """A garbage frame; on a line-based transport (stdio) it must stay one non-blank line."""
    data = raw.data
    if line_based:
        if isinstance(data, bytes):
            data = data.replace(b"\n", b" ").replace(b"\r", b" ")
            if not data.decode("utf-8", "replace").strip():
                data = b"#" + data
        else:
            data = data.replace("\n", " ").replace("\r", " ")
            if not data.strip():
                data = "#" + data
    return Rendered(data, None, "(raw)")


def weighted(*options: tuple[int, st.SearchStrategy[Json]]) -> st.SearchStrategy[Json]:
    """One of `options`, each picked in proportion to its weight."""
    pool = [strategy for weight, strategy in options for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


# -- value strategies ----------------------------------------------------------------------------

_chars = st.characters(codec="utf-8", max_codepoint=MAX_CODEPOINT)  # no surrogates
texts = st.text(_chars, max_size=24)
long_texts = st.builds(
    lambda c, n: Long(c * n),
    st.sampled_from(["a", "é", "😀", "\\", '"', "\0"]),
    st.sampled_from([1000, 70_000, 300_000]),
)
odd_texts = weighted(
    (4, texts),
    (
        1,
        st.sampled_from(
            ["", " ", "\0", "\x7f", "\u2028", "\ufeff", "\ufffd", "😀", "e\u0301", "\\"]
        ),
    ),
    (1, st.sampled_from(ESCAPED_STRINGS)),
)
big_ints = st.sampled_from(
    [
        0,
        1,
        -1,
        I64_MAX,
        I64_MAX + 1,
        U64_MAX,
        U64_MAX + 1,
        I64_MIN,
        I64_MIN - 1,
        2**128,
        -(2**128),
        10**40,
    ]
)
integers = st.one_of(st.integers(), big_ints, st.sampled_from(ODD_NUMBERS))
floats = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(st.none(), st.booleans(), integers, floats, odd_texts)
junk: st.SearchStrategy[Json] = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=8,
)
junk_or_long = weighted((8, junk), (1, long_texts))


def b64(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return Long(text) if len(text) > 1000 else text


_blobs = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=4096),
    st.builds(lambda n: bytes(range(256)) * n, st.sampled_from([64, 1024, 4096])),
)
INVALID_BASE64 = (
    "=",
    "a",
    "ab=",
    "abc",
    "YQ",
    "YQ=",
    "Y Q==",
    "YQ==\n",
    "-_-_",
    "####",
    "é",
    "YQ==YQ==",
)
base64_texts = weighted((6, _blobs.map(b64)), (1, st.sampled_from(INVALID_BASE64)), (1, odd_texts))


def maybe(strategy: st.SearchStrategy[Json]) -> st.SearchStrategy[Json]:
    """A value for an `Option` member: absent (`OMITTED`), null, or a value."""
    return weighted((3, st.just(OMITTED)), (1, st.none()), (5, strategy))


def defaulted(strategy: st.SearchStrategy[Json]) -> st.SearchStrategy[Json]:
    """A value for a member with a default (null is not one of its values): absent or a value."""
    return weighted((3, st.just(OMITTED)), (5, strategy))


class _Omitted:
    def __repr__(self) -> str:
        return "OMITTED"


OMITTED: Json = _Omitted()


@st.composite
def struct(draw: Draw, /, **members: st.SearchStrategy[Json]) -> dict[str, Json]:
    """A params object with the members drawn in declaration order (OMITTED ones left out)."""
    out: dict[str, Json] = {}
    for name, strategy in members.items():
        value = draw(strategy)
        if value is not OMITTED:
            out[name] = value
    return out


# -- paths, programs, URLs -------------------------------------------------------------------------

_name_chars = st.characters(
    min_codepoint=0x20,
    max_codepoint=MAX_CODEPOINT,
    codec="utf-8",
    exclude_characters="/\\.%?#" + "".join(chr(c) for c in range(0x7F, 0xA0)),
)
NAMES = ("a", "b", "c", "dir", "x y", "ünï", "日本", "-", "~", "h@$", "FILE")
names = weighted((4, st.sampled_from(NAMES)), (1, st.text(_name_chars, min_size=1, max_size=12)))
INVALID_URIS = (
    "",
    "relative",
    "rel/a",
    "/tmp",
    "C:\\x",
    "\\\\server\\share",
    "http://127.0.0.1/x",
    "ftp://x/y",
    "urn:x",
    "file",
    "::",
    "%2F",
    "mailto:a@b",
    "\0",
)


PROCESS_IDS = ("p0", "p1", "p2", *FRESH_PROCESS_IDS)
HANDLE_IDS = ("h0", "h1", "h2", "")
INVALID_URLS = (
    "",
    "not a url",
    "/relative",
    "http://",
    "http://[::1",
    "http://127.0.0.1:99999/",
)
LOCAL_PATHS = ("/ok", "/redirect", "/loop", "/chunked", "/missing", "/ok?x=1#f", "")


class Params:
    """Params strategies for every client method. `clean` ones are always valid (so the fuzz
    reaches the handlers' real work: processes run, files are written, requests are sent); the
    others mix in wrong types and out-of-range values member by member."""

    def __init__(self, ctx: Context, *, clean: bool) -> None:
        self.ctx = ctx
        self.clean = clean

    def fuzzy(self, valid: st.SearchStrategy[Json], weight: int = 6) -> st.SearchStrategy[Json]:
        """`valid`, or (unless clean) sometimes junk."""
        return valid if self.clean else weighted((weight, valid), (1, junk))

    def alt(
        self, valid: st.SearchStrategy[Json], invalid: st.SearchStrategy[Json], weight: int = 6
    ) -> st.SearchStrategy[Json]:
        """`valid`, or (unless clean) sometimes `invalid`."""
        return valid if self.clean else weighted((weight, valid), (1, invalid))

    def bools(self) -> st.SearchStrategy[Json]:
        return self.fuzzy(st.booleans(), 8)

    def paths(self) -> st.SearchStrategy[Json]:
        root = self.ctx.root_uri
        inside = st.builds(
            lambda prefix, name: f"{prefix}/{name}",
            st.sampled_from([root, root, root, "FILE" + root[4:], "file://localhost" + root[7:]]),
            names,
        )
        valid = weighted((4, inside), (1, st.sampled_from([root, root + "/"])))
        invalid = st.one_of(
            st.sampled_from([*INVALID_URIS, root + "/?q", root + "/#f"]),
            st.builds(lambda t: "rel-" + t, texts),
        )
        return self.alt(valid, invalid, 8)

    def texts(self) -> st.SearchStrategy[Json]:
        return texts if self.clean else odd_texts

    def numbers(self, low: int, high: int) -> st.SearchStrategy[Json]:
        return self.alt(st.integers(low, high), integers, 3)

    def base64(self) -> st.SearchStrategy[Json]:
        return self.alt(_blobs.map(b64), st.one_of(st.sampled_from(INVALID_BASE64), odd_texts), 5)

    def process_ids(self, *, new: bool = False) -> st.SearchStrategy[Json]:
        """Ids from a small pool (so requests meet the processes others started); mostly ids
        fresh to the batch for clean starts (so they do not collide with older processes)."""
        if self.clean and new:
            return weighted(
                (3, st.sampled_from(FRESH_PROCESS_IDS)), (1, st.sampled_from(PROCESS_IDS))
            )
        return self.alt(st.sampled_from(PROCESS_IDS), texts)

    def handle_ids(self) -> st.SearchStrategy[Json]:
        return self.alt(st.sampled_from(HANDLE_IDS), texts)

    def argvs(self) -> st.SearchStrategy[Json]:
        valid = st.one_of(
            st.builds(
                lambda p, a: [p, *a],
                st.sampled_from(["true", "echo"]),
                st.lists(self.texts(), max_size=3),
            ),
            st.sampled_from([["cat"], ["cat", "-"]]),
            st.builds(lambda a: ["sleep", a], st.sampled_from(SAFE_SLEEP_ARGS)),
            st.builds(lambda s: [sys.executable, "-c", s], st.sampled_from(SAFE_SNIPPETS)),
        )
        missing = st.builds(lambda p, t: [p + t], st.sampled_from(MISSING_PROGRAMS), texts)
        invalid = st.one_of(missing, st.just([]), st.lists(junk, max_size=3))
        return self.alt(valid, invalid, 3)

    def envs(self) -> st.SearchStrategy[Json]:
        keys = st.one_of(st.builds(lambda t: "FUZZ_" + t, texts), st.just("PATH"))
        valid = st.dictionaries(keys, self.texts(), max_size=3)
        return self.fuzzy(valid.map(lambda env: {"PATH": CHILD_PATH, **env}))

    def env_policies(self) -> st.SearchStrategy[Json]:
        return struct(
            inherit=self.fuzzy(st.sampled_from(["core", "all", "none"])),
            ignoreDefaultExcludes=self.bools(),
            exclude=self.fuzzy(st.lists(texts, max_size=3)),
            set=self.envs(),
            includeOnly=self.fuzzy(
                st.lists(st.sampled_from(["PATH", "HOME", "FUZZ_*", "*"]), max_size=3)
            ),
        )

    def sandboxes(self) -> st.SearchStrategy[Json]:
        levels = ["disabled", "restricted-token", "elevated"]
        root_read = {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"}
        own_write = {"path": {"type": "path", "path": self.ctx.root_uri}, "access": "write"}
        profiles = [
            {"type": "disabled"},
            {"type": "external", "network": "restricted"},
            {"type": "managed", "network": "enabled", "file_system": {"type": "unrestricted"}},
            {
                "type": "managed",
                "network": "restricted",
                "file_system": {"type": "restricted", "entries": [root_read, own_write]},
            },
        ]
        bad_profiles = [{"type": "bogus"}, {"type": "managed", "network": 5}]
        context = struct(
            permissions=self.alt(st.sampled_from(profiles), st.sampled_from(bad_profiles), 3),
            windowsSandboxLevel=self.alt(st.sampled_from(levels), st.sampled_from(["mxc", "x"])),
            cwd=maybe(self.paths()),
        )
        return weighted((12, st.just(OMITTED)), (1, st.none()), (1, self.fuzzy(context, 3)))

    def http_urls(self) -> st.SearchStrategy[Json]:
        base = self.ctx.http_base
        odd = [
            *INVALID_URLS,
            base.replace("http:", "ftp:") + "/ok",
            base.replace("http:", "file:") + "/ok",
            base + ":1/",
            base + "/\0",
            base.upper() + "/ok",
            "\t" + base + "/o\nk ",
        ]
        local = st.sampled_from(LOCAL_PATHS).map(lambda path: base + path)
        return self.alt(local, st.one_of(st.sampled_from(odd), texts))

    def headers(self) -> st.SearchStrategy[Json]:
        names = self.alt(
            st.builds(lambda t: "x-fuzz-" + t, st.text("abcXYZ09-_", max_size=8)),
            st.one_of(st.sampled_from(["", "bad name", "x:y", "ünï", "x\r\ny"]), texts),
        )
        header = struct(
            name=names,
            value=self.alt(
                st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
                st.one_of(odd_texts, st.just("a\r\nb")),
            ),
            valueEnvVar=maybe(
                self.alt(
                    st.sampled_from(["PATH", "HOME"]),
                    st.sampled_from(["EXECSERVER_FUZZ_MISSING", "", "A=B"]),
                    2,
                )
            ),
        )
        return st.lists(header, max_size=3)

    def table(self) -> dict[str, st.SearchStrategy[Json]]:
        """Params of every client method."""
        paths = self.paths()
        sandbox = self.sandboxes()
        small = self.numbers(0, 5000)
        bools = self.bools
        unit = self.alt(st.sampled_from([{}, None]), junk, 3)
        return {
            methods.INITIALIZE: struct(
                clientName=self.texts(),
                resumeSessionId=maybe(
                    st.one_of(
                        texts,
                        st.sampled_from(
                            [*self.ctx.session_ids, "00000000-0000-0000-0000-000000000000"]
                        ),
                    )
                ),
            ),
            methods.ENVIRONMENT_INFO: unit,
            methods.ENVIRONMENT_STATUS: unit,
            methods.ENVIRONMENT_CONFIG_READ: struct(
                cwd=paths,
                configPaths=st.lists(st.lists(texts, max_size=2), max_size=2),
                requirementsPaths=st.lists(st.lists(texts, max_size=2), max_size=2),
            ),
            methods.CAPABILITIES_DISCOVER_V2: struct(cwd=paths),
            methods.CAPABILITY_ROOTS_DISCOVER_V1: struct(
                roots=st.lists(struct(id=texts, path=paths), max_size=2)
            ),
            methods.PROCESS_START: struct(
                processId=self.process_ids(new=True),
                argv=self.argvs(),
                cwd=self.alt(st.just(self.ctx.root_uri), paths, 4),
                env=self.envs(),
                tty=bools(),
                pipeStdin=defaulted(bools()),
                arg0=maybe(self.alt(st.just("fuzz-arg0"), st.builds(lambda t: "fuzz" + t, texts))),
                envPolicy=maybe(self.env_policies()),
                sandbox=sandbox,
                enforceManagedNetwork=defaulted(bools()),
            ),
            methods.PROCESS_READ: struct(
                processId=self.process_ids(),
                afterSeq=maybe(small),
                maxBytes=maybe(small),
                waitMs=maybe(
                    self.alt(st.sampled_from([0, 0, 0, 0, 1, 20, 100, MAX_WAIT_MS]), integers, 8)
                ),
            ),
            methods.PROCESS_WRITE: struct(
                processId=self.process_ids(),
                chunk=self.base64(),
                writeId=self.alt(st.sampled_from(["w0", "w1"]), st.one_of(st.just(""), texts)),
            ),
            methods.PROCESS_SIGNAL: struct(
                processId=self.process_ids(), signal=self.fuzzy(st.just("interrupt"), 4)
            ),
            methods.PROCESS_TERMINATE: struct(processId=self.process_ids()),
            methods.PROCESS_CLOSE_STDIN: struct(processId=self.process_ids()),
            methods.FS_READ_FILE: struct(
                path=paths, sandbox=sandbox, followSymlinks=maybe(bools())
            ),
            methods.FS_WRITE_FILE: struct(
                path=paths, dataBase64=self.base64(), sandbox=sandbox, followSymlinks=maybe(bools())
            ),
            methods.FS_CREATE_DIRECTORY: struct(
                path=paths, recursive=maybe(bools()), sandbox=sandbox, followSymlinks=maybe(bools())
            ),
            methods.FS_GET_METADATA: struct(
                path=paths, sandbox=sandbox, followSymlinks=maybe(bools())
            ),
            methods.FS_CANONICALIZE: struct(path=paths, sandbox=sandbox),
            methods.FS_READ_DIRECTORY: struct(path=paths, sandbox=sandbox),
            methods.FS_WALK: struct(
                path=paths,
                options=self.fuzzy(
                    struct(
                        maxDepth=self.numbers(0, 64),
                        maxDirectories=self.numbers(1, 100),
                        maxEntries=self.numbers(1, 1000),
                        followDirectorySymlinks=bools(),
                        pruneHiddenDirectories=defaulted(bools()),
                    )
                ),
                sandbox=sandbox,
            ),
            methods.FS_REMOVE: struct(
                path=paths,
                recursive=maybe(bools()),
                force=maybe(bools()),
                sandbox=sandbox,
                followSymlinks=maybe(bools()),
            ),
            methods.FS_COPY: struct(
                sourcePath=paths, destinationPath=paths, recursive=bools(), sandbox=sandbox
            ),
            methods.FS_OPEN: struct(
                handleId=self.handle_ids(),
                path=paths,
                sandbox=sandbox,
                mode=defaulted(
                    self.alt(
                        st.sampled_from(["read", "replace"]),
                        st.one_of(st.sampled_from(["append", {"read": None}, {"x": 1}]), junk),
                    )
                ),
            ),
            methods.FS_READ_BLOCK: struct(
                handleId=self.handle_ids(),
                offset=self.numbers(0, 5000),
                len=self.alt(
                    st.one_of(st.integers(1, 5000), st.just(1 << 20)),
                    st.one_of(st.sampled_from([0, (1 << 20) + 1]), integers),
                    3,
                ),
            ),
            methods.FS_WRITE_BLOCK: struct(
                handleId=self.handle_ids(), offset=self.numbers(0, 5000), chunk=self.base64()
            ),
            methods.FS_CLOSE: struct(handleId=self.handle_ids()),
            methods.FS_WATCH_MISSING: struct(
                watchId=self.numbers(0, 10), missing=st.lists(paths, max_size=3)
            ),
            methods.HTTP_REQUEST: struct(
                method=self.alt(
                    st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
                    st.one_of(st.sampled_from(["", "G ET", "GET\r\n", "ü", "get", "BREW"]), texts),
                ),
                url=self.http_urls(),
                headers=defaulted(self.headers()),
                bodyBase64=maybe(self.base64()),
                timeoutMs=maybe(self.alt(st.sampled_from([0, 1, 50, 5000, U64_MAX]), integers)),
                redirectPolicy=defaulted(
                    self.alt(st.sampled_from(["follow", "stop"]), st.sampled_from(["bogus", 1]))
                ),
                requestId=self.alt(st.sampled_from(["r0", "r1"]), texts),
                streamResponse=defaulted(bools()),
            ),
        }


CLIENT_METHODS = (
    methods.INITIALIZE,
    methods.ENVIRONMENT_INFO,
    methods.ENVIRONMENT_STATUS,
    methods.ENVIRONMENT_CONFIG_READ,
    methods.CAPABILITIES_DISCOVER_V2,
    methods.CAPABILITY_ROOTS_DISCOVER_V1,
    methods.PROCESS_START,
    methods.PROCESS_READ,
    methods.PROCESS_WRITE,
    methods.PROCESS_SIGNAL,
    methods.PROCESS_TERMINATE,
    methods.PROCESS_CLOSE_STDIN,
    methods.FS_READ_FILE,
    methods.FS_WRITE_FILE,
    methods.FS_CREATE_DIRECTORY,
    methods.FS_GET_METADATA,
    methods.FS_CANONICALIZE,
    methods.FS_READ_DIRECTORY,
    methods.FS_WALK,
    methods.FS_REMOVE,
    methods.FS_COPY,
    methods.FS_OPEN,
    methods.FS_READ_BLOCK,
    methods.FS_WRITE_BLOCK,
    methods.FS_CLOSE,
    methods.FS_WATCH_MISSING,
    methods.HTTP_REQUEST,
)

# How often each method is picked, relative to the others (default 1): the ones with state.
METHOD_WEIGHTS = {
    methods.PROCESS_START: 4,
    methods.PROCESS_READ: 3,
    methods.PROCESS_WRITE: 2,
    methods.FS_WRITE_FILE: 2,
    methods.FS_OPEN: 2,
    methods.FS_READ_BLOCK: 2,
    methods.FS_WRITE_BLOCK: 2,
    methods.HTTP_REQUEST: 3,
}

UNKNOWN_METHODS = (
    "",
    "/",
    "fs/",
    "process/Start",
    "fs/readfile",
    "initialized",
    "process/output",
    "process/exited",
    "http/request/bodyDelta",
    "fs/missingChanged",
    "environment/info ",
    "exec",
)

# -- mutations -------------------------------------------------------------------------------------


@st.composite
def mutated(draw: Draw, valid: st.SearchStrategy[Json]) -> tuple[Json, bool]:
    """(params, present): the valid params, or one mutation of them."""
    params = draw(valid)
    kind = draw(
        st.sampled_from(
            ["valid"] * 14 + ["drop", "extra", "retype", "replace", "omit", "null", "positional"]
        )
    )
    if kind == "omit":
        return None, False
    if kind == "null":
        return None, True
    if kind == "replace":
        return draw(junk_or_long), True
    if not isinstance(params, dict) or kind == "valid":
        return params, True
    params = dict(params)
    if kind == "drop" and params:
        del params[draw(st.sampled_from(sorted(params)))]
    elif kind == "extra":
        key = draw(st.one_of(texts, st.sampled_from([*params, "sandbox", "jsonrpc"])))
        params[key] = draw(junk_or_long)
    elif kind == "retype" and params:
        params[draw(st.sampled_from(sorted(params)))] = draw(junk_or_long)
    elif kind == "positional":
        values: list[Json] = list(params.values())
        cut = draw(st.integers(0, len(values) + 2))
        return (values[:cut] if cut <= len(values) else values + [None] * (cut - len(values))), True
    return params, True


ENVELOPES = (
    "bad-id",
    "method-type",
    "bad-trace",
    "dup-key",
    "truncate",
    "trailing",
    "deep",
    "nan",
    "array",
)
_bad_ids: st.SearchStrategy[Json] = st.one_of(
    st.sampled_from([None, 1.5, True, [], {}, I64_MAX + 1, I64_MIN - 1, U64_MAX + 1, 2**128]),
    st.sampled_from([Verbatim("1e400"), Verbatim("1.0"), Verbatim("-0.0"), *LONE_SURROGATES]),
)


def _envelope_arg(kind: str) -> st.SearchStrategy[Json]:
    if kind == "bad-id":
        return _bad_ids
    if kind == "method-type":
        return st.one_of(st.none(), st.booleans(), st.integers(), st.just([]), st.just({}))
    if kind == "bad-trace":
        return st.sampled_from(
            ["garbage", 5, {"traceparent": 5}, {"tracestate": []}, ["a", "b", "c"], [1]]
        )
    if kind == "dup-key":
        return st.sampled_from(["id", "method", "params"])
    if kind == "truncate":
        return st.integers(1, 200)
    if kind == "trailing":
        return st.sampled_from([" x", "{}", ",", "]", ' {"id":1}', "\0"])
    if kind == "deep":
        return st.integers(130, 300)
    if kind == "nan":
        return st.sampled_from(
            ["NaN", "Infinity", "-Infinity", "01", "1.", ".5", "+1", "0x10", "tru"]
        )
    return st.none()


def leading_calls(ctx: Context) -> dict[str, st.SearchStrategy[Call]]:
    """Per client method, calls with clean params (the runner leads each batch with one, taking
    the methods in turn, so every method is covered whatever Hypothesis favours)."""
    clean = Params(ctx, clean=True).table()
    return {name: clean[name].map(partial(Call, name)) for name in CLIENT_METHODS}


def calls(ctx: Context) -> st.SearchStrategy[Call]:
    clean = Params(ctx, clean=True).table()
    fuzzy = Params(ctx, clean=False).table()
    per_method = [
        (
            METHOD_WEIGHTS.get(name, 1),
            st.tuples(
                st.just(name),
                weighted((1, clean[name].map(lambda p: (p, True))), (1, mutated(fuzzy[name]))),
            ),
        )
        for name in CLIENT_METHODS
    ]
    unknown = st.tuples(
        st.one_of(st.sampled_from(UNKNOWN_METHODS), texts, st.sampled_from(ESCAPED_STRINGS)),
        mutated(junk),
    )
    method_and_params = weighted(*per_method, (3, unknown))
    extras = st.lists(
        st.one_of(
            st.tuples(st.just("jsonrpc"), st.one_of(st.just("2.0"), junk)),
            st.tuples(
                st.just("trace"),
                st.sampled_from([None, {}, {"traceparent": "00-x"}, ["a"], [None, "b"], {"x": 1}]),
            ),
            st.tuples(texts.filter(lambda k: k not in ("id", "method", "params", "trace")), junk),
        ),
        max_size=2,
    )
    envelope = weighted((6, st.just("")), (1, st.sampled_from(ENVELOPES)))

    @st.composite
    def build(draw: Draw) -> Call:
        method, (params, present) = draw(method_and_params)
        kind = draw(envelope)
        surrogate = draw(st.sampled_from([False] * 15 + [True]))
        if surrogate:
            params = (
                {"fuzz": draw(st.sampled_from(LONE_SURROGATES))}
                if not isinstance(params, dict)
                else {**params, draw(st.sampled_from(LONE_SURROGATES)): 1}
            )
            present = True
        return Call(
            method=method,
            params=params,
            has_params=present,
            id_style=draw(st.sampled_from(ID_STYLES)),
            id_text=draw(texts),
            extras=tuple(draw(extras)),
            ascii_only=draw(st.booleans()),
            binary=draw(st.sampled_from([False, False, False, True])),
            id_last=draw(st.booleans()),
            envelope=kind,
            envelope_arg=draw(_envelope_arg(kind)) if kind else None,
        )

    return build()


def _not_a_message(data: str | bytes) -> str | bytes:
    """Garbage that happens to be a JSON object with `method`, `result` or `error` could be a
    request, a notification or a response: make sure it is not JSON at all."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return data
    if isinstance(value, dict) and value.keys() & {"method", "result", "error"}:
        return b"#" + data if isinstance(data, bytes) else "#" + data
    return data


raw_frames: st.SearchStrategy[Raw] = st.one_of(
    st.text(max_size=60).map(_not_a_message),
    st.binary(max_size=60).map(_not_a_message),
    st.sampled_from(
        [
            "",
            " ",
            "{",
            "}",
            "[]",
            "null",
            "1",
            '"x"',
            "{}",
            '{"foo":1}',
            '{"id":1}',
            "\ufeff{}",
            "{'id':1}",
        ]
    ).map(_not_a_message),
    junk.filter(lambda v: not isinstance(v, dict)).map(lambda v: _splice(json.dumps(v))[0]),
).map(Raw)


def frames(ctx: Context) -> st.SearchStrategy[Frame]:
    return weighted((8, calls(ctx)), (1, raw_frames))


def batches(ctx: Context, max_size: int = 8) -> st.SearchStrategy[list[Frame]]:
    return st.lists(frames(ctx), min_size=1, max_size=max_size)
