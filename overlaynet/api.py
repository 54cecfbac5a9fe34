"""The agent's local API: one JSON object per line over a Unix socket (codec and client).

Request  {"op": "network.create", "args": {...}}
Response {"ok": true, "result": ...} or {"ok": false, "kind": "not_found", "error": "..."}
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from overlaynet.errors import KINDS, ApiError

# A request is a few hundred bytes; anything near this is garbage or an attack on memory.
MAX_REQUEST_BYTES = 1 << 20


class MalformedRequest(ValueError):
    """A request line that is not a JSON object with a string `op` and an object `args`."""


class AgentDown(ConnectionError):
    """No agent answers on the socket."""


def decode_request(line: bytes) -> tuple[str, dict[str, Any]]:
    if len(line) > MAX_REQUEST_BYTES:
        raise MalformedRequest(f"request too large (over {MAX_REQUEST_BYTES} bytes)")
    try:
        msg = json.loads(line)
    except (UnicodeDecodeError, ValueError) as e:
        # ValueError covers JSONDecodeError and integers past Python's digit limit.
        raise MalformedRequest(f"request is not JSON: {e}") from None
    except RecursionError:
        raise MalformedRequest("request nests too deeply") from None
    if not isinstance(msg, dict):
        raise MalformedRequest("request must be a JSON object")
    op, args = msg.get("op"), msg.get("args", {})
    if not isinstance(op, str) or not op:
        raise MalformedRequest("request needs a string 'op'")
    if not isinstance(args, dict):
        raise MalformedRequest("request 'args' must be an object")
    return op, args


def encode_request(op: str, args: dict[str, Any]) -> bytes:
    return json.dumps({"op": op, "args": args}).encode() + b"\n"


def encode_result(result: Any) -> bytes:
    return json.dumps({"ok": True, "result": result}).encode() + b"\n"


def encode_error(kind: str, message: str) -> bytes:
    return json.dumps({"ok": False, "kind": kind, "error": message}).encode() + b"\n"


def decode_response(line: bytes) -> Any:
    msg = json.loads(line)
    if msg.get("ok"):
        return msg.get("result")
    cls = KINDS.get(msg.get("kind", ""), ApiError)
    raise cls(msg.get("error", "unknown error"))


class Client:
    """A blocking client for one agent (the CLI's side)."""

    def __init__(self, socket_path: Path, timeout: float | None = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> Any:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(str(self.socket_path))
            except (FileNotFoundError, ConnectionRefusedError) as e:
                raise AgentDown(str(e)) from None
            sock.sendall(encode_request(op, args))
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise AgentDown("the agent closed the connection without answering")
                data += chunk
        finally:
            sock.close()
        return decode_response(data)
