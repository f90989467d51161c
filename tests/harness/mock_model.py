"""A scripted model for end-to-end tests: a Responses-API endpoint on 127.0.0.1.

Codex is pointed at it as a custom model provider (`wire_api = "responses"`); every
`POST /v1/responses` is answered with a server-sent-event stream built from the next reply
of the script. A reply is either a list of output items (built with the helpers below) or a
callable that receives the request (so a reply can use what the previous tool call
returned, such as a session id). Once the script is used up the model answers with a final
message, which ends the turn.

Every request body is kept (`requests`), with accessors for what Codex sent back: the
output of a function or custom tool call, the user and developer texts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.harness.httpserver import Exchange, HttpTestServer, RecordedRequest

Item = dict[str, Any]
Reply = Sequence[Item] | Callable[["ModelRequest"], Sequence[Item]]

FINAL_TEXT = "all done"


def function_call(call_id: str, name: str, **arguments: Any) -> Item:
    return {
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(arguments),
    }


def exec_command(call_id: str, cmd: str, **options: Any) -> Item:
    """The unified-exec `exec_command` tool (`yield_time_ms`, `tty`, `workdir`, ...)."""
    return function_call(call_id, "exec_command", cmd=cmd, **options)


def write_stdin(call_id: str, session_id: int, chars: str = "", **options: Any) -> Item:
    return function_call(call_id, "write_stdin", session_id=session_id, chars=chars, **options)


def apply_patch(call_id: str, patch: str) -> Item:
    """`apply_patch` as the freeform custom tool the bundled model catalog offers."""
    return {"type": "custom_tool_call", "call_id": call_id, "name": "apply_patch", "input": patch}


def message(text: str, item_id: str = "msg-final") -> Item:
    return {
        "type": "message",
        "role": "assistant",
        "id": item_id,
        "content": [{"type": "output_text", "text": text}],
    }


@dataclass
class ModelRequest:
    """One request Codex made to the model."""

    body: dict[str, Any]

    @property
    def input(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.body.get("input", [])
        return items

    def call_output(self, call_id: str) -> str:
        """The text Codex returned for a function or custom tool call."""
        for item in self.input:
            if item.get("call_id") == call_id and item.get("type", "").endswith("call_output"):
                output = item.get("output")
                if isinstance(output, str):
                    return output
                # content-item form: [{"type": "input_text", "text": ...}, ...]
                return "".join(part.get("text", "") for part in output or [])
        raise KeyError(f"no output for call {call_id!r} in this request")

    def texts(self, role: str) -> list[str]:
        return [
            part.get("text", "")
            for item in self.input
            if item.get("type") == "message" and item.get("role") == role
            for part in item.get("content", [])
        ]

    @property
    def tool_names(self) -> list[str]:
        return [tool.get("name") or tool.get("type", "") for tool in self.body.get("tools", [])]


class MockModel:
    """The Responses endpoint; `script` replies are used in order, one per request."""

    def __init__(self, script: Sequence[Reply] = ()) -> None:
        self.script: list[Reply] = list(script)
        self.requests: list[ModelRequest] = []
        self.errors: list[Exception] = []
        """Exceptions raised by callable replies (the turn is ended with a message instead)."""
        self.server = HttpTestServer()
        self.server.route("/v1/responses", self._respond)
        self._changed = asyncio.Condition()

    @property
    def base_url(self) -> str:
        return self.server.url("/v1")

    def provider_config(self) -> str:
        """The `config.toml` lines that make Codex use this model (no retries: a failure shows)."""
        return (
            'model_provider = "mock"\n'
            "[model_providers.mock]\n"
            'name = "mock"\n'
            f'base_url = "{self.base_url}"\n'
            'wire_api = "responses"\n'
            "request_max_retries = 0\n"
            "stream_max_retries = 0\n"
        )

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self.server.close()

    async def wait_requests(self, count: int, timeout: float = 60.0) -> list[ModelRequest]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    async def _respond(self, recorded: RecordedRequest, exchange: Exchange) -> None:
        request = ModelRequest(json.loads(recorded.body))
        async with self._changed:
            self.requests.append(request)
            self._changed.notify_all()
        number = len(self.requests)
        reply = self.script.pop(0) if self.script else [message(FINAL_TEXT)]
        try:
            items = reply(request) if callable(reply) else reply
        except Exception as exc:  # a scenario's reply failed: end the turn, report it later
            self.errors.append(exc)
            items = [message(f"reply failed: {exc!r}")]
        response_id = f"resp-{number}"
        events: list[Item] = [{"type": "response.created", "response": {"id": response_id}}]
        events += [{"type": "response.output_item.done", "item": item} for item in items]
        events.append(
            {
                "type": "response.completed",
                "response": {
                    "id": response_id,
                    "usage": {
                        "input_tokens": 0,
                        "input_tokens_details": None,
                        "output_tokens": 0,
                        "output_tokens_details": None,
                        "total_tokens": 0,
                    },
                },
            }
        )
        body = b"".join(
            f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events
        )
        await exchange.send_head(
            200, [("Content-Type", "text/event-stream"), ("Content-Length", str(len(body)))]
        )
        await exchange.write(body)


__all__ = [
    "FINAL_TEXT",
    "Item",
    "MockModel",
    "ModelRequest",
    "Reply",
    "apply_patch",
    "exec_command",
    "function_call",
    "message",
    "write_stdin",
]
