"""The part of Go's text/template that `docker inspect -f` and `--format` users type (pure).

Supported: `{{.Path.To.Field}}`, method-like fields with arguments (`{{.Label "key"}}`, when the
document holds a callable), functions with literal or field arguments (`{{json .X}}`,
`{{index .X "key"}}`, `{{join .X ","}}`, `{{pad .X 1 0}}`, `{{truncate .X 5}}`, `{{upper .X}}`…),
`{{range .X}}…{{end}}` (dot becomes each element; maps range over values in key order),
`{{if .X}}…{{else}}…{{end}}`, `{{println}}`, comments `{{/* … */}}` and the trim markers
`{{- ` and ` -}}`. Values print the way Go's fmt prints them: `map[k:v]`, `[a b]`, `<nil>`.

`render(…, functions=…)` replaces or adds functions: docker renders table headers with the
same template and identity functions (HEADER_FUNCTIONS), so `{{upper .Name}}` heads its
column with NAME.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Go: "{{- " trims the white space before the action and " -}}" after it; the space is required
# ("{{-3}}" is the number -3), which is why the markers carry their white space here.
_ACTION = re.compile(r"{{(-[ \t\r\n])?\s*(.*?)\s*([ \t\r\n]-)?}}", re.S)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\S+')
_NUMBER = re.compile(r"-?\d+")


class TemplateError(ValueError):
    """A template that cannot be parsed or does not fit the document."""


@dataclass
class _Node:
    kind: str  # text | expr | range | if
    arg: str = ""
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _parse(source: str) -> list[_Node]:
    root: list[_Node] = []
    stack: list[tuple[_Node | None, list[_Node]]] = [(None, root)]
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(source):
        text = source[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        if text:
            stack[-1][1].append(_Node("text", text))
        pos = m.end()
        trim_next = bool(m.group(3))
        action = m.group(2)
        if action.startswith("/*"):
            continue  # a comment
        word = action.split(None, 1)[0] if action else ""
        rest = action[len(word) :].strip()
        if word in ("range", "if"):
            node = _Node(word, rest)
            stack[-1][1].append(node)
            stack.append((node, node.body))
        elif word == "else":
            owner = stack[-1][0]
            if owner is None or owner.kind != "if":
                raise TemplateError("template: {{else}} outside {{if}}")
            stack[-1] = (owner, owner.orelse)
        elif word == "end":
            if len(stack) == 1:
                raise TemplateError("template: unexpected {{end}}")
            stack.pop()
        else:
            stack[-1][1].append(_Node("expr", action))
    if len(stack) != 1:
        raise TemplateError("template: unexpected EOF: missing {{end}}")
    tail = source[pos:]
    if trim_next:
        tail = tail.lstrip()
    if tail:
        root.append(_Node("text", tail))
    return root


def _lookup(dot: Any, path: str) -> Any:
    if path == ".":
        return dot
    if not path.startswith("."):
        raise TemplateError(f"template: cannot evaluate {path!r}: expected .Field")
    value = dot
    for part in path[1:].split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, dict) or value is None:
            if isinstance(value, dict) and not _looks_like_struct(value):
                return None  # Go: a missing map key is the zero value
            raise TemplateError(f"template: can't evaluate field {part} in type {_go_type(value)}")
        else:
            raise TemplateError(f"template: can't evaluate field {part} in type {_go_type(value)}")
    return value


def _looks_like_struct(d: dict[str, Any]) -> bool:
    return all(k[:1].isupper() for k in d)


def _go_type(v: Any) -> str:
    return {bool: "bool", int: "int", str: "string", list: "[]interface {}"}.get(
        type(v), "interface {}"
    )


def _argument(token: str, dot: Any) -> Any:
    """One argument: a field path, a quoted string, a number or a boolean."""
    if token.startswith("."):
        value = _lookup(dot, token)
        if callable(value):
            raise TemplateError(f"template: {token} needs arguments: ({token} …)")
        return value
    if token.startswith('"'):
        try:
            text: str = json.loads(token)
        except ValueError:
            raise TemplateError(f"template: bad string {token}") from None
        return text
    if token.startswith("`"):
        return token[1:-1]
    if _NUMBER.fullmatch(token):
        return int(token)
    if token in ("true", "false"):
        return token == "true"
    if token == "nil":
        return None
    raise TemplateError(f"template: unexpected {token!r} in operand")


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value):
            value = value[key]
        elif isinstance(value, list) and isinstance(key, str) and key.isdigit():
            value = _index(value, int(key))
        else:
            raise TemplateError(f"template: error calling index: cannot index with {key!r}")
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else go_format(value)


def _pad(value: Any, prefix: int, suffix: int) -> str:
    """docker's pad: surround with spaces, unless empty (keeps optional columns tidy)."""
    text = _as_text(value)
    return " " * prefix + text + " " * suffix if text else text


