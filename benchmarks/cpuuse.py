"""What a benchmark's transfer cost in CPU (issue 15), from /proc text read before and after it:
each CPU's busy share split as /proc/stat splits it, and the share of the path's own processes
(VTEPs, iperf3s) from /proc/<pid>/stat. Sans-IO: the texts come in as strings, the reading is in
e2e_throughput.py; shares are fractions of the same window, so no wall clock is needed.

Both files count in USER_HZ ticks (proc(5): /proc/stat in USER_HZ, utime/stime in clock ticks,
sysconf(_SC_CLK_TCK), which is USER_HZ); a CPU line's total growth is the window's length.

How to read the figures on this machine's kernel (6.18-fc: CONFIG_TICK_CPU_ACCOUNTING, no
IRQ_TIME_ACCOUNTING, HZ 250): every tick is charged to what it interrupted, so softirq work run
while a process was current counts in /proc/stat's softirq column AND in that process's stime
(kernel/sched/cputime.c, account_system_time): `softirq_pct` and `path_pct` overlap and do not
add up. The system-wide shares also hold whatever else ran on the machine in the window. An idle
CPU that polls (cpuidle state POLL, e.g. under a /dev/cpu_dma_latency of 0) counts as idle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The columns of a /proc/stat "cpuN" line that this module reads, in order (proc(5)); guest
#: and guest_nice follow but are already counted in user and nice, so adding them would count
#: a guest's time twice.
STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
#: /proc/<pid>/stat after the ")" that ends comm: field 3 (state) is index 0, so utime
#: (field 14) and stime (field 15) are 11 and 12 (proc(5)).
UTIME, STIME = 11, 12
#: How many of the busiest other processes `usage` names.
TOP_OTHERS = 3
#: Field 9 (flags), index 6 after ")"; PF_KTHREAD marks a kernel thread (include/linux/sched.h).
FLAGS, PF_KTHREAD = 6, 0x00200000


class MalformedProcText(ValueError):
    """A /proc text this module cannot read, or two that cannot be a before and an after."""


@dataclass(frozen=True)
class CpuTimes:
    """One "cpuN" line of /proc/stat: ticks spent in each state since boot."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int

    @property
    def total(self) -> int:
        return (self.user + self.nice + self.system + self.idle + self.iowait + self.irq
                + self.softirq + self.steal)  # fmt: skip


@dataclass(frozen=True)
class CpuShares:
    """Where one CPU's window went, each a fraction of it; nice counts as user, iowait as idle
    (nothing ran), steal (the host ran something else on this vCPU) is neither busy nor idle."""

    user: float
    system: float
    softirq: float
    irq: float
    idle: float
    steal: float

    @property
    def busy(self) -> float:
        return self.user + self.system + self.softirq + self.irq


@dataclass(frozen=True)
class Snapshot:
    """What `usage` compares: /proc/stat's CPU lines, named processes' utime + stime and, by
    pid, that of every other process (`others`) and kernel thread (`kernel_threads`) alive."""

    cpus: dict[str, CpuTimes]
    processes: dict[str, int]
    others: dict[int, int] = field(default_factory=dict)
    kernel_threads: dict[int, int] = field(default_factory=dict)
    #: comm of the pids in `others`, to name the busiest (`usage`'s `others_top`).
    comms: dict[int, str] = field(default_factory=dict)


def parse_proc_stat(text: str) -> dict[str, CpuTimes]:
    """The per-CPU lines ("cpu0", "cpu1", ...; not the "cpu" sum) of a /proc/stat text."""
    cpus: dict[str, CpuTimes] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit():
            continue
        values = rest.split()
        if len(values) < len(STAT_FIELDS) or not all(v.isdigit() for v in values):
            raise MalformedProcText(f"/proc/stat line {line!r}")
        cpus[name] = CpuTimes(*(int(v) for v in values[: len(STAT_FIELDS)]))
    if not cpus:
        raise MalformedProcText("/proc/stat has no cpuN line")
    return cpus


def parse_pid_stat(text: str) -> int:
    """utime + stime of a /proc/<pid>/stat text, in ticks: for a process (the thread group
    leader's file) the sum over all its threads, dead ones included; a zombie still has it.
    comm may hold spaces and parentheses, so the fields are counted from its last ")"."""
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) <= STIME:
        raise MalformedProcText(f"/proc/<pid>/stat text {text[:80]!r}")
    try:
        return int(fields[UTIME]) + int(fields[STIME])
    except ValueError:
        raise MalformedProcText(
            f"/proc/<pid>/stat utime/stime {fields[UTIME : STIME + 1]}"
        ) from None


def parse_comm(text: str) -> str:
    """The command name of a /proc/<pid>/stat text: between the first "(" and the last ")"."""
    head, paren, _ = text.rpartition(")")
    _, open_, comm = head.partition("(")
    if not paren or not open_:
        raise MalformedProcText(f"/proc/<pid>/stat text {text[:80]!r}")
    return comm


