"""The relay service: environment registry (HTTP) and rendezvous (WebSocket) on one port.

Executors register an environment and dial out to the rendezvous; harnesses fetch a connect
bundle and connect through it; the relay forwards `RelayMessageFrame`s between them by
stream id without ever seeing plaintext (RELAY.md §2, §3, §5). Shared state sits behind
`RelayState` (`state.py`), implemented in memory by `MemoryRelayState`.

Import the parts from their modules (`app`, `memory_state`, `state`, `access`): the package
itself imports nothing, so the command line can describe `relay` without loading the web stack.
"""
