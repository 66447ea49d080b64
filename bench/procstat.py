"""CPU, page faults and memory of a process and everything it forked, read from /proc."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    """Cumulative counters at one moment; two of them give a window's rates."""

    when: float
    user: float
    system: float
    faults: int
    processes: int = 1

    def rates(self, start: Usage) -> dict[str, float]:
        wall = self.when - start.when
        user, system = self.user - start.user, self.system - start.system
        cpu = user + system
        return {
            "cpu_pct": round(100 * cpu / wall, 1) if wall > 0 else 0.0,
            "kernel_pct": round(100 * system / cpu, 1) if cpu > 0 else 0.0,
            "faults_per_s": round((self.faults - start.faults) / wall) if wall > 0 else 0,
        }


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 onwards)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_usage(root: int) -> Usage:
    """Counters summed over the live tree, including its reaped children (cutime and so on)."""
    user = system = 0
    faults = count = 0
    now = time.monotonic()
    for pid in tree(root):
        fields = _stat(pid)
        if fields is None:
            continue
        count += 1
        faults += sum(int(fields[i]) for i in (7, 8, 9, 10))  # minflt cminflt majflt cmajflt
        user += int(fields[11]) + int(fields[13])  # utime + cutime
        system += int(fields[12]) + int(fields[14])  # stime + cstime
    return Usage(now, user / CLK_TCK, system / CLK_TCK, faults, count)


def self_usage() -> Usage:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return Usage(time.monotonic(), ru.ru_utime, ru.ru_stime, ru.ru_minflt + ru.ru_majflt)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def nofile(pid: int) -> int:
    """The soft limit on open descriptors of ``pid``."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


def pss_tree(root: int) -> tuple[int, int]:
    """(PSS in bytes summed over the tree, number of processes)."""
    total = count = 0
    for pid in tree(root):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        count += 1
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
                break
    return total, count


class Probe:
    """CPU and page faults of the load client (this process), the server and the targets over
    one measurement window, opened by :meth:`start` and closed by :meth:`stop`."""

    def __init__(self, server_pid: int | None, targets_pid: int) -> None:
        self.server_pid = server_pid
        self.targets_pid = targets_pid
        self._start: tuple[Usage, Usage | None, Usage] | None = None
        self.result: dict[str, dict[str, float]] = {}

    def _now(self) -> tuple[Usage, Usage | None, Usage]:
        server = tree_usage(self.server_pid) if self.server_pid else None
        return self_usage(), server, tree_usage(self.targets_pid)

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> None:
        assert self._start is not None, "stop() before start()"
        client, server, targets = self._now()
        client0, server0, targets0 = self._start
        self.result = {"client": client.rates(client0), "targets": targets.rates(targets0)}
        if server is not None and server0 is not None:
            self.result["server"] = server.rates(server0)
