"""Managed-network members of `process/start`: `managedNetwork` (the sandbox side of a managed
network) and `networkProxy` (an executor-local proxy to launch for the process).

Decoded with the reference's structure and serde wording, so malformed input gets its exact
errors. Pure data: what the executor does with them is decided in `local/`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from execserver.compat.serde import unexpected, unknown_field, unknown_variant
from execserver.protocol.base import U16, U64, UnitEnum, WireStruct, check_u64, decodable


class NetworkMode(UnitEnum):
    variants = ("limited", "full")


class DomainPermission(UnitEnum):
    variants = ("none", "allow", "deny")


_SOCKET_PERMISSIONS = ("allow", "deny")
_PROVIDER_FIELDS = (
    "env",
    "patterns",
    "url_prefixes",
    "url_prefix_from_env",
    "auth",
    "header",
    "prefix",
)
_PROVIDER_SEQUENCES = frozenset({"env", "patterns", "url_prefixes", "auth"})


@decodable
class UnixSocketPermissions(dict[str, str]):
    """`proxy.unixSockets`: socket path -> `allow` | `deny` (read by the reference as buffered
    content, hence the value wording of its errors)."""

    @classmethod
    def decode(cls, obj: Any) -> UnixSocketPermissions:
        if not isinstance(obj, dict):
            raise ValueError(
                f"invalid type: {unexpected(obj)}, expected struct NetworkUnixSocketPermissions"
            )
        result = cls()
        for path, given in obj.items():
            value = given
            if isinstance(given, dict) and len(given) == 1 and None in given.values():
                value = next(iter(given))  # the map form of a unit variant
            if not isinstance(value, str):
                found = unexpected(value, content=True)
                raise ValueError(f"invalid type: {found}, expected string or map")
            if value not in _SOCKET_PERMISSIONS:
                raise ValueError(unknown_variant(value, _SOCKET_PERMISSIONS))
            result[path] = value
        return result


_AUTH_METHODS = ("bearer", "token", "basic", "header")


def _auth_methods(methods: list[Any]) -> list[str]:
    """`auth`: unit variants, by name (or in serde's map form, `{"bearer": null}`)."""
    result = []
    for given in methods:
        method = given
        if isinstance(given, dict) and len(given) == 1 and None in given.values():
            method = next(iter(given))
        if not isinstance(method, str):
            found = unexpected(method, content=True)
            raise ValueError(f"invalid type: {found}, expected string or map")
        if method not in _AUTH_METHODS:
            raise ValueError(unknown_variant(method, _AUTH_METHODS))
        result.append(method)
    return result


@decodable
class CredentialProviders(dict[str, dict[str, Any]]):
    """`proxy.credentialProviders`: name -> provider config (snake_case members, unknown
    members refused, values worded as buffered content)."""

    @classmethod
    def decode(cls, obj: Any) -> CredentialProviders:
        if not isinstance(obj, dict):
            raise ValueError(f"invalid type: {unexpected(obj)}, expected a map")
        result = cls()
        for name, given in obj.items():
            if not isinstance(given, dict):
                found = unexpected(given, content=True)
                raise ValueError(f"invalid type: {found}, expected struct CredentialProviderConfig")
            config = dict(given)
            for key, value in given.items():
                if key not in _PROVIDER_FIELDS:
                    raise ValueError(unknown_field(key, _PROVIDER_FIELDS))
                if value is None:
                    continue
                if key in _PROVIDER_SEQUENCES:
                    if not isinstance(value, list):
                        found = unexpected(value, content=True)
                        raise ValueError(f"invalid type: {found}, expected a sequence")
                    if key == "auth":
                        config["auth"] = _auth_methods(value)
                elif not isinstance(value, str):
                    found = unexpected(value, content=True)
                    raise ValueError(f"invalid type: {found}, expected a string")
            result[name] = config
        return result


class RemoteNetworkProxyConfig(WireStruct):
    """The proxy to launch: what it lets through and how programs reach it."""

    rust_name = "RemoteNetworkProxyConfig"

    enabled: bool
    enable_socks5: bool
    enable_socks5_udp: bool
    allow_upstream_proxy: bool
    dangerously_allow_all_unix_sockets: bool
    mode: NetworkMode
    allow_local_binding: bool
    domains: dict[str, DomainPermission] | None = None
    unix_sockets: UnixSocketPermissions | None = None
    review_domains: list[str] = msgspec.field(default_factory=list)
    transparent_tcp: bool = False
    credential_masking: bool = False
    credential_providers: CredentialProviders | None = None


class NetworkProxyAuditMetadata(WireStruct):
    rust_name = "NetworkProxyAuditMetadata"
    rust_len = 9
    rust_defaults: ClassVar[frozenset[str]] = frozenset(
        {
            "conversationId",
            "appVersion",
            "userAccountId",
            "authMode",
            "originator",
            "userEmail",
            "terminalType",
            "model",
            "slug",
        }
    )

    conversation_id: str | None = None
    app_version: str | None = None
    user_account_id: str | None = None
    auth_mode: str | None = None
    originator: str | None = None
    user_email: str | None = None
    terminal_type: str | None = None
    model: str | None = None
    slug: str | None = None


class RemoteNetworkProxyLaunchConfig(WireStruct):
    """`process/start.networkProxy`."""

    rust_name = "RemoteNetworkProxyLaunchConfig"
    rust_len = 5
    rust_defaults: ClassVar[frozenset[str]] = frozenset(
        {"auditMetadata", "environmentId", "executionId", "policyDecisionTimeoutMs"}
    )

    proxy: RemoteNetworkProxyConfig
    audit_metadata: NetworkProxyAuditMetadata = msgspec.field(
        default_factory=NetworkProxyAuditMetadata
    )
    environment_id: str | None = None
    execution_id: str | None = None
    policy_decision_timeout_ms: U64 | None = None

    def __post_init__(self) -> None:
        check_u64(self.policy_decision_timeout_ms)


class ManagedNetworkSandboxContext(WireStruct):
    """`process/start.managedNetwork`."""

    rust_name = "ManagedNetworkSandboxContext"
    rust_len = 3
    rust_defaults: ClassVar[frozenset[str]] = frozenset(
        {"transparentTcp", "loopbackPorts", "allowLocalBinding"}
    )

    transparent_tcp: bool = False
    loopback_ports: list[U16] = msgspec.field(default_factory=list)
    allow_local_binding: bool = False


# -- what the executor tells and asks the client about a proxied process's connections ---------

NetworkProtocol = str
"""`http`, `https_connect`, `socks5_tcp` (the reference's snake_case names)."""


class NetworkPolicyDecisionNotification(WireStruct, omit_defaults=True, kw_only=True):
    """`network/policyDecision`: one audited decision (`method` only for HTTP and CONNECT)."""

    process_id: str
    timestamp: str
    """UTC, RFC 3339 with milliseconds and `Z`."""
    scope: str
    """`domain` (who may be reached) or `non_domain` (the mode guard)."""
    decision: str
    """`allow` or `deny`."""
    source: str
    """`baseline_policy`, `decider` or `mode_guard`."""
    reason: str
    protocol: NetworkProtocol
    host: str
    port: int
    method: str | None = None
    client: str
    """The proxied program's address, `IP:PORT`."""
    policy_override: bool


class NetworkPolicyRequestTarget(WireStruct):
    protocol: NetworkProtocol
    host: str
    port: int


class NetworkPolicyRequestParams(WireStruct):
    """`network/policyRequest` (server -> client request): may this connection go ahead?"""

    process_id: str
    request: NetworkPolicyRequestTarget


class BlockedResponseBody(WireStruct, kw_only=True):
    """The JSON body of the proxy's `403` to a blocked plain-HTTP request (member order as the
    reference writes it)."""

    status: str = "blocked"
    host: str
    reason: str
    decision: str = "deny"
    source: str
    protocol: NetworkProtocol
    port: int
    message: str
