"""One GPU job per GPU on a workstation: each job takes a free GPU before CUDA starts.

Snakemake's local `gpu` pool caps how many GPU jobs run at once, but it does not say which GPU
each one gets: without this, every job would compute on device 0. So a GPU job (`extract`,
`segment`) takes an exclusive lock on one GPU it can see (`CUDA_VISIBLE_DEVICES` if set, else
all; counted with `nvidia-smi -L`, never by initialising CUDA in this process), narrows
`CUDA_VISIBLE_DEVICES` to it (its loader workers inherit that) and holds the lock until it ends.
The lock is the store's (`store/lock.py`: host/pid owner, `flock`, a killed holder's lock is
taken over), one file per GPU under a per-user directory, so two workflows on one machine share
the GPUs too. When every GPU is held the job waits (one log line), then fails after
`gpu_wait_s` with one line naming the holders.

Not used under SLURM (`SLURM_JOB_ID` set: the scheduler already gave the job its GPUs), on
`device: cpu`, or where no GPU is visible. `device: cuda:N` takes GPU N (waiting for it).
`PARTAWARE_GPU_COUNT` simulates that many GPUs (tests, dry runs); `PARTAWARE_GPU_LOCK_DIR`
moves the lock files.
"""
from __future__ import annotations

import atexit
import glob
import itertools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .store.lock import LockHeldError, StoreLock, read_owner

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often a waiting job retries the locks


class NoFreeGpuError(ValueError):
    """Every GPU stayed held for `gpu_wait_s`; the message names the holders."""


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as `CUDA_VISIBLE_DEVICES` entries (indices or UUIDs)."""
    simulated = os.environ.get("PARTAWARE_GPU_COUNT")
    if simulated is not None:
        if not simulated.strip().isdigit():
            raise ValueError(f"PARTAWARE_GPU_COUNT={simulated!r}: not a GPU count; set a whole number or unset it")
        return [str(i) for i in range(int(simulated))]
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        entries = [d.strip() for d in listed.split(",")]
        return list(itertools.takewhile(lambda d: d and not d.startswith("-"), entries))  # CUDA stops there too
    return [str(i) for i in range(_gpu_count())]


def pool_line(size: int, device: str = "auto", gpus: int | None = None) -> str:
    """The console line on the GPU pool: without a GPU (or `device: cpu`), that the jobs that
    would take one run on the CPU."""
    gpus = (0 if device == "cpu" else len(visible_gpus())) if gpus is None else gpus
    if gpus == 0:
        return (f"partaware: no GPU visible: extraction and segment jobs run on the CPU, {size} at a time "
                "(--resources gpu=N changes it)")
    return (f"partaware: at most {size} GPU job(s) at once, each on its own GPU of this machine "
            "(--resources gpu=N caps it)")


def _gpu_count() -> int:
    """GPUs on this machine per `nvidia-smi -L`; without that tool, torch's count taken in a child
    process (CUDA started here would ignore the CUDA_VISIBLE_DEVICES set afterwards)."""
    if not os.path.exists("/proc/driver/nvidia") and not glob.glob("/dev/nvidia[0-9]*"):
        return 0  # no NVIDIA driver: nothing to count
    exe = shutil.which("nvidia-smi")
    command = [exe, "-L"] if exe else [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    if exe:
        return sum(1 for line in out.splitlines() if line.startswith("GPU "))
    return int(out.strip()) if out.strip().isdigit() else 0


def lock_dir() -> Path:
    """Per user, shared by every workflow of that user on this machine."""
    if os.environ.get("PARTAWARE_GPU_LOCK_DIR"):
        return Path(os.environ["PARTAWARE_GPU_LOCK_DIR"])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "partaware-gpu"
    return Path(tempfile.gettempdir()) / f"partaware-gpu-{os.getuid()}"


def _lock_path(gpu: str) -> Path:
    return lock_dir() / f"gpu-{gpu.replace('/', '_')}.lock"


def pool_size(device: str) -> int:
    """How many GPU jobs Snakemake may run at once here: one per visible GPU (1 when pinned with
    `cuda:N`, and at least 1, so a CPU machine runs one GPU job at a time)."""
    if device == "cpu" or device.startswith("cuda:"):
        return 1
    return max(1, len(visible_gpus()))


def _wanted(device: str, gpus: list[str]) -> list[str]:
    if not device.startswith("cuda:"):
        return gpus
    index = int(device.split(":", 1)[1])
    if index >= len(gpus):
        raise ValueError(f"device: {device}: only {len(gpus)} GPU(s) visible here "
                         f"({', '.join(gpus) or 'none'}); use device: auto, or cuda:0 .. cuda:{max(len(gpus) - 1, 0)}")
    return [gpus[index]]


def take_gpu(device: str, job: str, wait_s: float) -> str:
    """Take a GPU for the rest of this process's life when the job runs on one; returns the
    device the job should use (`cuda` when it took one, else `device` unchanged).

    `job` names the holder in the lock file (shown to a job that waits). Call before CUDA is
    initialised: the narrowed `CUDA_VISIBLE_DEVICES` counts only then.
    """
    if device == "cpu" or os.environ.get("SLURM_JOB_ID"):
        return device
    gpus = visible_gpus()
    if not gpus:
        return device  # a CPU machine: `auto` resolves to the CPU, `cuda` fails as before
    wanted = _wanted(device, gpus)
    lock = _acquire(wanted, job, wait_s)
    gpu = lock.gpu
    atexit.register(lock.release)  # a clean end removes the file; a killed job's lock is taken over
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    log.info("%s: running on GPU %s of %s (CUDA_VISIBLE_DEVICES=%s; lock %s)",
             job, gpu, ",".join(gpus), gpu, lock.path)
    return "cuda"


def _acquire(gpus: list[str], job: str, wait_s: float) -> StoreLock:
    start, announced = time.monotonic(), False
    while True:
        for gpu in gpus:
            try:
                lock = StoreLock.acquire(_lock_path(gpu), f"GPU {gpu}: {job}")
            except LockHeldError:
                continue
            lock.gpu = gpu
            return lock
        holders = describe_holders(gpus)
        if time.monotonic() - start >= wait_s:
            raise NoFreeGpuError(
                f"{job}: no free GPU after {wait_s:g} s ({holders}); wait for those jobs, lower "
                "`--resources gpu=N` so fewer GPU jobs run at once, or raise `gpu_wait_s` in the config")
        if not announced:
            log.info("%s: waiting for a free GPU (%s); giving up after %g s (gpu_wait_s)", job, holders, wait_s)
            announced = True
        time.sleep(POLL_S)


def describe_holders(gpus: list[str]) -> str:
    """`GPU 0: pid 12 on host a since ... (extract ...)` for each GPU."""
    parts = []
    for gpu in gpus:
        owner = read_owner(_lock_path(gpu))
        job = str(owner.get("store", "")).split(": ", 1)[-1]
        parts.append(f"GPU {gpu}: pid {owner.get('pid', '?')} on host {owner.get('host', '?')} "
                     f"since {owner.get('since', '?')}{f' ({job})' if job else ''}")
    return "; ".join(parts)
