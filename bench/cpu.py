"""CPU seconds a measured step costs this machine's client (this process and its children, e.g.
the ``aws`` CLI) and the local S3 server: the server shares the cores here, unlike S3 in
production, so a ratio of wall times mixes both; these say which side the time went to."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


def _stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (``fields[2]``: process group)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu(fields: list[str]) -> float:
    """User + system CPU seconds, the process's and its waited-for children's."""
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children (``/proc``)."""
    return _cpu(_stat(pid))


def _group(pgid: int) -> Iterator[tuple[Path, list[str]]]:
    """``/proc/<pid>`` and its stat fields for every live process of a process group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(entry.name)
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:
            yield entry, fields


def group_cpu(pgid: int) -> float:
    """The same, summed over every live process of a process group (a daemon, its code server
    and the run processes, with the children each has already reaped)."""
    return sum(_cpu(fields) for _, fields in _group(pgid))


def _own_cpu(fields: list[str]) -> float:
    """User + system CPU seconds of the process itself (not its children)."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class GroupCpuSampler:
    """Samples every process of a process group every ``every`` seconds and keeps each one's
    own CPU seconds, so the group's CPU splits by kind (``classify(cmdline)``: daemon, code
    server, run). A process that exits between two samples loses at most ``every`` seconds
    of CPU from the split (the group total of :func:`group_cpu` still counts it)."""

    def __init__(self, pgid: int, classify: Callable[[str], str], every: float = 0.2) -> None:
        self.pgid, self.classify, self.every = pgid, classify, every
        self._seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for entry, fields in _group(self.pgid):
            pid = int(entry.name)
            if pid not in self._seen:
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:  # gone meanwhile
                    continue
                kind = self.classify(cmdline.replace(b"\0", b" ").decode(errors="replace"))
            else:
                kind = self._seen[pid][0]
            self._seen[pid] = (kind, _own_cpu(fields))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def by_kind(self) -> dict[str, float]:
        """CPU seconds so far, summed by kind."""
        self._sample()
        out: dict[str, float] = {}
        for kind, cpu in list(self._seen.values()):
            out[kind] = out.get(kind, 0.0) + cpu
        return out

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class CpuMeter:
    """``with meter.measure("name"): ...`` records the step's client and server CPU seconds."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.steps: dict[str, dict[str, float]] = {}

    def _now(self) -> tuple[float, float]:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system, process_cpu(self.server_pid)

    def measure(self, name: str) -> _Step:
        return _Step(self, name)


class _Step:
    def __init__(self, meter: CpuMeter, name: str) -> None:
        self.meter, self.name = meter, name

    def __enter__(self) -> None:
        self.start = self.meter._now()

    def __exit__(self, *exc: object) -> None:
        client, server = self.meter._now()
        self.meter.steps[self.name] = {
            "client_cpu_s": round(client - self.start[0], 2),
            "server_cpu_s": round(server - self.start[1], 2),
        }
