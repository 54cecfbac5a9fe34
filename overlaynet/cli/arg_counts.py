"""Docker's words for a verb given too few arguments, in place of argparse's.

argparse says `the following arguments are required: image, cmd` for `run`, naming the
optional command too (argparse counts a REMAINDER positional as required). docker counts:
`"docker run" requires at least 1 argument.` (cli.RequiresMinArgs) or `requires exactly N`
(cli.ExactArgs), then the help hint and the verb's usage line. Sans-IO: the parser's
positionals in, the text out.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

# argparse's own prefix for missing positionals (Lib/argparse.py, _parse_known_args).
REQUIRED_PREFIX = "the following arguments are required:"

# Verbs whose last positional is optional to argparse but that need it (docker's counts):
# `docker exec` requires at least 2 arguments, CONTAINER and COMMAND.
MIN_ARGS_OVERRIDE = {"exec": 2}


def _counts(actions: Iterable[argparse.Action]) -> tuple[int, bool] | None:
    """(the fewest positionals the verb takes, whether it takes more); None when a positional
    is a sub-command (argparse's own message fits those)."""
    least = 0
    variable = False
    for a in actions:
        if a.option_strings:
            continue
        if isinstance(a, argparse._SubParsersAction):
            return None
        if a.nargs is None:
            least += 1
        elif isinstance(a.nargs, int):
            least += a.nargs
        elif a.nargs == argparse.ONE_OR_MORE:
            least += 1
            variable = True
        else:  # "?", "*", REMAINDER
            variable = True
    return least, variable


# The parsers name a list of objects in the plural (`networks`); docker's usage lines name
# one and repeat it: `docker network rm NETWORK [NETWORK...]`,
# `docker inspect NAME|ID [NAME|ID...]`.
SINGULAR = {
    "CONTAINERS": "CONTAINER",
    "NETWORKS": "NETWORK",
    "NODES": "NODE",
    "SERVICES": "SERVICE",
    "OBJECTS": "NAME|ID",
}


def _usage_word(a: argparse.Action, command_required: bool = False) -> str:
    name = str(a.metavar or a.dest).upper()
    if a.metavar is None:
        name = SINGULAR.get(name, name)
    if a.nargs is None:
        return name
    if isinstance(a.nargs, int):
        return " ".join([name] * a.nargs)
    if a.nargs == argparse.ONE_OR_MORE:
        return f"{name} [{name}...]"
    if a.nargs == argparse.REMAINDER:
        # docker's usage lines say COMMAND where the parsers say cmd; a verb that needs it
        # (exec: MIN_ARGS_OVERRIDE) shows it without brackets, `CONTAINER COMMAND [ARG...]`.
        word = "COMMAND" if name == "CMD" else name
        return f"{word} [ARG...]" if command_required else f"[{word}] [ARG...]"
    if a.nargs == argparse.ZERO_OR_MORE:
        return f"[{name}...]"
    return f"[{name}]"


def usage_line(prog: str, actions: Iterable[argparse.Action]) -> str:
    """docker's `Usage:  docker run [OPTIONS] IMAGE [COMMAND] [ARG...]` for a verb."""
    acts = list(actions)
    words = [prog]
    if any(a.option_strings and a.dest != "help" for a in acts):
        words.append("[OPTIONS]")
    positionals = [a for a in acts if not a.option_strings]
    least = _counts(acts)
    needed = MIN_ARGS_OVERRIDE.get(prog.split()[-1], 0)
    # The override raises the count past what argparse requires: the optional tail is needed.
    command_required = least is not None and needed > least[0]
    words += [_usage_word(a, command_required) for a in positionals]
    return "Usage:  " + " ".join(words)


def requires_message(prog: str, actions: Iterable[argparse.Action]) -> str | None:
    """`"overlaynet run" requires at least 1 argument.` for a verb missing positionals, or
    None when argparse's message is the better one (a missing sub-command)."""
    counts = _counts(actions)
    if counts is None:
        return None
    least, variable = counts
    least = max(least, MIN_ARGS_OVERRIDE.get(prog.split()[-1], 0))
    how = "at least" if variable else "exactly"
    noun = "argument" if least == 1 else "arguments"
    return f'"{prog}" requires {how} {least} {noun}.'


def usage_error_text(prog: str, actions: Iterable[argparse.Action], message: str) -> str | None:
    """The whole stderr text docker prints for too few arguments, or None to keep argparse's
    message (not a missing-positional error, or one docker words the same)."""
    if not message.startswith(REQUIRED_PREFIX):
        return None
    acts = list(actions)
    if any(a.required and any(o in message for o in a.option_strings) for a in acts):
        return None  # a required flag (--token): argparse names it well
    head = requires_message(prog, acts)
    if head is None:
        return None
    return f"{head}\nSee '{prog} --help'.\n\n{usage_line(prog, acts)}\n"
