"""The credential broker of one managed proxy (`proxy.credentialMasking`): which secrets in a
child's environment are replaced by dummies, and where the proxy swaps the real value back.

Built-in providers (codex 0.171's): `GH_TOKEN`/`GITHUB_TOKEN` bound to github.com,
api.github.com and `*.ghe.com`; `GH_ENTERPRISE_TOKEN`/`GITHUB_ENTERPRISE_TOKEN` bound to the
host `GH_HOST` names (unless that is a GitHub cloud host); `OPENAI_API_KEY` bound to
api.openai.com. A dummy is shaped as the reference's: the value's known prefix (`ghp_`,
`github_pat_`, ..., `sk-`, `sk-proj-`), `masked`, then random letters and digits up to the real
value's length (at least 40 for GitHub, 51 for OpenAI); the same secret gets the same dummy in
every process of this executor. The child also gets `CODEX_NETWORK_PROXY_CREDENTIAL_BROKER_ACTIVE=1`
and `CODEX_NETWORK_PROXY_BROKERED_CREDENTIALS` (which variables hold dummies). The real value goes
back into `Authorization` (any scheme; Basic credentials are decoded and re-encoded) only when the
header carries that credential's dummy.

Custom providers (`proxy.credentialProviders`, `credentialMaskingCustomProviders`) name the
variables (`env`), the shapes a value must have in full (`patterns`, regular expressions in
the RE2 dialect the reference's `regex` crate shares), the HTTPS URL prefixes the value may be
sent to (`url_prefixes`, and one more from the variable `url_prefix_from_env` names), how it is
sent (`auth`: `bearer` (default), `token`, `basic`, `header` with `header` and optional
`prefix`). Their dummies are random strings matching the pattern the real value matched.

Injection happens only inside TLS the proxy intercepts (`mitm.py`): plain HTTP and other hosts
see the dummy as the child sent it. Real values are never logged (`Credential`'s repr hides
them).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import re
import re._constants as c  # type: ignore[import-not-found]  # the stdlib's own regex parser
import re._parser as sre_parse  # type: ignore[import-not-found]
import secrets
import string
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import re2  # type: ignore[import-untyped]

from execserver.local.network.policy import normalize_host

GITHUB_TOKEN_PREFIXES = ("github_pat_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_")
GITHUB_TOKEN_MIN_LENGTH = 40
OPENAI_API_KEY_MIN_LENGTH = 51
GITHUB_CLOUD_HOSTS = frozenset({"github.com", "api.github.com"})
OPENAI_API_HOST = "api.openai.com"
BUILTIN_ENV_KEYS = frozenset(
    {
        "GH_HOST",
        "GH_TOKEN",
        "GITHUB_TOKEN",
        "GH_ENTERPRISE_TOKEN",
        "GITHUB_ENTERPRISE_TOKEN",
        "OPENAI_API_KEY",
    }
)
AUTH_METHODS = ("bearer", "token", "basic", "header")
BROKER_ACTIVE_ENV = "CODEX_NETWORK_PROXY_CREDENTIAL_BROKER_ACTIVE"
BROKERED_ENV = "CODEX_NETWORK_PROXY_BROKERED_CREDENTIALS"
ALIAS = "@alias:"
DUMMY_MARK = "masked"
MAX_REMEMBERED_DUMMIES = 1024
_ALPHANUMERIC = string.ascii_letters + string.digits
MAX_PATTERN_BYTES = 2048
MAX_REPEAT = 64
DUMMY_ATTEMPTS = 64
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_random = random.SystemRandom()
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is the client's error, answered, not logged


class ProviderConfigError(ValueError):
    """A custom provider the broker cannot use (the message names it)."""


# -- where a credential may go --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Destination:
    """An HTTPS URL prefix: host, port and a path prefix matched at segment boundaries."""

    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Raises `ValueError` for anything but an absolute `https://` URL without
        credentials, query or fragment."""
        parsed = urllib.parse.urlsplit(text.strip())
        if parsed.scheme.lower() != "https" or not parsed.hostname:
            raise ValueError("not an https URL")
        if parsed.username is not None or parsed.query or parsed.fragment or "*" in text:
            raise ValueError("credentials, query, fragment or wildcard in a URL prefix")
        port = parsed.port or 443
        return cls(normalize_host(parsed.hostname), port, parsed.path.rstrip("/"))

    def matches(self, host: str, port: int, path: str | None) -> bool:
        if host != self.host or port != self.port:
            return False
        if path is None or not self.path:
            return True
        target = urllib.parse.urlsplit(path).path
        return target == self.path or target.startswith(self.path + "/")


