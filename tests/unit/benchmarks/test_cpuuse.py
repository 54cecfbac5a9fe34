"""benchmarks/cpuuse.py, what a transfer cost in CPU, on /proc texts read on the 2-core
Firecracker machine (kernel 6.18): sans-IO, no root."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

# benchmarks/ is a directory of scripts, not a package: its modules import each other by name.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
cpuuse = importlib.import_module("cpuuse")

# Two readings of /proc/stat one second apart (the intr line cut short): cpu0 spent 2 ticks in
# user and 99 idle, cpu1 100 idle.
STAT_BEFORE = """\
cpu  3536171 2983 1295755 7446208 10804 0 605282 1334 0 0
cpu0 1641893 1565 634144 3855381 2607 0 311167 654 0 0
cpu1 1894278 1417 661610 3590826 8197 0 294114 680 0 0
intr 220989213 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 1 13 0 0 0 0 13034 2833 0
ctxt 430722946
btime 1795969168
processes 2989485
procs_running 2
procs_blocked 0
softirq 1166023072 0 6740266 193476 1020965386 3141724 0 658655 9220560 105811920 19291085
"""
STAT_AFTER = """\
cpu  3536173 2983 1295755 7446406 10804 0 605282 1334 0 0
cpu0 1641895 1565 634144 3855480 2607 0 311167 654 0 0
cpu1 1894278 1417 661610 3590926 8197 0 294114 680 0 0
intr 220989356 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 1 13 0 0 0 0 13034 2833 0
ctxt 430722946
softirq 1166023072 0 6740266 193476 1020965386 3141724 0 658655 9220560 105811920 19291085
"""
# A process that named itself "a b) (c" (prctl PR_SET_NAME): utime 4, stime 1.
PID_STAT_ODD_COMM = (
    "6012 (a b) (c) R 6004 6004 3549 0 -1 4194304 2903 6589 0 0 4 1 2 1 20 0 1 0 6517361 "
    "17149952 3412 18446744073709551615 94768528609280 94768528609621 140732054368208 0 0 0 0 "
    "16781312 2 0 0 0 17 1 0 0 0 0 0 94768528620976 94768528621592 94768594497536 "
    "140732054374316 140732054374499 140732054374499 140732054376399 0\n"
)
# A two-thread Python process after it exited, not yet reaped: its 22 ticks of utime (both
# threads) are still there, which is what e2e_throughput reads for the iperf3 client.
PID_STAT_ZOMBIE = (
    "6108 (python3) Z 6067 6065 3549 0 -1 4227084 1943 0 0 0 22 0 0 0 20 0 1 0 6517811 0 0 "
    "18446744073709551615 0 0 0 0 0 0 0 16781312 0 1 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
)


def test_proc_stat_gives_each_cpu_and_leaves_out_the_sum_line() -> None:
    cpus = cpuuse.parse_proc_stat(STAT_BEFORE)
    assert list(cpus) == ["cpu0", "cpu1"]
    assert cpus["cpu0"] == cpuuse.CpuTimes(1641893, 1565, 634144, 3855381, 2607, 0, 311167, 654)


def test_shares_of_two_real_readings() -> None:
    split = cpuuse.shares(cpuuse.parse_proc_stat(STAT_BEFORE), cpuuse.parse_proc_stat(STAT_AFTER))
    assert split["cpu0"].user == pytest.approx(2 / 101)
    assert split["cpu0"].idle == pytest.approx(99 / 101)
    assert split["cpu0"].busy == pytest.approx(2 / 101)
    assert split["cpu1"].idle == 1.0
    assert split["cpu1"].busy == 0.0


def test_pid_stat_reads_utime_and_stime_after_a_comm_with_spaces_and_parentheses() -> None:
    assert cpuuse.parse_pid_stat(PID_STAT_ODD_COMM) == 5


def test_a_zombie_still_has_its_threads_cpu_time() -> None:
    assert cpuuse.parse_pid_stat(PID_STAT_ZOMBIE) == 22


@pytest.mark.parametrize(
    "text",
    ["", "6012 python3 R 1 2 3", PID_STAT_ZOMBIE[:50], PID_STAT_ZOMBIE.replace(" 22 ", " x ")],
)
def test_a_cut_or_garbled_pid_stat_is_refused(text: str) -> None:
    with pytest.raises(cpuuse.MalformedProcText):
        cpuuse.parse_pid_stat(text)


@pytest.mark.parametrize(
    "text", ["intr 1 2 3\n", "cpu 1 2 3 4 5 6 7 8\n", "cpu0 1 2 3\n", "cpu0 1 2 3 4 5 6 7 -8\n"]
)
def test_a_proc_stat_without_whole_cpu_lines_is_refused(text: str) -> None:
    with pytest.raises(cpuuse.MalformedProcText):
        cpuuse.parse_proc_stat(text)


def test_readings_that_cannot_be_a_before_and_after_are_refused() -> None:
    before, after = cpuuse.parse_proc_stat(STAT_BEFORE), cpuuse.parse_proc_stat(STAT_AFTER)
    with pytest.raises(cpuuse.MalformedProcText, match="backwards"):
        cpuuse.shares(after, before)
    with pytest.raises(cpuuse.MalformedProcText, match="no tick"):
        cpuuse.shares(before, before)
    with pytest.raises(cpuuse.MalformedProcText, match="CPUs"):
        cpuuse.shares(before, {"cpu0": after["cpu0"]})


def test_usage_counts_processes_in_shares_of_one_cpu_and_a_new_one_from_zero() -> None:
    ticks = cpuuse.CpuTimes(0, 0, 0, 0, 0, 0, 0, 0)
    # A 100-tick window: cpu0 all softirq, cpu1 half user half idle.
    before = cpuuse.Snapshot({"cpu0": ticks, "cpu1": ticks}, {"vtep o41": 1000})
    after = cpuuse.Snapshot(
        {"cpu0": cpuuse.CpuTimes(0, 0, 0, 0, 0, 0, 100, 0),
         "cpu1": cpuuse.CpuTimes(50, 0, 0, 50, 0, 0, 0, 0)},
        {"vtep o41": 1060, "iperf3 client": 30},
    )  # fmt: skip
    used = cpuuse.usage(before, after, gbps=3.0)
    assert used["cpu_busy_pct"] == pytest.approx(150)
    assert used["softirq_pct"] == pytest.approx(100)
    assert used["cpus"]["cpu1"]["user_pct"] == pytest.approx(50)
    assert used["processes_pct"] == {"vtep o41": pytest.approx(60), "iperf3 client": 30}
    assert used["path_pct"] == pytest.approx(90)
    assert used["gbps_per_busy_cpu"] == pytest.approx(2.0)


# kthreadd and ksoftirqd/0 (flags 0x208040, 0x4208040: PF_KTHREAD set) and a user process.
PID_STAT_KTHREADD = (
    "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 2 0 0 20 0 1 0 24 0 0 18446744073709551615 0 0 "
    "0 0 0 0 0 2147483647 0 1 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
)
PID_STAT_KSOFTIRQD = (
    "14 (ksoftirqd/0) S 2 0 0 0 -1 69238848 0 0 0 0 1 17802 0 0 20 0 1 0 24 0 0 "
    "18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
)


def test_kernel_threads_are_told_from_processes() -> None:
    assert cpuuse.is_kernel_thread(PID_STAT_KTHREADD)
    assert cpuuse.is_kernel_thread(PID_STAT_KSOFTIRQD)
    assert cpuuse.parse_pid_stat(PID_STAT_KSOFTIRQD) == 17803
    assert not cpuuse.is_kernel_thread(PID_STAT_ODD_COMM)
    assert not cpuuse.is_kernel_thread(PID_STAT_ZOMBIE)
    with pytest.raises(cpuuse.MalformedProcText):
        cpuuse.is_kernel_thread("14 (ksoftirqd/0) S 2 0")


def test_other_processes_count_from_zero_when_new_and_not_at_all_when_gone() -> None:
    zero = cpuuse.CpuTimes(0, 0, 0, 0, 0, 0, 0, 0)
    window = cpuuse.CpuTimes(0, 0, 0, 100, 0, 0, 0, 0)
    before = cpuuse.Snapshot({"cpu0": zero}, {}, {10: 500, 11: 7, 13: 3}, {14: 17000})
    after = cpuuse.Snapshot(
        {"cpu0": window}, {}, {10: 540, 12: 25, 13: 3}, {14: 17010},
        {10: "pytest", 12: "iperf3", 13: "sleep"},
    )  # fmt: skip
    used = cpuuse.usage(before, after, 1.0)
    assert used["others_pct"] == pytest.approx(40 + 25)  # pid 11 ended: not seen
    assert used["kernel_threads_pct"] == pytest.approx(10)
    assert used["others_top"] == {"pytest[10]": pytest.approx(40), "iperf3[12]": 25}


def test_comm_is_read_whole_even_with_parentheses_in_it() -> None:
    assert cpuuse.parse_comm(PID_STAT_ODD_COMM) == "a b) (c"
    assert cpuuse.parse_comm(PID_STAT_KSOFTIRQD) == "ksoftirqd/0"
    with pytest.raises(cpuuse.MalformedProcText):
        cpuuse.parse_comm("6012 python3 R 1 2 3")


def test_a_process_whose_time_went_backwards_is_refused() -> None:
    ticks = cpuuse.parse_proc_stat(STAT_BEFORE), cpuuse.parse_proc_stat(STAT_AFTER)
    with pytest.raises(cpuuse.MalformedProcText, match="vtep"):
        cpuuse.usage(cpuuse.Snapshot(ticks[0], {"vtep": 10}),
                     cpuuse.Snapshot(ticks[1], {"vtep": 9}), 1.0)  # fmt: skip


def test_an_idle_window_has_no_gbps_per_busy_cpu() -> None:
    idle = cpuuse.CpuTimes(0, 0, 0, 0, 0, 0, 0, 0)
    used = cpuuse.usage(
        cpuuse.Snapshot({"cpu0": idle}, {}),
        cpuuse.Snapshot({"cpu0": cpuuse.CpuTimes(0, 0, 0, 100, 0, 0, 0, 0)}, {}),
        0.0,
    )
    assert used["cpu_busy_pct"] == 0
    assert math.isnan(used["gbps_per_busy_cpu"])


DELTA = st.integers(min_value=0, max_value=10**6)
CPU_DELTAS = st.lists(DELTA, min_size=8, max_size=8).filter(lambda d: sum(d) > 0)


@given(st.lists(CPU_DELTAS, min_size=1, max_size=8), st.integers(min_value=0, max_value=10**9))
def test_each_cpus_shares_add_up_to_its_window(deltas: list[list[int]], base: int) -> None:
    before = {f"cpu{i}": cpuuse.CpuTimes(*[base] * 8) for i in range(len(deltas))}
    after = {f"cpu{i}": cpuuse.CpuTimes(*(base + v for v in d)) for i, d in enumerate(deltas)}
    text = "".join(
        f"{c} {' '.join(str(v) for v in vars(t).values())} 0 0\n" for c, t in after.items()
    )
    assert cpuuse.parse_proc_stat(text) == after
    split = cpuuse.shares(before, after)
    for cpu, d in zip(split, deltas, strict=True):
        s = split[cpu]
        assert s.busy + s.idle + s.steal == pytest.approx(1.0)
        assert s.busy == pytest.approx((d[0] + d[1] + d[2] + d[5] + d[6]) / sum(d))
    used = cpuuse.usage(cpuuse.Snapshot(before, {}), cpuuse.Snapshot(after, {}), 1.0)
    assert used["cpu_busy_pct"] == pytest.approx(100 * sum(s.busy for s in split.values()))
    assert 0 <= used["cpu_busy_pct"] <= 100 * len(deltas) + 1e-9
