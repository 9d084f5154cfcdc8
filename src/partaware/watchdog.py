"""Stop a job whose Snakemake is gone, so no orphan keeps writing a store a rerun needs.

Snakemake starts each job through a shell, so when Snakemake itself is killed (`kill -9`, a lost
login session) the job's own parent lives on and the job would run to the end unseen, holding
its store's lock. `watch_snakemake()` finds the nearest ancestor process that is Snakemake and
ends this process (SIGTERM) soon after that ancestor disappears. Run by hand, there is no such
ancestor and nothing is watched.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of `pid` from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[19]


def _is_snakemake(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(os.path.basename(a.decode(errors="replace")) == "snakemake" or a == b"snakemake"
               for a in argv[:3])


def snakemake_ancestor(pid: int | None = None) -> tuple[int, str] | None:
    """(pid, start time) of the nearest Snakemake process above `pid` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    for _ in range(32):
        stat = _stat(pid)
        if stat is None or stat[0] <= 1:
            return None
        pid = stat[0]
        if _is_snakemake(pid):
            parent = _stat(pid)
            return (pid, parent[1]) if parent else None
    return None


def watch_snakemake(interval: float = 1.0) -> bool:
    """Start the watch thread; returns whether there is a Snakemake to watch."""
    ancestor = snakemake_ancestor()
    if ancestor is None:
        return False
    pid, started = ancestor

    def watch():
        while True:
            time.sleep(interval)
            stat = _stat(pid)
            if stat is None or stat[1] != started:  # gone, or its pid reused by another process
                log.error("Snakemake (pid %d) has ended: stopping this job so no orphan keeps its "
                          "outputs; the rerun resumes what it finished", pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="snakemake-watchdog", daemon=True).start()
    return True
