"""A minimal MCP server over stdio (newline-delimited JSON-RPC), run as a separate program.

    python mcp_stdio_server.py STATE_DIR

End-to-end tests declare it in a plugin's `.mcp.json`; Codex starts it (on the executor) and
talks to it through `process/start {pipeStdin}` and `process/write`. Standard library only: it
runs under whatever Python the executor has.

At start it spawns a helper child that only sleeps, with `mcp-helper-<$E2E_MARK>` on its
command line, so a test can tell whether the server's whole process tree went away; it kills the
helper itself when its stdin ends (a server that is killed leaves the helper to whoever kills it).

Everything it does is appended to `STATE_DIR/events.jsonl`, one JSON object a line:
`{"event": "start", "pid", "mark", "helper"}`, `{"event": "request", "pid", "method", "id"}`
for every message read, `{"event": "answered", "pid", "id"}` when a `tools/call` result is
written, `{"event": "eof", "pid"}` when stdin ends.

Tools:
* `where`: answers `mark=<$E2E_MARK> pid=<pid> cwd=<cwd>`, which only the executor's process knows.
* `wait_for_release`: answers once the file `STATE_DIR/release` exists (so a test can hold a
  call open, cut the connection, and then let the answer be written while nobody listens).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOOLS = [
    {
        "name": "where",
        "description": "Report where this MCP server runs.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "wait_for_release",
        "description": "Answer once the test releases the call.",
        "inputSchema": {"type": "object", "properties": {}},
    },
]


def main() -> None:
    state = Path(sys.argv[1])
    pid = os.getpid()
    mark = os.environ.get("E2E_MARK", "unset")

    def record(event: str, **fields: Any) -> None:
        with open(state / "events.jsonl", "a") as log:
            log.write(json.dumps({"event": event, "pid": pid, **fields}) + "\n")

    def send(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
        sys.stdout.flush()

    def text_result(request_id: Any, text: str) -> None:
        send({"id": request_id, "result": {"content": [{"type": "text", "text": text}]}})
        record("answered", id=request_id)

    helper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)", f"mcp-helper-{mark}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    record("start", mark=mark, helper=helper.pid)
    for line in sys.stdin:
        message = json.loads(line)
        method = message.get("method")
        request_id = message.get("id")
        record("request", method=method, id=request_id)
        if request_id is None:
            continue  # a notification
        if method == "initialize":
            version = message.get("params", {}).get("protocolVersion", "2025-06-18")
            send(
                {
                    "id": request_id,
                    "result": {
                        "protocolVersion": version,
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "e2e-probe", "version": "1"},
                    },
                }
            )
        elif method == "tools/list":
            send({"id": request_id, "result": {"tools": TOOLS}})
        elif method == "tools/call" and message["params"]["name"] == "where":
            text_result(request_id, f"mark={mark} pid={pid} cwd={os.getcwd()}")
        elif method == "tools/call" and message["params"]["name"] == "wait_for_release":
            while not (state / "release").exists():
                time.sleep(0.01)  # a fixture program polling a file the test creates
            text_result(request_id, f"released mark={mark} pid={pid}")
        else:
            send({"id": request_id, "error": {"code": -32601, "message": f"no {method}"}})
    record("eof")
    helper.kill()
    helper.wait()


if __name__ == "__main__":
    main()
