"""`--filter KEY=VALUE` for the list commands, matched the way dockerd matches them (pure).

docker's rules (moby api/types/filters and daemon/network/filter.go, daemon/list.go,
daemon/cluster/filters.go), kept here:
- Values of one key are alternatives (OR); different keys must all hold (AND). `label` is the
  exception: every `label=` given must be on the object (MatchKVList).
- `name` and `id` are unanchored regular expressions (an exact value also matches), so a prefix
  or any part of a name selects it; `driver`, `scope` and `status` are exact.
- Node `name` and `id` are prefixes (swarmkit's NamePrefixes/IDPrefixes).
- A key the command does not know, or a value outside a closed set (`status=`, `role=`,
  `type=`), is an error naming it, before anything is listed.

The CLI filters the rows an agent returns; a row is a plain dict of the agent's API reply.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Row = Mapping[str, Any]


class FilterError(ValueError):
    """A filter the command cannot apply: bad shape, unknown key or a value out of its set."""


def parse_filter(spec: str) -> tuple[str, str]:
    """One `--filter` argument, as docker's FilterOpt reads it: key lower-cased, both trimmed."""
    key, sep, value = spec.partition("=")
    if not sep:
        raise FilterError("bad format of filter (expected name=value)")
    return key.strip().lower(), value.strip()


@dataclass(frozen=True)
class Filters:
    """The filters given to one command: key → the values given for it, in order."""

    terms: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Filters:
        terms: dict[str, tuple[str, ...]] = {}
        for key, value in pairs:
            if value not in terms.get(key, ()):
                terms[key] = (*terms.get(key, ()), value)
        return cls(terms)

    def __bool__(self) -> bool:
        return bool(self.terms)

    def get(self, key: str) -> tuple[str, ...]:
        return self.terms.get(key, ())


# ---- matching primitives (moby's Args methods) -------------------------------------------


def regex_match(values: Sequence[str], source: str) -> bool:
    """moby's Args.Match: an exact value, or an unanchored regular expression that matches."""
    if source in values:
        return True
    for pattern in values:
        try:
            if re.search(pattern, source):
                return True
        except re.error:
            continue  # dockerd skips patterns that do not compile
    return False


def prefix_match(values: Sequence[str], source: str) -> bool:
    return any(source.startswith(v) for v in values)


def labels_match(values: Sequence[str], labels: Mapping[str, str] | None) -> bool:
    """moby's Args.MatchKVList: every `key` or `key=value` given is on the object."""
    if not labels:
        return False
    for value in values:
        key, has_value, wanted = value.partition("=")
        if key not in labels or (has_value and labels[key] != wanted):
            return False
    return True


# ---- one rule per key, per object kind ---------------------------------------------------

Rule = Callable[[Sequence[str], Row], bool]


def _labels_of(row: Row) -> Mapping[str, str]:
    labels = row.get("labels")
    return labels if isinstance(labels, Mapping) else {}


def _reported_labels(row: Row) -> Mapping[str, str]:
    """Labels of an object that can have them: an agent that does not send them cannot say."""
    if "labels" not in row:
        raise FilterError("filter 'label' needs labels in the agent's list reply (not sent yet)")
    return _labels_of(row)


@dataclass(frozen=True)
class Kind:
    """The filter keys of one list command and how each matches a row."""

    what: str
    rules: Mapping[str, Rule]
    # Keys whose values come from a closed set: anything else is an error, as in dockerd.
    closed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Keys docker accepts whose data the agent does not return yet: refused with that reason.
    unsupported: frozenset[str] = frozenset()

    def check(self, filters: Filters) -> None:
        for key, values in filters.terms.items():
            if key in self.unsupported:
                raise FilterError(
                    f"filter {key!r} is not supported for {self.what} yet "
                    "(the agent does not report what it needs)"
                )
            rule = self.rules.get(key)
            if rule is None:
                raise FilterError(f"invalid filter '{key}'")
            for value in values:
                if key in self.closed and value not in self.closed[key]:
                    raise FilterError(f"invalid filter '{key}={value}'")

    def select(self, filters: Filters, rows: Iterable[Row]) -> list[Row]:
        """The rows every key accepts (check first: an invalid filter selects nothing)."""
        self.check(filters)
        return [
            row
            for row in rows
            if all(self.rules[key](values, row) for key, values in filters.terms.items())
        ]


# Container states a `status=` filter may name (moby container.IsValidStateString).
CONTAINER_STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")

# Networks docker creates itself (runconfig.IsPreDefinedNetwork): the rest are "custom".
BUILTIN_NETWORKS = frozenset({"bridge", "host", "none", "default"})


def _image_matches(values: Sequence[str], row: Row) -> bool:
    image = str(row.get("image", ""))
    bare = image.removesuffix(":latest")
    return any(v.removesuffix(":latest") == bare for v in values)


CONTAINERS = Kind(
    "containers",
    {
        "id": lambda vs, r: regex_match(vs, str(r.get("id", ""))),
        "name": lambda vs, r: (
            regex_match(vs, str(r.get("names", ""))) or regex_match(vs, "/" + str(r.get("names")))
        ),
        "label": lambda vs, r: labels_match(vs, _labels_of(r)),
        "status": lambda vs, r: str(r.get("state", "")) in vs,
        "ancestor": _image_matches,
    },
    closed={"status": CONTAINER_STATES},
    unsupported=frozenset(
        {"exited", "network", "before", "since", "volume", "publish", "expose", "health"}
    ),
)