@dataclass(frozen=True, slots=True)
class Binding:
    """The destinations a credential is bound to."""

    github_cloud: bool = False
    hosts: frozenset[str] = frozenset()
    destinations: tuple[Destination, ...] = ()

    def matches(self, host: str, port: int, path: str | None = None) -> bool:
        """Whether a request to `host:port` (`path`: its target; None: any, which decides
        whether a tunnel is intercepted) may carry the credential."""
        if self.github_cloud and (host in GITHUB_CLOUD_HOSTS or host.endswith(".ghe.com")):
            return True
        if host in self.hosts:
            return True
        return any(d.matches(host, port, path) for d in self.destinations)


# -- how a credential is sent ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a credential travels in a request: `Authorization` (`schemes`, any if empty) and/or
    a named header with a prefix."""

    schemes: frozenset[str] = frozenset()
    header: str | None = None
    prefix: str = ""
    authorization: bool = True

    def swap(self, headers: list[tuple[bytes, bytes]], dummy: str, real: str) -> bool:
        """Replace `dummy` by `real` where this placement allows; whether anything changed."""
        changed = False
        for index, (name, value) in enumerate(headers):
            text = value.decode("latin-1")
            replaced: str | None = None
            if self.authorization and name == b"authorization":
                replaced = _swap_authorization(text, dummy, real, self.schemes)
            elif (
                self.header is not None
                and name == self.header.lower().encode()
                and text == self.prefix + dummy
            ):
                replaced = self.prefix + real
            if replaced is not None and replaced != text:
                headers[index] = (name, replaced.encode("latin-1"))
                changed = True
        return changed


def _swap_authorization(value: str, dummy: str, real: str, schemes: frozenset[str]) -> str | None:
    scheme, _, rest = value.partition(" ")
    if schemes and scheme.lower() not in schemes:
        return None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode("latin-1")
        except (binascii.Error, ValueError):
            return None
        if dummy not in decoded:
            return None
        swapped = decoded.replace(dummy, real).encode("latin-1")
        return f"{scheme} {base64.b64encode(swapped).decode()}"
    if dummy not in rest:
        return None
    return f"{scheme} {rest.replace(dummy, real)}"


# -- dummies ---------------------------------------------------------------------------------


def masked_dummy(real: str, prefix: str, minimum_length: int) -> str:
    """The reference's dummy for a built-in secret: `prefix`, `masked`, then random letters
    and digits up to the real value's length (at least `minimum_length`)."""
    head = prefix + DUMMY_MARK
    length = max(len(real), minimum_length, len(head) + 16)
    return head + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length - len(head)))


def github_prefix(value: str) -> str:
    return next((p for p in GITHUB_TOKEN_PREFIXES if value.startswith(p)), "ghp_")


def openai_prefix(value: str) -> str:
    """`sk-` and the key's kind segment (`sk-proj-`, `sk-svcacct-`) when there is one."""
    if not value.startswith("sk-"):
        return "sk-"
    kind, found, _ = value[3:].partition("-")
    return f"sk-{kind}-" if found and kind.isalnum() else "sk-"


def github_dummy(real: str) -> str:
    return masked_dummy(real, github_prefix(real), GITHUB_TOKEN_MIN_LENGTH)


def openai_dummy(real: str) -> str:
    return masked_dummy(real, openai_prefix(real), OPENAI_API_KEY_MIN_LENGTH)


