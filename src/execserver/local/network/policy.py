"""What the managed proxy lets through: the domain lists, local/private address protection and
the mode, as codex 0.171's proxy decides them (facts from probing the reference, its README
and upstream's `network-proxy` crate; docs/protocol.md, Managed network).

Host names are normalised (trimmed, lower-cased, no trailing dot, brackets and a single `:port`
removed). Patterns: `example.com` matches that host, `*.example.com` its subdomains only,
`**.example.com` both, other `*`/`?`/`[...]` are globs over the whole name; `*` alone matches
everything (allowlist only). Decision order: an explicit deny wins; then, unless local binding
is allowed, loopback/private literals are refused unless allowlisted exactly; then the
allowlist (empty: nothing is allowed); then an allowlisted name is resolved and refused if the
lookup fails or any address is local/private.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import re
import socket
from dataclasses import dataclass

from execserver.protocol.network import RemoteNetworkProxyConfig

DENIED = "denied"
NOT_ALLOWED = "not_allowed"
NOT_ALLOWED_LOCAL = "not_allowed_local"
METHOD_NOT_ALLOWED = "method_not_allowed"
MITM_REQUIRED = "mitm_required"

LIMITED_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DNS_TIMEOUT_S = 2.0

_NON_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
    )
)


class PolicyConfigError(ValueError):
    """The proxy config cannot be enforced; `str()` is the reference's detail."""


def normalize_host(host: str) -> str:
    host = host.strip()
    if host.startswith("[") and "]" in host:
        return _normalize_name(host[1 : host.index("]")])
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return _normalize_name(host)


def _normalize_name(host: str) -> str:
    host = host.lower().rstrip(".")
    for delimiter in ("%25", "%"):  # a zone id stays, spelled with a bare `%`
        address, found, zone = host.partition(delimiter)
        if found and _ip(address) is not None:
            return f"{address}%{zone}"
    return host


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def is_non_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, private, link-local, unspecified, multicast and reserved ranges."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return is_non_public(mapped)
        return (
            address.is_loopback
            or address.is_unspecified
            or address.is_multicast
            or address in ipaddress.IPv6Network("fc00::/7")
            or address in ipaddress.IPv6Network("fe80::/10")
        )
    return any(address in net for net in _NON_PUBLIC_V4)


def is_local_literal(host: str) -> bool:
    """`localhost`, or a loopback/private/link-local/... address (a normalised host)."""
    if host == "localhost":
        return True
    address = _ip(host)
    return address is not None and is_non_public(address)


class DomainPatterns:
    """A compiled domain list."""

    def __init__(self, patterns: list[str], *, allow_everything: bool) -> None:
        self.exact: list[str] = []
        """Plain host entries (no wildcard): what may name a local address explicitly."""
        expressions = []
        for pattern in patterns:
            normalized = _normalize_pattern(pattern)
            if normalized == "*" and not allow_everything:
                raise PolicyConfigError(pattern)
            if not any(ch in normalized for ch in "*?["):
                self.exact.append(normalized)
            for candidate in _expand(normalized):
                expressions.append(fnmatch.translate(candidate))
        self._regex = re.compile("|".join(expressions)) if expressions else None

    def __bool__(self) -> bool:
        return self._regex is not None

    def matches(self, host: str) -> bool:
        return self._regex is not None and self._regex.match(host) is not None


def _normalize_pattern(pattern: str) -> str:
    pattern = pattern.strip()
    if pattern == "*":
        return pattern
    for prefix in ("**.", "*."):
        if pattern.startswith(prefix):
            return prefix + normalize_host(pattern[len(prefix) :])
    return normalize_host(pattern)


def _expand(pattern: str) -> list[str]:
    if pattern.startswith("**."):
        return [pattern[3:], "?*." + pattern[3:]]
    if pattern.startswith("*."):
        return ["?*." + pattern[2:]]
    return [pattern]


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    allow: DomainPatterns
    deny: DomainPatterns
    review: DomainPatterns
    limited: bool
    allow_local_binding: bool

    @classmethod
    def from_config(cls, config: RemoteNetworkProxyConfig) -> NetworkPolicy:
        """Raises `PolicyConfigError` with the reference's wording for lists it refuses."""
        domains = config.domains or {}
        allowed = [name for name, rule in domains.items() if rule == "allow"]
        denied = [name for name, rule in domains.items() if rule == "deny"]
        try:
            deny = DomainPatterns(denied, allow_everything=False)
        except PolicyConfigError as exc:
            raise PolicyConfigError(
                f"invalid value for network.denied_domains: {exc} (allowed exact hosts or scoped "
                "wildcards like *.example.com or **.example.com)"
            ) from None
        return cls(
            allow=DomainPatterns(allowed, allow_everything=True),
            deny=deny,
            review=DomainPatterns(config.review_domains, allow_everything=True),
            limited=config.mode == "limited",
            allow_local_binding=config.allow_local_binding,
        )

    def baseline(self, host: str) -> str | None:
        """The reason `host` is refused outright, or None when the lists let it through (a
        name may still be refused by `resolves_locally`). `host` is normalised."""
        if self.deny.matches(host):
            return DENIED
        if not self.allow_local_binding and is_local_literal(host):
            if host not in self.allow.exact:
                return NOT_ALLOWED_LOCAL
            return None  # an explicitly allowlisted local address
        if not self.allow.matches(host):
            return NOT_ALLOWED
        return None

    def needs_review(self, host: str) -> bool:
        return self.review.matches(host)

    def method_allowed(self, method: str) -> bool:
        return not self.limited or method in LIMITED_METHODS

    async def resolves_locally(self, host: str, port: int) -> bool:
        """Whether a name the lists allowed must still be refused as local/private: its
        lookup fails (the reference fails closed) or yields such an address."""
        if self.allow_local_binding or _ip(host) is not None or host == "localhost":
            return False
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(DNS_TIMEOUT_S):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError, UnicodeError):
            return True
        for info in infos:
            address = _ip(str(info[4][0]))
            if address is None or is_non_public(address):
                return True
        return False
