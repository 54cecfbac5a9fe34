"""test_accel_hostile again with the C helpers built under AddressSanitizer and
UndefinedBehaviorSanitizer (`accel.ENV_CFLAGS`), in a subprocess with the ASan runtime
preloaded (a sanitized library cannot be loaded into a plain Python otherwise): one
out-of-bounds read or write, one overflow the hostile bytes provoke, and the run fails with
the sanitizer's report. A control first proves the sanitizer is armed: an overflow made on
purpose is reported. Skipped, saying why, without a compiler or the ASan runtime (Debian
package libasan8, which gcc pulls in)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from overlaynet.dataplane import accel

ROOT = Path(__file__).resolve().parents[3]
SANITIZE = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
#: Leaks are Python's own (interned objects at exit), not the helpers': not checked.
ASAN_OPTIONS = "detect_leaks=0:abort_on_error=0:exitcode=86"
#: Bounds a hang only (the sanitized run takes well under a minute).
TIMEOUT = 300.0
#: Fewer examples than the plain run: each is several times slower under the sanitizers.
EXAMPLES = "40"
REPORTS = ("ERROR: AddressSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


def _runtime() -> str | None:
    """The ASan runtime's path, or None."""
    cc = accel.compiler()
    if cc is None:
        return None
    found = subprocess.run(
        [cc, "-print-file-name=libasan.so"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return found if os.path.isabs(found) and os.path.exists(found) else None


RUNTIME = _runtime()
pytestmark = [
    pytest.mark.skipif(accel.compiler() is None, reason="no C compiler (Debian package gcc)"),
    pytest.mark.skipif(RUNTIME is None, reason="no ASan runtime (Debian package libasan8)"),
]


def _env(builds: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            accel.ENV_CFLAGS: SANITIZE,
            "LD_PRELOAD": RUNTIME or "",
            "ASAN_OPTIONS": ASAN_OPTIONS,
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
            "ONET_HZ_BUILDS": str(builds),
            "ONET_HZ_EXAMPLES": EXAMPLES,
        }
    )
    env.pop(accel.ENV_SWITCH, None)
    return env


CONTROL = """
import ctypes, sys
from pathlib import Path
from overlaynet.dataplane import accel
accel.build_dirs = lambda: [Path(sys.argv[1])]
lib = accel.load("egress")
assert lib is not None, accel.why_not("egress")
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
state = ctypes.create_string_buffer(lib.eg_state_size())
ctypes.c_uint32.from_buffer(state, 8).value = 1  # cur.count: one frame in the open batch
ev = libc.malloc(4)  # room for one event word: the batch takes four
lib.eg_flush(state, ctypes.c_void_p(libc.malloc(64)), ctypes.c_void_p(libc.malloc(64)), 0,
             ctypes.c_void_p(ev))
print("not caught")
"""


def _sanitized_run_was_clean(done: subprocess.CompletedProcess[str], builds: Path) -> set[str]:
    """Assert a sanitized test run gave no report, passed and skipped nothing; return the
    helpers whose sanitized (tagged) builds it loaded from `builds`, this test's directory."""
    output = done.stdout + done.stderr
    for report in REPORTS:
        assert report not in output, output[-4000:]
    assert done.returncode == 0, output[-4000:]
    assert "passed" in done.stdout and "skipped" not in done.stdout, output[-2000:]
    names = {p.name.split("-")[0] for p in builds.glob("*.so")}
    return {n.split("+")[0] for n in names if "+" in n}


def test_the_sanitizer_reports_an_overflow_made_on_purpose(tmp_path: Path) -> None:
    """The control: without it, a sanitizer that is not armed would pass everything."""
    done = subprocess.run(
        [sys.executable, "-c", CONTROL, str(tmp_path)],
        cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert "not caught" not in done.stdout
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in done.stderr, done.stderr[-3000:]
    assert "eg_flush" in done.stderr or "emit" in done.stderr


def test_hostile_input_under_asan_and_ubsan_gives_no_report(tmp_path: Path) -> None:
    builds = tmp_path / "built"
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
            "tests/unit/dataplane/test_accel_hostile.py",
            # The MAC tables: egress.c's destinations and the source-MAC slots (common.h).
            "tests/unit/dataplane/test_fastegress_routes.py",
            "tests/unit/dataplane/test_fastingress_slots.py",
            # The real TAP too where it can run (root: it skips itself otherwise).
            *(["tests/unit/dataplane/test_accel_hostile_tap.py"] if os.geteuid() == 0 else []),
        ],
        cwd=ROOT, env=_env(builds), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert _sanitized_run_was_clean(done, builds) == {"egress", "ingress"}


#: The offload helper's equivalence tests (chunks reordered, duplicated, lost, truncated, mixed
#: with junk, from strangers; the egress chunking; the source-MAC slots shared with ingress.c in
#: common.h, more MACs than slots included) with the helper built here, sanitized.
OFFLOAD_RUN = """
import sys
from pathlib import Path
from overlaynet.dataplane import accel
accel.build_dirs = lambda: [Path(sys.argv[1])]
import pytest
sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider",
                      "tests/unit/dataplane/test_fastoffload.py",
                      "tests/unit/dataplane/test_fastoffload_egress.py",
                      "tests/unit/dataplane/test_fastoffload_slots.py"]))
"""


def test_offload_helper_under_asan_and_ubsan_gives_no_report(tmp_path: Path) -> None:
    """offload.c reads datagrams any underlay host can send to the offload port: its
    equivalence tests' hostile chunks run clean under the sanitizers too."""
    builds = tmp_path / "built"
    builds.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", OFFLOAD_RUN, str(builds)],
        cwd=ROOT, env=_env(builds), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert "offload" in _sanitized_run_was_clean(done, builds)
