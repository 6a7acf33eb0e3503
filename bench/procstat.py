"""CPU time and peak memory of a process tree, read from /proc (no psutil).

`/proc/<pid>/stat` gives the parent id and the user and system CPU time in clock ticks;
`/proc/<pid>/status` gives `VmHWM`, the peak resident set size. A tree is every process whose
parent chain reaches the root, plus any process whose command line names a marker (the run's
data folder): PostgreSQL's server processes are started detached from the harness's tree.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    pid: int
    ppid: int
    pgid: int
    name: str
    cpu_s: float
    peak_rss_mb: float


def _read_stat(pid: int) -> tuple[int, int, float, str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name sits in parentheses and may itself hold spaces or parentheses.
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    ppid, pgid = int(fields[1]), int(fields[2])
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    return ppid, pgid, cpu, comm


def _peak_rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _label(argv: list[str], comm: str) -> str:
    """A short readable name: the paygate subcommand, uvicorn's app, or the program's name."""
    if "-c" in argv and any("resource_tracker" in a for a in argv):
        return "multiprocessing resource tracker"
    if "-c" in argv and any("multiprocessing" in a for a in argv):
        return "server worker"
    for marker in ("paygate.cli", "paygate"):
        for i, arg in enumerate(argv):
            if arg == marker or arg.endswith("/bin/" + marker):
                rest = [a for a in argv[i + 1 : i + 3] if not a.startswith("-")]
                return "paygate " + " ".join(rest)
    for arg in argv:
        if arg.endswith(":create_app") or arg.endswith("peer_localstripe.py"):
            return Path(arg).name.split(":")[0]
    return comm


def pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def tree(root: int, marker: str | None = None, extra: tuple[int, ...] = ()) -> list[ProcSample]:
    """Every live process under `root` (and those whose command line holds `marker`, and the
    `extra` ones, such as a server that renames itself)."""
    stats: dict[int, tuple[int, int, float, str]] = {}
    for pid in pids():
        st = _read_stat(pid)
        if st is not None:
            stats[pid] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in stats.items():
        children.setdefault(ppid, []).append(pid)
    chosen: set[int] = set()
    todo = [p for p in (root, *extra) if p in stats]
    if marker:
        todo += [p for p in stats if p != os.getpid() and any(marker in a for a in _cmdline(p))]
    while todo:
        pid = todo.pop()
        if pid in chosen:
            continue
        chosen.add(pid)
        todo.extend(children.get(pid, []))
    out = []
    for pid in sorted(chosen):
        ppid, pgid, cpu, comm = stats[pid]
        out.append(ProcSample(pid, ppid, pgid, _label(_cmdline(pid), comm), cpu, _peak_rss_mb(pid)))
    return out


def delta(before: list[ProcSample], after: list[ProcSample]) -> list[dict[str, Any]]:
    """CPU seconds spent by each process between two samples (a new process counts from 0)."""
    start = {p.pid: p.cpu_s for p in before}
    return [
        {
            "pid": p.pid,
            "name": p.name,
            "cpu_s": round(p.cpu_s - start.get(p.pid, 0.0), 3),
            "peak_rss_mb": round(p.peak_rss_mb, 1),
        }
        for p in after
    ]
