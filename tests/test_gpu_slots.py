"""One GPU job per GPU on a workstation (partaware.gpu_slots), on a simulated 3- or 4-GPU machine:
concurrent jobs get distinct GPUs, a job waits for a free one, a killed holder's GPU is taken
over, the chosen GPU reaches the job's children, and the dry run allows one GPU job per GPU."""
import os
import select
import signal
import subprocess
import sys
import time

import pytest
import yaml

from partaware import gpu_slots
from partaware.store.lock import StoreLock
from workflow_runner import REPO, snakemake

# A GPU job: takes a GPU, starts a child that reports what it sees, then holds the GPU until its
# stdin closes.
HOLDER = """
import logging, os, subprocess, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from partaware.gpu_slots import take_gpu
try:
    device = take_gpu(sys.argv[2], "job " + sys.argv[1], float(sys.argv[3]))
except ValueError as err:
    print("error:", err, file=sys.stderr)
    sys.exit(1)
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
                       capture_output=True, text=True).stdout.strip()
print(device, os.environ["CUDA_VISIBLE_DEVICES"], child, flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A simulated 3-GPU workstation whose GPU locks live in tmp_path."""
    monkeypatch.setenv("PARTAWARE_GPU_COUNT", "3")
    monkeypatch.setenv("PARTAWARE_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return env


def start(env, name, device="auto", wait_s=60.0):
    return subprocess.Popen([sys.executable, "-c", HOLDER, name, device, str(wait_s)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def took(proc, timeout=60.0):
    """(device, its CUDA_VISIBLE_DEVICES, its child's) once the job has its GPU; None if it has
    none after `timeout` s."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return None
    line = proc.stdout.readline().split()
    assert len(line) == 3, proc.stderr.read()
    return tuple(line)


def end(proc):
    proc.stdin.close()
    proc.wait(timeout=60)


def test_three_jobs_get_three_gpus_a_fourth_waits_then_takes_the_freed_one(machine):
    jobs = [start(machine, f"j{i}") for i in range(3)]
    got = [took(j) for j in jobs]
    assert all(g and g[0] == "cuda" for g in got)
    assert sorted(g[1] for g in got) == ["0", "1", "2"]
    assert all(g[1] == g[2] for g in got), got  # the job's children see its GPU only
    fourth = start(machine, "j3")
    try:
        assert took(fourth, timeout=4) is None  # all three held: it waits
        end(jobs[1])
        assert took(fourth) == ("cuda", got[1][1], got[1][1])
    finally:
        end(fourth)
        for j in jobs:
            j.kill()
            j.wait()
    assert "waiting for a free GPU" in fourth.stderr.read()


def test_a_killed_holders_gpu_is_taken_over(machine):
    jobs = [start(machine, f"k{i}") for i in range(3)]
    got = [took(j) for j in jobs]
    jobs[2].send_signal(signal.SIGKILL)
    jobs[2].wait()
    late = start(machine, "late")
    try:
        assert took(late) == ("cuda", got[2][1], got[2][1])
    finally:
        end(late)
        for j in jobs:
            j.kill()
            j.wait()
    assert "taking over the lock" in late.stderr.read()


def test_no_free_gpu_fails_after_the_wait_naming_the_holders(machine):
    jobs = [start(machine, f"h{i}") for i in range(3)]
    try:
        assert all(took(j) for j in jobs)
        late = start(machine, "late", wait_s=1)
        assert late.wait(timeout=60) == 1
        err = [line for line in late.stderr.read().splitlines() if line.startswith("error:")]
        assert len(err) == 1 and "no free GPU after 1 s" in err[0] and "gpu_wait_s" in err[0]
        for j in jobs:
            assert f"pid {j.pid}" in err[0]
    finally:
        for j in jobs:
            end(j)


def test_device_cuda_n_pins_the_job_to_that_gpu(machine):
    pinned = start(machine, "p", device="cuda:2")
    try:
        assert took(pinned) == ("cuda", "2", "2")
    finally:
        end(pinned)
    wrong = start(machine, "w", device="cuda:3")
    assert wrong.wait(timeout=60) == 1
    assert "device: cuda:3: only 3 GPU(s) visible" in wrong.stderr.read()


def test_visible_devices_are_the_ones_shared(tmp_path, monkeypatch):
    """A workflow started on GPUs 4,6 takes one of those and locks it under its own number."""
    monkeypatch.delenv("PARTAWARE_GPU_COUNT", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("PARTAWARE_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert gpu_slots.visible_gpus() == ["4", "6"]
    assert gpu_slots.take_gpu("cuda:1", "test", 0) == "cuda"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6" and (tmp_path / "gpu-6.lock").is_file()
    StoreLock._held[str(tmp_path / "gpu-6.lock")].release()  # else held for the whole test process


def test_slurm_and_cpu_jobs_take_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTAWARE_GPU_COUNT", "3")
    monkeypatch.setenv("PARTAWARE_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert gpu_slots.take_gpu("cpu", "test", 0) == "cpu"
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    assert gpu_slots.take_gpu("auto", "test", 0) == "auto"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2" and not list(tmp_path.iterdir())


def dry_run(tmp_path, monkeypatch, gpus, *args, **config):
    monkeypatch.setenv("PARTAWARE_GPU_COUNT", str(gpus))
    cfg = {**yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text()), **config}
    return snakemake(tmp_path, cfg, "-n", "-p", "results/table.csv", *args)


def gpu_job_threads(out):
    """rule -> the `--threads` of its printed commands, for the GPU rules."""
    found = {}
    for line in out.splitlines():
        for rule in ("extract", "segment"):
            if line.startswith(f"Shell command: partaware {rule} ") or line.startswith(f"partaware {rule} "):
                found.setdefault(rule, set()).add(line.split("--threads ")[1].split()[0])
    return found


def test_dry_run_on_four_gpus_allows_four_gpu_jobs_at_once(tmp_path, monkeypatch):
    """One GPU job per GPU; `--resources gpu=N` caps it, `cuda:N` serialises on that GPU. The GPU
    jobs declare `gpu_threads` (default 16), scaled down to --cores (2 here)."""
    out = dry_run(tmp_path, monkeypatch, 4, device="auto")
    assert "at most 4 GPU job(s) at once" in out.stderr
    assert gpu_job_threads(out.stdout) == {"extract": {"2"}, "segment": {"2"}}
    capped = dry_run(tmp_path, monkeypatch, 4, "--resources", "gpu=2", device="auto")
    assert "at most 2 GPU job(s) at once" in capped.stderr
    pinned = dry_run(tmp_path, monkeypatch, 4, device="cuda:1", gpu_threads=1)
    assert "at most 1 GPU job(s) at once" in pinned.stderr
    assert gpu_job_threads(pinned.stdout) == {"extract": {"1"}, "segment": {"1"}}


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no GPU")
def test_two_extractions_on_one_gpu_take_turns_and_both_finish(tmp_path, monkeypatch):
    """On a real GPU machine, two `partaware extract` processes started together (as two workflows
    would) run on GPU 0 one after the other, each holding it from its start line to its end."""
    import json
    from datetime import datetime

    import torch

    from partaware import config as C
    from partaware.data.demo import generate_demo_cub
    from partaware.data.parts import select_split, write_index
    from partaware.kinds import build_part_index

    if torch.cuda.device_count() != 1:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("PARTAWARE_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("PARTAWARE_GPU_COUNT", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    tiny = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    cfg = C.fill_spec({**tiny, "device": "auto", "datasets": {"demo_parts": tiny["datasets"]["demo_parts"]}})
    cfg["datasets"]["demo_parts"]["root"] = str(tmp_path / "cub")
    generate_demo_cub(tmp_path / "cub", 8, image_size=(200, 150))
    write_index(select_split(build_part_index(cfg["datasets"]["demo_parts"]), "all"), tmp_path / "all.parquet")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("PARTAWARE_RUNTIME", None)
    procs = [subprocess.Popen([sys.executable, "-m", "partaware.cli", "extract", "--spec", json.dumps(cfg),
                               "--dataset", "demo_parts", "--model", "tiny_a", "--split", "all",
                               "--index", str(tmp_path / "all.parquet"), "--out", str(tmp_path / f"{k}.zarr")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k in range(2)]
    spans = []
    for p in procs:
        out = p.communicate(timeout=600)[0]
        assert p.returncode == 0, out[-3000:]
        stamps = {key: datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                  for line in out.splitlines() for key in ("running on GPU", ": done, ") if key in line}
        assert "running on GPU 0" in out and len(stamps) == 2, out[-3000:]
        spans.append((stamps["running on GPU"], stamps[": done, "]))
    first, second = sorted(spans)
    assert first[1] <= second[0], spans  # the second took the GPU only after the first was done


def test_the_pool_line_without_a_gpu_says_jobs_run_on_the_cpu():
    from partaware.gpu_slots import pool_line

    assert "run on the CPU" in pool_line(1, "auto", gpus=0) and "GPU job(s)" not in pool_line(1, "auto", gpus=0)
    assert "run on the CPU" in pool_line(1, "cpu")
    assert "at most 2 GPU job(s) at once" in pool_line(2, "auto", gpus=2)
