"""The relay service: environment registry (HTTP) and rendezvous (WebSocket) on one port.

Executors register an environment and dial out to the rendezvous; harnesses fetch a connect
bundle and connect through it; the relay forwards `RelayMessageFrame`s between them by
stream id without ever seeing plaintext (RELAY.md §2, §3, §5). Shared state sits behind
`RelayState` (`state.py`), implemented in memory by `MemoryRelayState`.
"""

from execserver.relay.service.access import AccessConfigError, AccessPolicy, Role, Scopes, TokenSet
from execserver.relay.service.app import RelayConfig, RelayServer
from execserver.relay.service.memory_state import MemoryRelayState
from execserver.relay.service.state import RelayState

__all__ = [
    "AccessConfigError",
    "AccessPolicy",
    "MemoryRelayState",
    "RelayConfig",
    "RelayServer",
    "RelayState",
    "Role",
    "Scopes",
    "TokenSet",
]
