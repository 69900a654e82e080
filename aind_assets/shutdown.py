"""Stop every process ``aind-assets dev`` started, within seconds, on Ctrl-C or SIGTERM.

``dg dev`` (webserver, daemon, code servers, run workers) and the embedded DocDB each run in a
session of their own, so a terminal's Ctrl-C reaches only ``aind-assets dev``. On that signal the
supervisor snapshots every descendant, sends SIGTERM to all of them at once (process groups and
each descendant, so one in a session of its own is not missed), waits at most ``grace`` seconds,
then SIGKILLs what is left. Nothing here waits on a process that is busy: the bound holds on a
loaded machine because SIGKILL needs no CPU from its target. Dagster's own orderly shutdown of
``dagster dev`` waits on its children for up to ~20 s, which is why it is not relied on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import psutil

#: Seconds between SIGTERM and SIGKILL; well inside the 5 s the operator is promised.
GRACE = 1.0


@dataclass
class Supervisor:
    """The children of one command, stopped together and reported by name."""

    grace: float = GRACE
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    signalled: list[int] = field(default_factory=list)

    def add(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.children.append((name, proc))

    def run_until_signal(self, main: subprocess.Popen[bytes]) -> int:
        """Wait until ``main`` exits or SIGINT/SIGTERM arrives; then stop all and report."""

        def on_signal(signum: int, _frame: object) -> None:
            self.signalled.append(signum)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while main.poll() is None and not self.signalled:
                time.sleep(0.1)
        finally:
            reason = (
                signal.Signals(self.signalled[0]).name
                if self.signalled
                else f"dg dev exited with code {main.returncode}"
            )
            self.stop_all(reason)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0 if self.signalled else int(main.returncode or 0)

    def stop_all(self, reason: str) -> None:
        """SIGTERM everything, SIGKILL what outlives ``grace``, print what was stopped."""
        started = time.monotonic()
        print(f"aind-assets dev: {reason}; stopping all processes ...", file=sys.stderr, flush=True)
        tree: dict[str, list[psutil.Process]] = {}
        for name, proc in self.children:
            tree[name] = _process_tree(proc.pid)
        everything = [p for procs in tree.values() for p in procs]
        for _, proc in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        _signal_each(everything, signal.SIGTERM)
        alive = _wait_gone(everything, self.grace)
        for _, proc in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        _signal_each(alive, signal.SIGKILL)
        _wait_gone(alive, 2.0)
        for _, proc in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)  # reap, so no zombie outlives us
        elapsed = time.monotonic() - started
        for name, procs in tree.items():
            killed = sum(1 for p in procs if p in alive)
            how = f", {killed} killed after {self.grace:g} s" if killed else ""
            print(
                f"aind-assets dev: stopped {name}: {len(procs)} process(es){how}",
                file=sys.stderr,
                flush=True,
            )
        print(f"aind-assets dev: all stopped in {elapsed:.1f} s", file=sys.stderr, flush=True)


def _process_tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its descendants now (empty if it is already gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` s until every process has exited; those still running.

    A zombie counts as gone: it holds no port or file, and one whose parent was killed too waits
    for whichever process adopts it to reap it, which is no business of ours.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal_each(procs: list[psutil.Process], sig: signal.Signals) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            p.send_signal(sig)
