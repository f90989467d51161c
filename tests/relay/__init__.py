"""Relay mode: frames, registry JSON, tickets, state, the relay service, and interop with codex."""