def _generate(pattern: str) -> str:
    """A random string the regular expression `pattern` can match (lookarounds and anchors
    emit nothing; the caller checks the result)."""
    parsed = sre_parse.parse(pattern)
    return "".join(_emit(parsed))


def _emit(items: Iterable[tuple[Any, Any]]) -> list[str]:
    out: list[str] = []
    for op, arg in items:
        if op is c.LITERAL:
            out.append(chr(arg))
        elif op is c.NOT_LITERAL:
            out.append(_pick(lambda ch, a=arg: ord(ch) != a))
        elif op is c.ANY:
            out.append(_pick(lambda ch: True))
        elif op is c.IN:
            out.append(_pick(lambda ch, a=arg: _in_class(ch, a)))
        elif op is c.BRANCH:
            out.extend(_emit(_random.choice(arg[1])))
        elif op is c.SUBPATTERN:
            out.extend(_emit(arg[-1]))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            low, high, sub = arg
            high = min(high if high is not c.MAXREPEAT else low + 16, MAX_REPEAT)
            for _ in range(_random.randint(min(low, high), max(low, high))):
                out.extend(_emit(sub))
        elif op is c.ATOMIC_GROUP:
            out.extend(_emit(arg))
        # AT (anchors), ASSERT, ASSERT_NOT: nothing to emit.
    return out


_PRINTABLE = string.ascii_letters + string.digits + "-_.~+/="


def _pick(accept: Any) -> str:
    candidates = [ch for ch in _PRINTABLE if accept(ch)]
    if not candidates:
        candidates = [chr(code) for code in range(0x21, 0x7F) if accept(chr(code))]
    if not candidates:
        raise ValueError("no printable character matches")
    return _random.choice(candidates)


def _in_class(ch: str, items: Sequence[tuple[Any, Any]]) -> bool:
    negate = False
    hit = False
    for op, arg in items:
        if op is c.NEGATE:
            negate = True
        elif op is c.LITERAL:
            hit = hit or ord(ch) == arg
        elif op is c.RANGE:
            hit = hit or arg[0] <= ord(ch) <= arg[1]
        elif op is c.CATEGORY:
            hit = hit or bool(re.fullmatch(_CATEGORIES.get(str(arg), "(?!)"), ch))
    return hit != negate


_CATEGORIES = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
}


