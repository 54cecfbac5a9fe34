"""The agent's local API: one JSON object per line over a Unix socket (codec and client).

Request  {"op": "network.create", "args": {...}}
Response {"ok": true, "result": ...} or {"ok": false, "kind": "not_found", "error": "..."}

Requests are typed (h11's idiom: typed events in): each operation is a frozen dataclass that
subclasses `Request`, and `decode_args` turns the JSON `args` into one, checking every type once.
Nothing is coerced: `"false"` is not a boolean, `1` is not a string; an argument the operation
does not have is refused too (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from overlaynet.errors import InvalidArgument, error_for

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


class Request:
    """One operation with its arguments; subclasses are frozen dataclasses naming their `OP`.

    `check()` holds the rules types cannot say (ranges, finiteness); it runs on every
    construction, so a request that exists is a valid one, whoever built it.
    """

    OP: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise InvalidArgument when a value is out of its range (types are checked already)."""

    def to_args(self) -> dict[str, Any]:
        """The wire form of the arguments (what `decode_args` reads back)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


R = TypeVar("R", bound=Request)


def request_types(classes: Iterable[type[Request]]) -> dict[str, type[Request]]:
    """op name → request class; two classes claiming one op is a programming error."""
    out: dict[str, type[Request]] = {}
    for cls in classes:
        assert cls.OP and cls.OP not in out, f"duplicate or empty op {cls.OP!r}"
        out[cls.OP] = cls
    return out


_LAYOUTS: dict[type[Any], tuple[dict[str, dataclasses.Field[Any]], dict[str, Any]]] = {}


def _layout(cls: type[Any]) -> tuple[dict[str, dataclasses.Field[Any]], dict[str, Any]]:
    """A request class's fields and resolved type hints, worked out once per class:
    `get_type_hints` evaluates every annotation string on each call (~60 us, the largest item
    of a busy manager's request handling in a 150-host swarm)."""
    layout = _LAYOUTS.get(cls)
    if layout is None:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        layout = _LAYOUTS[cls] = (fields, typing.get_type_hints(cls))
    return layout


def decode_args(cls: type[R], args: Mapping[str, Any]) -> R:
    """The typed request for `args`, or InvalidArgument naming the first wrong argument."""
    fields, hints = _layout(cls)
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise InvalidArgument(f"unknown argument {unknown[0]!r} for {cls.OP}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in args:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InvalidArgument(f"missing argument {name!r}")
            continue
        values[name] = _typed(name, hints[name], args[name])
    return cls(**values)


def _typed(name: str, hint: Any, value: Any) -> Any:
    """`value` if it has type `hint` exactly as JSON gives it (lists become tuples)."""
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in params:
            return None
        (inner,) = [p for p in params if p is not type(None)]
        return _typed(name, inner, value)
    if hint is bool:
        if not isinstance(value, bool):
            raise InvalidArgument(f"argument {name!r} must be true or false")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise InvalidArgument(f"argument {name!r} must be a string")
        return value
    if hint is float:
        # bool is an int in Python, never a number of seconds here.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgument(f"argument {name!r} must be a number")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(f"argument {name!r} must be an integer")
        return value
    if origin is tuple and params[1:] == (Ellipsis,) and params[0] is str:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidArgument(f"argument {name!r} must be a list of strings")
        return tuple(value)
    if origin in (dict, Mapping) and params == (str, str):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise InvalidArgument(f"argument {name!r} must be an object of strings")
        return dict(value)
    raise TypeError(f"argument {name!r}: no decoder for {hint!r}")  # a bug in a Request class


def check_seconds(name: str, value: float, limit: float) -> None:
    """A timeout: finite, not negative, at most `limit` (JSON parsers accept Infinity/NaN)."""
    if not math.isfinite(value) or not 0 <= value <= limit:
        raise InvalidArgument(f"argument {name!r} must be a number of seconds from 0 to {limit:g}")


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
    raise error_for(str(msg.get("kind", "")), msg.get("error", "unknown error"))


class Client:
    """A blocking client for one agent (the CLI's side)."""

    def __init__(self, socket_path: Path, timeout: float | None = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> Any:
        return self.call_attached(op, (), **args)

    def call_attached(self, op: str, fds: Sequence[int], **args: Any) -> Any:
        """A call that hands the agent open file descriptors with the request (SCM_RIGHTS on
        the Unix socket): `exec` attaches the client's stdin, stdout and stderr this way, so
        the command's output reaches the client's terminal without passing through the agent."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(str(self.socket_path))
            except (FileNotFoundError, ConnectionRefusedError) as e:
                raise AgentDown(str(e)) from None
            line = encode_request(op, args)
            if fds:
                sent = socket.send_fds(sock, [line], list(fds))
                if sent < len(line):
                    # Not sendall(b""): it still calls send(), which fails with EPIPE when the
                    # agent has already answered and closed.
                    sock.sendall(line[sent:])
            else:
                sock.sendall(line)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise AgentDown("the agent closed the connection without answering")
                data += chunk
        finally:
            sock.close()
        return decode_response(data)