NETWORKS = Kind(
    "networks",
    {
        "driver": lambda vs, r: str(r.get("driver", "")) in vs,
        "name": lambda vs, r: regex_match(vs, str(r.get("name", ""))),
        "id": lambda vs, r: regex_match(vs, str(r.get("id", ""))),
        "label": lambda vs, r: labels_match(vs, _reported_labels(r)),
        "scope": lambda vs, r: str(r.get("scope", "")) in vs,
        "type": lambda vs, r: ("builtin" if r.get("name") in BUILTIN_NETWORKS else "custom") in vs,
    },
    closed={"type": ("custom", "builtin")},
    unsupported=frozenset({"dangling"}),
)

NODES = Kind(
    "nodes",
    {
        "id": lambda vs, r: prefix_match(vs, str(r.get("id", ""))),
        "name": lambda vs, r: prefix_match(vs, str(r.get("hostname", ""))),
        "role": lambda vs, r: str(r.get("role")) in vs,
        # Every node the managers list has been admitted: overlaynet has no pending state.
        "membership": lambda vs, r: str(r.get("membership", "accepted")) in vs,
        # Nodes carry no labels in overlaynet (no `node update --label-add`): none match.
        "label": lambda vs, r: labels_match(vs, _labels_of(r)),
        "node.label": lambda vs, r: labels_match(vs, _labels_of(r)),
    },
    closed={"role": ("manager", "worker"), "membership": ("accepted", "pending")},
)


def status_implies_all(filters: Filters) -> bool:
    """dockerd lists stopped containers too when a `status=` filter is given (daemon/list.go)."""
    return bool(filters.get("status"))


# Go's path.ErrBadPattern, as dockerd returns it for a reference= it cannot match with.
BAD_PATTERN = "syntax error in pattern"


def _class(pattern: str, i: int) -> tuple[str, int]:
    """The character class opening at pattern[i] ('['), as a regular expression, and the index
    after its ']'. Go: `[` [`^`] { c | `\\`c | lo`-`hi } `]`, never empty; a range lo > hi
    matches nothing."""
    i += 1
    negated = i < len(pattern) and pattern[i] == "^"
    i += negated
    items: list[str] = []

    def char() -> str:
        nonlocal i
        if i >= len(pattern) or pattern[i] in "-]":
            raise FilterError(BAD_PATTERN)
        if pattern[i] == "\\":
            i += 1
            if i >= len(pattern):
                raise FilterError(BAD_PATTERN)
        i += 1
        return pattern[i - 1]

    while True:
        if i >= len(pattern):
            raise FilterError(BAD_PATTERN)
        if pattern[i] == "]" and items:
            break
        lo = char()
        hi = lo
        if i < len(pattern) and pattern[i] == "-":
            i += 1
            hi = char()
        # An empty range still counts as an item (the class is not empty), matching nothing.
        items.append(f"{re.escape(lo)}-{re.escape(hi)}" if lo <= hi else "")
    body = "".join(items)
    if negated:
        return (f"[^{body}]" if body else "."), i + 1
    return (f"[{body}]" if body else "(?!)"), i + 1


def _glob(pattern: str) -> re.Pattern[str]:
    """Go's path.Match as a regular expression: `*` and `?` stop at `/`, `[a-z]` and `[^...]`
    are classes, `\\` takes the next character as it is; a malformed pattern is an error."""
    parts = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "[":
            part, i = _class(pattern, i)
            parts.append(part)
            continue
        if ch == "\\":
            i += 1
            if i >= len(pattern):
                raise FilterError(BAD_PATTERN)
            ch = pattern[i]
            parts.append(re.escape(ch))
        else:
            parts.append({"*": "[^/]*", "?": "[^/]"}.get(ch) or re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.DOTALL)


def reference_match(values: Sequence[str], row: Row) -> bool:
    """docker's `reference=` (reference.FamiliarMatch): a glob over `NAME:TAG`, or over the name
    alone when the pattern has no tag (so `alpine` and `dockersamples/*` select by name)."""
    name = str(row.get("Repository", ""))
    full = f"{name}:{row.get('Tag', '')}"
    return any(
        _glob(v).fullmatch(full) is not None or _glob(v).fullmatch(name) is not None for v in values
    )


# moby's Args.GetBoolOrDefault (image list's `dangling=`): these words and no others.
TRUE_WORDS = ("true", "1")
FALSE_WORDS = ("false", "0")


def _dangling_wanted(values: Sequence[str]) -> bool:
    """dangling=true|1 or false|0; both at once is docker's invalid filter."""
    wanted = {v in TRUE_WORDS for v in values}
    if len(wanted) > 1:
        raise FilterError(f"invalid filter 'dangling=[{' '.join(sorted(values))}]'")
    return wanted == {True}


IMAGES = Kind(
    "images",
    {
        "reference": reference_match,
        # Catalog images always have a name and tag: none is dangling.
        "dangling": lambda vs, r: not _dangling_wanted(vs),
        # The catalog gives images no labels: a label filter selects none.
        "label": lambda vs, r: labels_match(vs, {}),
    },
    closed={"dangling": (*TRUE_WORDS, *FALSE_WORDS)},
    unsupported=frozenset({"before", "since", "until"}),
)
