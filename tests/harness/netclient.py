"""A proxy client to run *as the proxied process* in network tests (standard library only).

    python netclient.py get http://127.0.0.1:8000/x  connect 127.0.0.1:8000  socks 127.0.0.1 8000

Each operation prints one JSON line describing what came back, reduced to what both proxies
must agree on: statuses, the proxy's error header and content type, bodies (JSON bodies
decoded), SOCKS reply codes, errno names. Operations go through the proxy named by the
environment (`HTTP_PROXY` for HTTP and CONNECT, `ALL_PROXY` for SOCKS5), except `direct`,
`unix` and `bind`, which try the network without it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

TIMEOUT_S = 20.0


def _proxy(name: str) -> tuple[str, int]:
    authority = os.environ[name].split("//", 1)[1].rstrip("/")
    host, port = authority.rsplit(":", 1)
    return host, int(port)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _response(data: bytes) -> dict[str, Any]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    out: dict[str, Any] = {"status": int(lines[0].split()[1]) if lines[0] else None}
    for name in ("content-type", "x-proxy-error"):
        if name in headers:
            out[name] = headers[name]
    if headers.get("content-type") == "application/json":
        out["body"] = json.loads(body)
    else:
        out["body"] = body.decode("latin-1")
    return out


def _errno(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def http(method: str, url: str) -> dict[str, Any]:
    sock = socket.create_connection(_proxy("HTTP_PROXY"), timeout=TIMEOUT_S)
    host = url.split("/")[2]
    extra = "Content-Length: 0\r\n" if method == "POST" else ""
    request = f"{method} {url} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    sock.sendall(request.encode())
    return _response(_read_all(sock))


def connect(target: str) -> dict[str, Any]:
    sock = socket.create_connection(_proxy("HTTP_PROXY"), timeout=TIMEOUT_S)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        if not chunk:
            break
        head += chunk
    status = int(head.split(b" ", 2)[1]) if head else None
    if status != 200:  # the connection stays open: read the body by its length
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        while length and len(head.partition(b"\r\n\r\n")[2]) < int(length.group(1)):
            chunk = sock.recv(65536)
            if not chunk:
                break
            head += chunk
        return _response(head)
    sock.sendall(b"GET /tunnel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return {"status": status, "tunnel": _response(_read_all(sock))}


def socks(host: str, port: str, *, as_name: bool = False) -> dict[str, Any]:
    """SOCKS5 CONNECT; an IPv4 address goes as one (ATYP 1) unless `as_name`."""
    sock = socket.create_connection(_proxy("ALL_PROXY"), timeout=TIMEOUT_S)
    sock.sendall(b"\x05\x01\x00")
    greeting = sock.recv(2)
    try:
        address = b"\x01" + socket.inet_aton(host)
    except OSError:
        as_name = True
    if as_name:
        address = b"\x03" + bytes([len(host)]) + host.encode()
    sock.sendall(b"\x05\x01\x00" + address + struct.pack(">H", int(port)))
    reply = sock.recv(10)
    out: dict[str, Any] = {"greeting": greeting.hex(), "reply": reply[1] if reply else None}
    if reply[1:2] == b"\x00":
        sock.sendall(b"GET /socks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out["tunnel"] = _response(_read_all(sock))
    return out


def socks_udp() -> dict[str, Any]:
    """SOCKS5 UDP ASSOCIATE (client address unspecified): the reply code."""
    sock = socket.create_connection(_proxy("ALL_PROXY"), timeout=TIMEOUT_S)
    sock.sendall(b"\x05\x01\x00")
    greeting = sock.recv(2)
    sock.sendall(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
    reply = sock.recv(10)
    return {"greeting": greeting.hex(), "reply": reply[1] if reply else None}


def direct(host: str, port: str) -> str:
    try:
        socket.create_connection((host, int(port)), timeout=TIMEOUT_S).close()
    except OSError as exc:
        return _errno(exc)
    return "connected"


def unix() -> str:
    try:
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
    except OSError as exc:
        return _errno(exc)
    return "ok"


def bind() -> str:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
    except OSError as exc:
        return _errno(exc)
    return "ok"


OPERATIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "get": (1, lambda url: http("GET", url)),
    "post": (1, lambda url: http("POST", url)),
    "connect": (1, connect),
    "socks": (2, socks),
    "socks-name": (2, lambda host, port: socks(host, port, as_name=True)),
    "socks-udp": (0, socks_udp),
    "direct": (2, direct),
    "unix": (0, unix),
    "bind": (0, bind),
}


def main(argv: list[str]) -> None:
    index = 0
    while index < len(argv):
        op = argv[index]
        count, run = OPERATIONS[op]
        args = argv[index + 1 : index + 1 + count]
        index += 1 + count
        try:
            result = run(*args)
        except OSError as exc:
            result = {"error": _errno(exc)}
        print(json.dumps({"op": op, "args": args, "result": result}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
