"""local/network/policy: the managed proxy's destination rules (host names, patterns, local and
private addresses, the decision order, the lists it refuses). What the reference answers for
the same rules end to end is compared in tests/wire/cases_network.py."""

from __future__ import annotations

import ipaddress

import pytest

from execserver.local.network.policy import (
    DENIED,
    NOT_ALLOWED,
    NOT_ALLOWED_LOCAL,
    NetworkPolicy,
    PolicyConfigError,
    is_non_public,
    normalize_host,
)
from execserver.local.network.relay import HttpProxy, UpstreamProxies
from execserver.protocol.network import RemoteNetworkProxyConfig
from execserver.protocol.params import decode_params
from tests.wire.cases_network import PROXY


def policy(domains: dict[str, str], *, local: bool = False, **members: object) -> NetworkPolicy:
    config = decode_params(
        {**PROXY, "allowLocalBinding": local, "domains": domains, **members},
        RemoteNetworkProxyConfig,
    )
    return NetworkPolicy.from_config(config)


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("Example.COM.", "example.com"),
        (" example.com ", "example.com"),
        ("example.com:8080", "example.com"),
        ("[::1]", "::1"),
        ("[::1]:443", "::1"),
        ("::1", "::1"),
        ("fe80::1%25lo0", "fe80::1%lo0"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_host_names_are_normalised(given: str, normal: str) -> None:
    assert normalize_host(given) == normal


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1", "100.64.0.1",
     "0.0.0.0", "224.0.0.1", "255.255.255.255", "198.18.0.1", "192.0.2.1", "::1", "::",
     "fc00::1", "fe80::1", "::ffff:10.0.0.1", "ff02::1"],
)  # fmt: skip
def test_non_public_addresses(address: str) -> None:
    assert is_non_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address: str) -> None:
    assert not is_non_public(ipaddress.ip_address(address))


def test_patterns_exact_subdomains_and_both() -> None:
    rules = policy({"exact.test": "allow", "*.sub.test": "allow", "**.both.test": "allow"})
    assert rules.baseline("exact.test") is None
    assert rules.baseline("a.exact.test") == NOT_ALLOWED
    assert rules.baseline("a.sub.test") is None
    assert rules.baseline("a.b.sub.test") is None
    assert rules.baseline("sub.test") == NOT_ALLOWED
    assert rules.baseline("both.test") is None
    assert rules.baseline("x.both.test") is None
    assert rules.baseline("notboth.test") == NOT_ALLOWED


def test_mid_label_globs_are_anchored() -> None:
    rules = policy({"region*.v2.tunnel.test": "allow"})
    assert rules.baseline("region1.v2.tunnel.test") is None
    assert rules.baseline("region.v2.tunnel.test") is None
    assert rules.baseline("xregion1.v2.tunnel.test") == NOT_ALLOWED


def test_empty_allowlist_allows_nothing_and_star_everything() -> None:
    assert policy({}).baseline("example.com") == NOT_ALLOWED
    assert policy({"*": "allow"}).baseline("example.com") is None


def test_deny_wins_over_allow() -> None:
    rules = policy({"**.x.test": "allow", "bad.x.test": "deny", "none.x.test": "none"})
    assert rules.baseline("bad.x.test") == DENIED
    assert rules.baseline("good.x.test") is None
    assert rules.baseline("none.x.test") is None  # `none` is neither list


def test_local_literals_need_an_exact_allow_entry() -> None:
    rules = policy({"*": "allow", "10.0.0.1": "allow", "localhost": "allow"})
    assert rules.baseline("127.0.0.1") == NOT_ALLOWED_LOCAL  # `*` is not an explicit entry
    assert rules.baseline("10.0.0.1") is None
    assert rules.baseline("10.0.0.2") == NOT_ALLOWED_LOCAL
    assert rules.baseline("localhost") is None
    assert rules.baseline("8.8.8.8") is None


def test_with_local_binding_local_addresses_are_plain_allowlist_matters() -> None:
    rules = policy({"example.com": "allow"}, local=True)
    assert rules.baseline("127.0.0.1") == NOT_ALLOWED
    assert policy({"10.0.0.1": "allow"}, local=True).baseline("10.0.0.1") is None


async def test_names_that_do_not_resolve_count_as_local() -> None:
    rules = policy({"**.invalid": "allow"})
    assert await rules.resolves_locally("nothing.invalid", 80)
    assert not await rules.resolves_locally("8.8.8.8", 80)  # literals were judged already
    assert not await policy({}, local=True).resolves_locally("nothing.invalid", 80)


def test_a_global_wildcard_cannot_be_denied() -> None:
    with pytest.raises(PolicyConfigError) as raised:
        policy({"*": "deny"})
    assert str(raised.value) == (
        "invalid value for network.denied_domains: * (allowed exact hosts or scoped wildcards "
        "like *.example.com or **.example.com)"
    )


def test_review_patterns_and_methods() -> None:
    rules = policy({}, reviewDomains=["*.review.test"], mode="limited")
    assert rules.needs_review("a.review.test")
    assert not rules.needs_review("review.test")
    assert rules.method_allowed("GET") and rules.method_allowed("HEAD")
    assert rules.method_allowed("OPTIONS") and not rules.method_allowed("POST")
    assert policy({}).method_allowed("DELETE")


def test_upstream_proxies_from_the_executor_environment() -> None:
    env = {
        "http_proxy": "http://proxy.corp:3128",
        "HTTPS_PROXY": "corp-tls:8080",
        "NO_PROXY": "internal.corp,.svc,172.20.0.0/16",
    }
    upstream = UpstreamProxies(env)
    assert upstream.for_target("example.com", tls=False) == HttpProxy("proxy.corp", 3128)
    assert upstream.for_target("example.com", tls=True) == HttpProxy("corp-tls", 8080)
    for direct in ("internal.corp", "a.internal.corp", "x.svc", "172.20.1.2", "localhost"):
        assert upstream.for_target(direct, tls=True) is None, direct
    for local in ("127.0.0.1", "10.1.2.3", "::1", "192.168.0.9"):
        assert upstream.for_target(local, tls=False) is None, local
    assert upstream.for_target("8.8.8.8", tls=False) == HttpProxy("proxy.corp", 3128)


def test_upstream_proxies_http_only_and_all_proxy() -> None:
    assert UpstreamProxies({"HTTPS_PROXY": "socks5://s:1"}).for_target("a.com", tls=True) is None
    everything = UpstreamProxies({"ALL_PROXY": "http://all:1"})
    assert everything.for_target("a.com", tls=True) == HttpProxy("all", 1)
    assert everything.for_target("a.com", tls=False) == HttpProxy("all", 1)
    assert (
        UpstreamProxies({"NO_PROXY": "*", "HTTP_PROXY": "p:1"}).for_target("a", tls=False) is None
    )
    assert UpstreamProxies({}).for_target("a.com", tls=False) is None
