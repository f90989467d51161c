"""Relay mode (RELAY.md): the pure codecs (frames, noise, records) and, on top, the executor
link, the harness link and the relay service.
"""
