"""TLS for the WebSocket listener (`serve --listen wss://IP:PORT --tls-cert F --tls-key F`).

The certificate and key are re-read when either file changes: every TLS handshake looks at
their modification stamps (at most once per `CHECK_INTERVAL_S`), and a changed pair is loaded
into a fresh context that new connections get (through the SNI callback, which OpenSSL calls
for every handshake, with or without SNI). Connections already open keep the old one. A pair
that does not load (a half-written file, a key that does not match) is logged and the previous
one is kept, so a renewal tool can write the two files in either order. No signal is used:
SIGHUP belongs to the upgrade-in-place of the server.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0

Stamp = tuple[tuple[int, int, int], ...]


class TlsConfigError(ValueError):
    """The certificate or key cannot be used; `str()` is one line for the user."""


def _load(cert: str, key: str) -> ssl.SSLContext:
    for path in (cert, key):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TlsConfigError(f"cannot read {path}: {exc.strerror}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:
        what = exc.strerror or str(exc)
        raise TlsConfigError(f"cannot load TLS certificate {cert} with key {key}: {what}") from None
    return context


class ReloadingTls:
    """The server-side `SSLContext` to listen with (`context`), following the two files."""

    def __init__(
        self,
        cert: str,
        key: str,
        *,
        check_interval_s: float = CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cert = cert
        self._key = key
        self._interval = check_interval_s
        self._clock = clock
        self._stamp = self._read_stamp()
        self._current = _load(cert, key)
        self._checked = clock()
        self.reloads = 0
        self.context = _load(cert, key)
        self.context.sni_callback = self._on_hello

    def _read_stamp(self) -> Stamp:
        stamps = []
        for path in (self._cert, self._key):
            try:
                st = os.stat(path)
            except OSError:
                stamps.append((0, 0, 0))
            else:
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)

    def _on_hello(self, connection: ssl.SSLObject, _name: str | None, _ctx: object) -> None:
        self.check()
        connection.context = self._current

    def check(self) -> None:
        """Reload the pair if either file changed since the last look (rate-limited)."""
        now = self._clock()
        if now - self._checked < self._interval:
            return
        self._checked = now
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return
        try:
            context = _load(self._cert, self._key)
        except TlsConfigError as exc:
            log.warning("TLS certificate not reloaded, keeping the previous one: %s", exc)
            return
        self._stamp = stamp
        self._current = context
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self._cert)


def load_tls(cert: str | None, key: str | None) -> ReloadingTls:
    """Both files are needed. Raises `TlsConfigError`."""
    if cert is None or key is None:
        raise TlsConfigError("a wss:// --listen needs both --tls-cert FILE and --tls-key FILE")
    return ReloadingTls(cert, key)


__all__ = ["ReloadingTls", "TlsConfigError", "load_tls"]
