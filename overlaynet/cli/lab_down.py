"""`lab down`: a lab that is not there is said so (exit 1) with the labs there are.

`lab down --name nosuchlab` printed `lab nosuchlab: removed 0 namespaces` and exited 0, so a
mistyped name looked like a lab taken down while the real one kept running. A name counts as a
lab when it has namespaces, a state folder or a run folder (what `lab.down` removes).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from overlaynet.names import BadName, check_lab_name
from overlaynet.paths import run_root

# Exit status for a lab that is not there (docker's for a daemon error: nothing was done).
EXIT_NO_SUCH_LAB = 1


def no_such_lab(name: str, labs: Sequence[str]) -> str:
    """The error for a lab that is not on this machine, naming the ones that are."""
    if not labs:
        return f"overlaynet: no lab named {name}: there are no labs on this machine"
    return (
        f"overlaynet: no lab named {name}; the labs on this machine are: {', '.join(labs)} "
        "(lab ls shows their hosts)"
    )


def run(name: str, every: bool) -> int:
    """Take down lab `name` (or every lab): one `removed N namespaces` line each."""
    from overlaynet import lab

    try:
        check_lab_name(name)
    except BadName as e:
        print(e, file=sys.stderr)
        return EXIT_NO_SUCH_LAB
    labs = lab.all_labs()
    if every:
        names = labs
    elif name in labs or (run_root() / name).exists():
        names = [name]
    else:
        print(no_such_lab(name, labs), file=sys.stderr)
        return EXIT_NO_SUCH_LAB
    for each in names:
        print(f"lab {each}: removed {lab.down(each)} namespaces")
    return 0