def is_kernel_thread(text: str) -> bool:
    """Whether a /proc/<pid>/stat text is a kernel thread's (ksoftirqd, kworker, ...)."""
    fields = text.rpartition(")")[2].split()
    if len(fields) <= FLAGS or not fields[FLAGS].isdigit():
        raise MalformedProcText(f"/proc/<pid>/stat text {text[:80]!r}")
    return bool(int(fields[FLAGS]) & PF_KTHREAD)


def _grown(before: dict[int, int], after: dict[int, int]) -> int:
    """Ticks the pids alive at the end spent in the window (a pid new in it: since it began;
    one gone by then is not seen, nor is a pid reused in between)."""
    return sum(max(0, spent - before.get(pid, 0)) for pid, spent in after.items())


def _busiest(before: Snapshot, after: Snapshot, ticks: float) -> dict[str, float]:
    """The TOP_OTHERS other processes that spent most in the window, in % of one CPU."""
    grew = {pid: spent - before.others.get(pid, 0) for pid, spent in after.others.items()}
    top = sorted((g, pid) for pid, g in grew.items() if g > 0)[-TOP_OTHERS:]
    return {f"{after.comms.get(pid, '?')}[{pid}]": 100 * g / ticks for g, pid in reversed(top)}


def shares(before: dict[str, CpuTimes], after: dict[str, CpuTimes]) -> dict[str, CpuShares]:
    """Each CPU's split of the window between two /proc/stat readings."""
    if before.keys() != after.keys():
        raise MalformedProcText(f"CPUs {sorted(before)} before, {sorted(after)} after")
    split: dict[str, CpuShares] = {}
    for cpu, b in before.items():
        a = after[cpu]
        d = {f: getattr(a, f) - getattr(b, f) for f in STAT_FIELDS}
        if any(v < 0 for v in d.values()):
            raise MalformedProcText(f"{cpu}: a counter went backwards: {d}")
        total = sum(d.values())
        if total == 0:
            raise MalformedProcText(f"{cpu}: no tick between the two readings")
        split[cpu] = CpuShares(
            user=(d["user"] + d["nice"]) / total,
            system=d["system"] / total,
            softirq=d["softirq"] / total,
            irq=d["irq"] / total,
            idle=(d["idle"] + d["iowait"]) / total,
            steal=d["steal"] / total,
        )
    return split


def window_ticks(before: dict[str, CpuTimes], after: dict[str, CpuTimes]) -> float:
    """The window's length in ticks: the mean growth of the CPU lines' totals."""
    growth = [after[c].total - before[c].total for c in before]
    return sum(growth) / len(growth)


def usage(before: Snapshot, after: Snapshot, gbps: float) -> dict[str, Any]:
    """The CPU a transfer of `gbps` used between two snapshots, in % of one CPU (a 2-core machine
    has 200 %): `cpu_busy_pct` all CPUs' busy share, `softirq_pct` its softirq part, `cpus` each
    CPU's split, `processes_pct` each named process (0 before if it started in the window) and
    `path_pct` their sum, `others_pct` and `kernel_threads_pct` what other processes and the
    kernel threads spent (a sign of load from elsewhere; ksoftirqd is softirq work too), and
    `others_top` the busiest of those processes ("comm[pid]"), and `gbps_per_busy_cpu`: Gbit/s
    per fully busy CPU."""
    split = shares(before.cpus, after.cpus)
    ticks = window_ticks(before.cpus, after.cpus)
    processes: dict[str, float] = {}
    for name, spent in after.processes.items():
        grew = spent - before.processes.get(name, 0)
        if grew < 0:
            raise MalformedProcText(f"{name}: CPU time went backwards ({grew} ticks)")
        processes[name] = 100 * grew / ticks
    busy = sum(s.busy for s in split.values())
    return {
        "cpu_busy_pct": 100 * busy,
        "softirq_pct": 100 * sum(s.softirq for s in split.values()),
        "cpus": {
            cpu: {
                "user_pct": 100 * s.user,
                "system_pct": 100 * s.system,
                "softirq_pct": 100 * s.softirq,
                "irq_pct": 100 * s.irq,
                "idle_pct": 100 * s.idle,
                "steal_pct": 100 * s.steal,
            }
            for cpu, s in split.items()
        },
        "processes_pct": processes,
        "path_pct": sum(processes.values()),
        "others_pct": 100 * _grown(before.others, after.others) / ticks,
        "kernel_threads_pct": 100 * _grown(before.kernel_threads, after.kernel_threads) / ticks,
        "others_top": _busiest(before, after, ticks),
        "gbps_per_busy_cpu": gbps / busy if busy > 0 else float("nan"),
    }
