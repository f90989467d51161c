"""aiohttp's server WebSocket, with binary messages handed to a router as they are parsed.

aiohttp parses a socket's bytes into a queue of messages and wakes the task awaiting
`receive()` for each: one future, one task step and one loop iteration per message before the
relay can route it. `ForwardingWebSocket` gives the queue a `forward` callback that is
offered each binary message at the moment it is parsed, while nothing is queued before it;
the callback routes it synchronously (True) or declines (False: it would have to wait, or
the message needs the general path), and a declined message is queued as aiohttp would.
Control frames, text, errors and the close always take the queue. The owner of the socket
sets `forward` once its routing state exists and keeps `busy` set while it handles a message
it received from the queue, so that a later message never overtakes it.

This relies on aiohttp's reader internals (`WebSocketDataQueue`, `WebSocketReader`, the
response's `_post_start`, the request handler's parser slot; aiohttp 3.14); if the parser
cannot be swapped, the socket stays a plain `WebSocketResponse`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from aiohttp import WSMsgType, web, web_ws
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader

log = logging.getLogger(__name__)

Forward = Callable[[bytes], bool]
QUEUE_LIMIT: Final[int] = getattr(web_ws, "DEFAULT_CHUNK_SIZE", 2**16)
"""The queue size aiohttp gives a server WebSocket."""


class _ForwardingQueue(WebSocketDataQueue):
    forward: Forward | None = None
    busy = False

    def feed_data(self, data: Any, size: int) -> None:
        forward = self.forward
        if (
            forward is not None
            and not self.busy
            and not self._buffer
            and data.type is WSMsgType.BINARY
            and forward(data.data)
        ):
            return
        super().feed_data(data, size)


class ForwardingWebSocket(web.WebSocketResponse):
    """A `WebSocketResponse` whose binary messages may be routed as they are parsed (see the
    module docstring)."""

    _forwarding: Any = None

    def _post_start(self, request: web.BaseRequest, protocol: Any, writer: Any) -> None:
        handler: Any = request.protocol
        # Bytes that came with the upgrade request are fed to aiohttp's parser right away:
        # then that parser stays (swapping it could lose them).
        pipelined = bool(getattr(handler, "_message_tail", b""))
        super()._post_start(request, protocol, writer)
        if pipelined or self._loop is None:
            return
        try:
            queue = _ForwardingQueue(handler, QUEUE_LIMIT, loop=self._loop)
            parser = WebSocketReader(
                queue,
                self._max_msg_size,
                compress=bool(self._compress),
                decode_text=self._decode_text,
            )
            callback = handler._data_received_cb
            handler._payload_parser = None  # set_parser() wants none set
            handler.set_parser(parser, data_received_cb=callback)
        except (AttributeError, TypeError, AssertionError) as exc:  # pragma: no cover
            log.debug("relay socket: no direct hand-off (%s)", exc)
            return
        self._reader = queue
        self._parser = parser
        self._forwarding = queue

    def set_forward(self, forward: Forward) -> None:
        """Route binary messages through `forward` from now on (when the hand-off exists)."""
        if self._forwarding is not None:
            self._forwarding.forward = forward

    def set_busy(self, busy: bool) -> None:
        """Whether the owner is handling a message taken from the queue."""
        if self._forwarding is not None:
            self._forwarding.busy = busy


__all__ = ["ForwardingWebSocket"]