# -- providers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomProvider:
    """A checked `credentialProviders` entry."""

    name: str
    env: tuple[str, ...]
    patterns: tuple[Any, ...]
    """Compiled (RE2) patterns, matched against whole values."""
    sources: tuple[str, ...]
    """The same patterns as given (to generate dummies from)."""
    url_prefixes: tuple[Destination, ...]
    url_prefix_from_env: str | None
    placement: Placement

    @classmethod
    def compile(cls, name: str, config: Mapping[str, Any]) -> CustomProvider:
        """Raises `ProviderConfigError` with the reference broker's wording."""
        env = list(config.get("env") or [])
        patterns = list(config.get("patterns") or [])
        prefixes = list(config.get("url_prefixes") or [])
        from_env = config.get("url_prefix_from_env")
        auth = list(config.get("auth") or []) or ["bearer"]
        header = config.get("header")
        prefix = config.get("prefix")
        if not name:
            raise ProviderConfigError("credential provider name must not be empty")
        if not env:
            raise ProviderConfigError(f"credential provider `{name}` has no environment keys")
        if not patterns:
            raise ProviderConfigError(f"credential provider `{name}` has no credential patterns")
        if not prefixes and from_env is None:
            raise ProviderConfigError(
                f"credential provider `{name}` has no destination URL prefixes"
            )
        if not all(isinstance(k, str) and _ENV_KEY.match(k) for k in env):
            raise ProviderConfigError(
                f"credential provider `{name}` has an invalid environment key"
            )
        if any(k in BUILTIN_ENV_KEYS for k in env):
            raise ProviderConfigError(
                f"credential provider `{name}` overlaps a built-in credential source"
            )
        if from_env is not None and (not _ENV_KEY.match(from_env) or from_env in env):
            raise ProviderConfigError(
                f"credential provider `{name}` has an invalid host environment key"
            )
        try:
            destinations = tuple(Destination.parse(str(p)) for p in prefixes)
        except ValueError:
            raise ProviderConfigError(
                f"invalid destination for credential provider `{name}`"
            ) from None
        if header is not None and not _HEADER_NAME.match(header):
            raise ProviderConfigError(f"invalid header for credential provider `{name}`")
        if ("header" in auth) != (header is not None):
            raise ProviderConfigError(
                f"credential provider `{name}` requires a header name exactly when using header "
                "authentication"
            )
        if prefix is not None and header is None:
            raise ProviderConfigError(
                f"credential provider `{name}` requires header authentication to use a header "
                "prefix"
            )
        compiled = []
        for pattern in patterns:
            try:
                if not isinstance(pattern, str) or len(pattern.encode()) > MAX_PATTERN_BYTES:
                    raise ValueError("too long")
                regex = re2.compile(pattern, _RE2_OPTIONS)
                if regex.fullmatch("") is not None:
                    raise ValueError("matches an empty value")
                if not any(_fits(regex, _safe_generate(pattern)) for _ in range(DUMMY_ATTEMPTS)):
                    raise ValueError("cannot generate a matching dummy")
            except Exception:
                raise ProviderConfigError(
                    f"invalid credential pattern for provider `{name}`"
                ) from None
            compiled.append(regex)
        schemes = frozenset(m for m in auth if m in ("bearer", "token", "basic"))
        placement = Placement(
            schemes=schemes,
            header=header,
            prefix=prefix or "",
            authorization=bool(schemes),
        )
        return cls(
            name,
            tuple(env),
            tuple(compiled),
            tuple(patterns),
            destinations,
            from_env,
            placement,
        )

    def binding(self, env: Mapping[str, str]) -> Binding | None:
        destinations = list(self.url_prefixes)
        if self.url_prefix_from_env is not None:
            with_env = env.get(self.url_prefix_from_env)
            if with_env:
                try:
                    extra = Destination.parse(with_env)
                except ValueError:
                    extra = None
                if extra is not None and extra not in destinations:
                    destinations.append(extra)
        return Binding(destinations=tuple(destinations)) if destinations else None

    def dummy(self, real: str) -> str | None:
        for regex, source in zip(self.patterns, self.sources, strict=True):
            if regex.fullmatch(real) is None:
                continue
            for _ in range(DUMMY_ATTEMPTS):
                candidate = _safe_generate(source)
                if _fits(regex, candidate) and candidate != real and real not in candidate:
                    return candidate
            return None
        return None


def _safe_generate(pattern: str) -> str:
    try:
        return _generate(pattern)
    except Exception:
        return ""


def _fits(regex: Any, candidate: str) -> bool:
    return bool(candidate) and "\0" not in candidate and regex.fullmatch(candidate) is not None


def compile_providers(
    configs: Mapping[str, Mapping[str, Any]] | None,
) -> tuple[CustomProvider, ...]:
    """Every custom provider, checked (in name order); raises `ProviderConfigError`."""
    return tuple(CustomProvider.compile(n, c) for n, c in sorted((configs or {}).items()))


# -- the broker ------------------------------------------------------------------------------


@dataclass(slots=True)
class Credential:
    """One masked secret: the variable, the values, where it may go and how it travels."""

    env_var: str
    real: str = field(repr=False)
    dummy: str = field(repr=False)
    binding: Binding
    placement: Placement


_dummies: OrderedDict[bytes, str] = OrderedDict()
"""Dummies handed out by this executor, by a hash of (variable, real value): the same secret
gets the same dummy in every process, as the reference's broker gives it (no real value is
kept here)."""


def _remembered(name: str, real: str, make_dummy: Callable[[str], str | None]) -> str | None:
    key = hashlib.sha256(f"{name}\0{real}".encode()).digest()
    dummy = _dummies.get(key)
    if dummy is None:
        dummy = make_dummy(real)
        if dummy is None:
            return None
        _dummies[key] = dummy
        while len(_dummies) > MAX_REMEMBERED_DUMMIES:
            _dummies.popitem(last=False)
    _dummies.move_to_end(key)
    return dummy


