"""How many loader workers a job starts: they follow the job's threads unless set.

A GPU job declares `gpu_threads` (Snakemake scales it down to `--cores`; SLURM gives it as
`--cpus-per-task`) and receives the result as `--threads`, which sets torch's thread count. Its
DataLoader then starts one worker per thread but one: the main process keeps a core to feed
the device and hand batches to the store writer.
"""
from __future__ import annotations

import os

import torch


def loader_workers(setting, threads: int | None = None) -> int:
    """`auto`: the job's threads - 1 (`threads` defaults to torch's, i.e. `--threads`); a count
    set in the config is kept, capped at the cores this process may run on (more only
    oversubscribe them)."""
    if setting == "auto":
        return max(0, (threads or torch.get_num_threads()) - 1)
    return min(int(setting), len(os.sched_getaffinity(0)))
