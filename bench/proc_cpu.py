"""CPU-seconds of a process tree from /proc/PID/stat, and the per-million arithmetic.

A tree's CPU is utime + stime of every living process in it plus cutime + cstime of each (the time
of children it has already reaped): gunicorn's workers, Beam's helpers and short-lived children
are all counted, each once.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcStatError(ValueError):
    """A /proc/PID/stat line that does not have the expected fields."""


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    utime: int  # clock ticks, this process's own threads
    stime: int
    cutime: int  # clock ticks of children it has waited for
    cstime: int

    @property
    def ticks(self) -> int:
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """One /proc/PID/stat line. The command name (field 2) may hold spaces and ')', so the fields
    are counted from its last ')'."""
    head, sep, tail = text.rpartition(")")
    fields = tail.split()
    if not sep or len(fields) < 15:
        raise ProcStatError(f"not a /proc/PID/stat line: {text[:80]!r}")
    try:
        pid = int(head.split("(", 1)[0])
        # tail starts at field 3 (state): ppid is field 4, utime..cstime are fields 14-17
        return ProcStat(pid=pid, ppid=int(fields[1]), utime=int(fields[11]), stime=int(fields[12]),
                        cutime=int(fields[13]), cstime=int(fields[14]))
    except ValueError as exc:
        raise ProcStatError(f"not a /proc/PID/stat line: {text[:80]!r}") from exc


def tree_ticks(stats: list[ProcStat], root: int) -> int:
    """Clock ticks of `root` and every descendant in `stats` (a snapshot of all processes)."""
    children: dict[int, list[ProcStat]] = {}
    by_pid = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat)
        by_pid[stat.pid] = stat
    if root not in by_pid:
        return 0
    total, todo = 0, [by_pid[root]]
    while todo:
        current = todo.pop()
        total += current.ticks
        todo += children.get(current.pid, [])
    return total


def snapshot() -> list[ProcStat]:
    """Every process's stat line now; processes that exit while being read are skipped."""
    stats = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ProcStatError):
                stats.append(parse_stat((entry / "stat").read_text()))
    return stats


def tree_cpu_seconds(root: int, stats: list[ProcStat] | None = None) -> float:
    return tree_ticks(stats if stats is not None else snapshot(), root) / CLOCK_TICKS


def per_million(cpu_seconds: float, samples: int) -> float:
    """CPU-seconds per 1 M samples; NaN when nothing was counted (never a division by zero)."""
    return cpu_seconds * 1e6 / samples if samples > 0 else float("nan")


def ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else float("nan")
