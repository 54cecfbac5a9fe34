"""The part of Go's text/template that `docker inspect -f` users type (pure).

Supported: `{{.Path.To.Field}}`, `{{json .X}}`, `{{index .X "key"}}`, `{{range .X}}…{{end}}`
(dot becomes each element; maps range over values in key order), `{{if .X}}…{{else}}…{{end}}`,
and `{{println}}`. Values print the way Go's fmt prints them: `map[k:v]`, `[a b]`, `<nil>`.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.S)


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
    for m in _ACTION.finditer(source):
        if m.start() > pos:
            stack[-1][1].append(_Node("text", source[pos : m.start()]))
        pos = m.end()
        action = m.group(1)
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
    if pos < len(source):
        root.append(_Node("text", source[pos:]))
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


def _eval(expr: str, dot: Any) -> Any:
    try:
        words = shlex.split(expr)
    except ValueError as e:
        raise TemplateError(f"template: {e}") from None
    if not words:
        raise TemplateError("template: missing value for command")
    fn, args = words[0], words[1:]
    if fn == "json":
        return json.dumps(_eval(" ".join(shlex.quote(a) for a in args), dot) if args else dot)
    if fn == "index":
        if len(args) < 2:
            raise TemplateError("template: index needs a value and a key")
        value = _lookup(dot, args[0])
        for key in args[1:]:
            if isinstance(value, dict):
                value = value.get(key)
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                raise TemplateError(f"template: error calling index: cannot index with {key!r}")
        return value
    if fn == "println":
        return " ".join(go_format(_lookup(dot, a)) for a in args) + "\n"
    if fn in ("upper", "lower"):
        text = go_format(_lookup(dot, args[0])) if args else ""
        return text.upper() if fn == "upper" else text.lower()
    if len(words) == 1:
        return _lookup(dot, fn)
    raise TemplateError(f'template: function "{fn}" not defined')


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


def _render(nodes: list[_Node], dot: Any, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.arg)
        elif node.kind == "expr":
            value = _eval(node.arg, dot)
            out.append(value if isinstance(value, str) else go_format(value))
        elif node.kind == "if":
            _render(node.body if _truthy(_eval(node.arg, dot)) else node.orelse, dot, out)
        elif node.kind == "range":
            seq = _eval(node.arg, dot)
            items = [seq[k] for k in sorted(seq)] if isinstance(seq, dict) else (seq or [])
            for item in items:
                _render(node.body, item, out)


def render(template: str, document: Any) -> str:
    out: list[str] = []
    _render(_parse(template), document, out)
    return "".join(out)