def _usable(value: str) -> bool:
    """A value that can travel in a header (printable ASCII, no spaces)."""
    return bool(value) and value.isascii() and value.isprintable() and " " not in value


class CredentialBroker:
    """The credentials masked for one process."""

    def __init__(self, providers: Sequence[CustomProvider] = ()) -> None:
        self._providers = tuple(providers)
        self.credentials: list[Credential] = []

    def virtualize(self, env: dict[str, str]) -> None:
        """Replace every brokerable secret in `env` (in place) by its dummy and remember it."""
        authorization = Placement()
        cloud = Binding(github_cloud=True)
        gh_host = normalize_host(env.get("GH_HOST", ""))
        enterprise = (
            Binding(hosts=frozenset({gh_host}))
            if gh_host and gh_host not in GITHUB_CLOUD_HOSTS and not gh_host.endswith(".ghe.com")
            else None
        )
        for name in ("GH_TOKEN", "GITHUB_TOKEN"):
            self._mask(env, name, cloud, authorization, github_dummy)
        if enterprise is not None:
            for name in ("GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN"):
                self._mask(env, name, enterprise, authorization, github_dummy)
        openai = Binding(hosts=frozenset({OPENAI_API_HOST}))
        self._mask(env, "OPENAI_API_KEY", openai, authorization, openai_dummy)
        for provider in self._providers:
            binding = provider.binding(env)
            if binding is None:
                continue
            for name in provider.env:
                self._mask(env, name, binding, provider.placement, provider.dummy)
        env[BROKER_ACTIVE_ENV] = "1"
        env[BROKERED_ENV] = self.marker(env)

    def marker(self, env: Mapping[str, str]) -> str:
        """`CODEX_NETWORK_PROXY_BROKERED_CREDENTIALS`: the variables of `env` that hold one of
        this broker's dummies, each also as `@alias:NAME`, as `[[name, dummy], ...]` sorted by
        name (the reference's marker, which nested launches read to recognise dummies)."""
        dummies = {c.dummy for c in self.credentials}
        held = [(name, value) for name, value in env.items() if value in dummies]
        entries = sorted([*held, *((f"{ALIAS}{name}", value) for name, value in held)])
        return json.dumps([list(entry) for entry in entries], separators=(",", ":"))

    def _mask(
        self,
        env: dict[str, str],
        name: str,
        binding: Binding,
        placement: Placement,
        make_dummy: Callable[[str], str | None],
    ) -> None:
        value = env.get(name, "").strip()
        if not _usable(value) or any(c.dummy == value for c in self.credentials):
            return
        existing = next(
            (c for c in self.credentials if c.real == value and c.binding == binding), None
        )
        dummy = existing.dummy if existing is not None else _remembered(name, value, make_dummy)
        if not dummy or dummy == value:
            return
        self.credentials.append(Credential(name, value, dummy, binding, placement))
        env[name] = dummy

    def mask_text(self, text: str) -> str:
        """`text` with every real value replaced by its dummy (for a captured shell state)."""
        for credential in sorted(self.credentials, key=lambda c: -len(c.real)):
            text = text.replace(credential.real, credential.dummy)
        return text

    def intercepts(self, host: str, port: int) -> bool:
        """Whether TLS to `host:port` must be intercepted (a credential may go there)."""
        host = normalize_host(host)
        return any(c.binding.matches(host, port) for c in self.credentials)

    def inject(self, host: str, port: int, target: str, headers: list[tuple[bytes, bytes]]) -> int:
        """Swap dummies for real values in `headers` (in place) where the request's URL is
        bound; how many credentials were swapped."""
        host = normalize_host(host)
        swapped = 0
        for credential in self.credentials:
            if credential.binding.matches(host, port, target) and credential.placement.swap(
                headers, credential.dummy, credential.real
            ):
                swapped += 1
        return swapped