def _join(value: Any, sep: str) -> str:
    if not isinstance(value, list):
        raise TemplateError("template: error calling join: not a list")
    return sep.join(_as_text(v) for v in value)


def _jsonable(value: Any) -> Any:
    """The document without its method-like fields (docker marshals fields, not methods)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if not callable(v)}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def docker_json(value: Any) -> str:
    """docker's `json` function: compact, sorted keys for records, no HTML escaping."""
    return json.dumps(_jsonable(value), separators=(",", ":"), ensure_ascii=False)


Function = Callable[..., Any]

FUNCTIONS: dict[str, Function] = {
    "json": docker_json,
    "index": _index,
    "println": lambda *values: " ".join(_as_text(v) for v in values) + "\n",
    "upper": lambda v: _as_text(v).upper(),
    "lower": lambda v: _as_text(v).lower(),
    "title": lambda v: " ".join(w[:1].upper() + w[1:] for w in _as_text(v).split(" ")),
    "split": lambda v, sep: _as_text(v).split(sep),
    "join": _join,
    "pad": _pad,
    "truncate": lambda v, n: _as_text(v)[:n],
    "len": lambda v: len(v),
}

# docker's HeaderFunctions: a header keeps its name whatever the column's function does to values.
HEADER_FUNCTIONS: dict[str, Function] = {
    "json": lambda v: v,
    "split": lambda v, _sep: v,
    "join": lambda v, _sep: v,
    "title": lambda v: v,
    "lower": lambda v: v,
    "upper": lambda v: v,
    "truncate": lambda v, _n: v,
}


def _eval(expr: str, dot: Any, functions: Mapping[str, Function]) -> Any:
    words = _TOKEN.findall(expr)
    if not words:
        raise TemplateError("template: missing value for command")
    head, rest = words[0], words[1:]
    if head.startswith("."):
        value = _lookup(dot, head)
        if callable(value):
            # A method with arguments, as docker's `{{.Label "com.example"}}`.
            try:
                return value(*(_argument(a, dot) for a in rest))
            except TypeError as e:
                raise TemplateError(f"template: wrong arguments for {head}: {e}") from None
        if rest:
            raise TemplateError(f"template: {head} is not a method but has arguments")
        return value
    fn = functions.get(head)
    if fn is None:
        raise TemplateError(f'template: function "{head}" not defined')
    args = [_argument(a, dot) for a in rest]
    try:
        return fn(*args)
    except TypeError as e:
        raise TemplateError(f"template: wrong arguments for {head}: {e}") from None


def go_format(value: Any) -> str:
    """Go's %v."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_format(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    return str(value)


def _truthy(value: Any) -> bool:
    return bool(value)


def _render(
    nodes: list[_Node], dot: Any, out: list[str], functions: Mapping[str, Function]
) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.arg)
        elif node.kind == "expr":
            out.append(_as_text(_eval(node.arg, dot, functions)))
        elif node.kind == "if":
            branch = node.body if _truthy(_eval(node.arg, dot, functions)) else node.orelse
            _render(branch, dot, out, functions)
        elif node.kind == "range":
            seq = _eval(node.arg, dot, functions)
            if isinstance(seq, str | int | float):
                raise TemplateError(f"template: range can't iterate over {go_format(seq)}")
            items = [seq[k] for k in sorted(seq)] if isinstance(seq, dict) else (seq or [])
            for item in items:
                _render(node.body, item, out, functions)


def render(
    template: str,
    document: Any,
    functions: Mapping[str, Function] | None = None,
    keep_partial: bool = False,
) -> str:
    """`template` executed on `document`.

    `functions` adds to or replaces the built-in ones. `keep_partial` returns what was written
    before an execution error instead of raising (docker prints a table header that way).
    """
    funcs = {**FUNCTIONS, **(functions or {})}
    out: list[str] = []
    nodes = _parse(template)
    try:
        _render(nodes, document, out, funcs)
    except TemplateError:
        if not keep_partial:
            raise
    return "".join(out)
