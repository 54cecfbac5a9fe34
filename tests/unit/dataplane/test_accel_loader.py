"""The loader of the optional C helpers (`dataplane.accel`): it builds and loads the egress
helper, and falls back to None with a reason when switched off or when the build fails. Each
test builds into its own temporary directory (the shared `_built` one is never touched)."""

from __future__ import annotations

import ctypes
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlaynet.dataplane import accel, fastegress, fastingress
from overlaynet.dataplane.vtep import Vtep


@pytest.fixture
def private_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty build directory of this test's own, and a clean per-process cache."""
    builds = tmp_path / "built"
    monkeypatch.setattr(accel, "build_dirs", lambda: [builds])
    accel.forget()
    yield builds
    accel.forget()


@pytest.mark.skipif(accel.compiler() is None, reason="no C compiler on this machine")
def test_the_egress_helper_builds_and_loads(private_builds: Path) -> None:
    lib = accel.load("egress")
    assert lib is not None, accel.why_not("egress")
    assert accel.why_not("egress") == ""
    assert [p.name for p in private_builds.iterdir()] == [accel.library_name("egress")]
    assert lib.eg_abi() == fastegress.ABI


def test_off_in_the_environment_gives_none_and_says_why(
    private_builds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(accel.ENV_SWITCH, "off")
    assert accel.load("egress") is None
    assert "off" in accel.why_not("egress")
    assert not private_builds.exists()  # nothing was built
    assert fastegress.FastEgress.create() == (None, accel.why_not("egress"))


def test_a_failing_compiler_gives_none_and_build_failed(
    private_builds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", "/bin/false")
    assert accel.load("egress") is None
    assert accel.why_not("egress").startswith("build failed")
    assert not any(private_builds.iterdir())  # the failed build left no file behind


def test_a_broken_source_does_not_load(
    private_builds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper that does not compile warning-free (-Werror) is not loaded."""
    if accel.compiler() is None:
        pytest.skip("no C compiler on this machine")
    sources = tmp_path / "src"
    sources.mkdir()
    (sources / "egress.c").write_text("int eg_abi(void) { int unused; return 1; }\n")
    monkeypatch.setattr(accel, "SOURCE_DIR", sources)
    assert accel.load("egress") is None
    assert "build failed" in accel.why_not("egress")
    assert "unused" in accel.why_not("egress")


def test_vtep_accel_on_fails_at_start_with_the_loaders_reason(
    private_builds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", "/bin/false")
    with pytest.raises(RuntimeError, match="build failed"):
        Vtep("127.0.0.2", 0, source_sockets=1, accel="on")


def test_vtep_accel_auto_falls_back_to_python_and_says_why(
    private_builds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(accel.ENV_SWITCH, "off")
    with Vtep("127.0.0.2", 0, source_sockets=1) as vtep:
        assert vtep.accel_reason.startswith("off")
        assert vtep._loop.fast_egress is None


def test_vtep_accel_off_and_unknown_values(private_builds: Path) -> None:
    with Vtep("127.0.0.2", 0, source_sockets=1, accel="off") as vtep:
        assert vtep._loop.fast_egress is None
        assert vtep.accel_reason == "--accel off"
        # --accel off is off for the receive path's C drain too.
        assert fastingress.describe(vtep._loop) == "python ingress (off)"
    with pytest.raises(ValueError, match="accel"):
        Vtep("127.0.0.2", 0, source_sockets=1, accel="fast")


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
def test_vtep_accel_auto_uses_the_c_drain(private_builds: Path) -> None:
    with Vtep("127.0.0.2", 0, source_sockets=1) as vtep:
        assert vtep._loop.fast_egress is not None
        assert vtep.accel_reason == ""


def test_a_new_build_removes_the_builds_of_earlier_sources(
    private_builds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each edit of a helper's source makes a new library; the earlier ones are removed when
    it is built, other helpers' libraries are left alone."""
    if accel.compiler() is None:
        pytest.skip("no C compiler on this machine")
    sources = tmp_path / "src"
    sources.mkdir()
    monkeypatch.setattr(accel, "SOURCE_DIR", sources)
    (sources / "egress.c").write_text("int eg_abi(void) { return 1; }\n")
    first = accel.build("egress")
    private_builds.joinpath("ingress-0123456789abcdef-x86_64.so").write_bytes(b"")
    (sources / "egress.c").write_text("int eg_abi(void) { return 2; }\n")
    second = accel.build("egress")
    assert second != first
    assert sorted(p.name for p in private_builds.iterdir()) == sorted(
        [second.name, "ingress-0123456789abcdef-x86_64.so"]
    )


@pytest.mark.skipif(accel.compiler() is None, reason="no C compiler on this machine")
def test_extra_flags_build_beside_the_normal_build_and_never_prune_it(
    private_builds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test's sanitizer build (`ENV_CFLAGS`) gets a name of its own: the normal build other
    processes load stays, and building the normal one again leaves the other too."""
    assert accel.load("egress") is not None
    normal = accel.library_name("egress")
    monkeypatch.setenv(accel.ENV_CFLAGS, "-O1 -DONET_HZ_EXTRA=1")
    accel.forget()
    extra = accel.library_name("egress")
    assert extra != normal and extra.startswith("egress+")
    assert accel.load("egress") is not None, accel.why_not("egress")
    assert sorted(p.name for p in private_builds.iterdir()) == sorted([normal, extra])
    monkeypatch.delenv(accel.ENV_CFLAGS)
    accel.forget()
    private_builds.joinpath(normal).unlink()  # rebuilt: its prune must spare the other
    assert accel.load("egress") is not None
    assert sorted(p.name for p in private_builds.iterdir()) == sorted([normal, extra])


@pytest.mark.skipif(accel.compiler() is None, reason="no C compiler on this machine")
def test_an_edited_header_rebuilds_the_helper(
    private_builds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper's build is keyed by the headers beside it as well as by its source: after an
    edit of a header it includes, the helper is built again and has the header's new code."""
    sources = tmp_path / "src"
    sources.mkdir()
    monkeypatch.setattr(accel, "SOURCE_DIR", sources)
    (sources / "egress.c").write_text('#include "common.h"\nint eg_abi(void) { return ABI; }\n')
    (sources / "common.h").write_text("#define ABI 1\n")
    first = accel.build("egress")
    (sources / "common.h").write_text("#define ABI 2\n")
    second = accel.build("egress")
    assert second != first
    assert ctypes.CDLL(str(second)).eg_abi() == 2
