"""Cluster execution: the same workflow on SLURM (a real single-node cluster on this machine).

Needs root and Debian's slurmctld/slurmd/slurm-client/munge (``.ci/slurm-setup.sh``); skipped
without them, a failure under ``CI=true``.  One cluster serves the whole module
(``tests/slurm_cluster.py``).

Every snakemake run uses the shipped profile ``workflow/profiles/slurm`` plus a small overlay
profile written per test, holding what a user adds for their site -- here: partition
``debug``, ``squeue`` as the status command (the test cluster has no accounting, so ``sacct``
cannot answer) and short polling intervals.  The overlay repeats the shipped
``default-resources`` because a later profile (or the command line) replaces a key's value as
a whole.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import (SlurmCluster, SlurmUnavailable, require_slurm, skip_or_fail,
                           slurm_cluster)

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm"
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> SlurmCluster:
    require_slurm()
    t0 = time.monotonic()
    # two fake GPUs (a GRES with no device behind it): GPU rules submit unchanged, two at once
    with contextlib.ExitStack() as stack:
        try:
            c = stack.enter_context(
                slurm_cluster(tmp_path_factory.mktemp("cluster"), fake_gpus=2))
        except SlurmUnavailable as exc:  # e.g. the machine's own slurmctld is running
            skip_or_fail(str(exc))
        print(f"SLURM test cluster up in {time.monotonic() - t0:.1f} s (node {c.node}, "
              f"{c.cpus} CPUs, {c.real_memory_mb} MB, {c.fake_gpus} fake GPU)")
        yield c


def _snakemake_env(cluster: SlurmCluster) -> dict[str, str]:
    env = dict(cluster.env)
    # sbatch --export=ALL hands this to the jobs: the venv's console scripts (partaware,
    # snakemake) must be on PATH there too.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def _overlay_profile(directory: Path, cluster: SlurmCluster, set_resources=None) -> Path:
    """What a site adds on top of workflow/profiles/slurm (see the module docstring)."""
    shipped = yaml.safe_load((PROFILE / "config.yaml").read_text())
    overlay = {
        "default-resources": {**shipped.get("default-resources", {}),
                              "slurm_partition": cluster.partition,
                              # modest, so several jobs fit on the small test node
                              "mem_mb": 1000},
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 2,
        "seconds-between-status-checks": 2,
        "slurm-keep-successful-logs": True,
        "latency-wait": 5,
    }
    if set_resources:
        overlay["set-resources"] = set_resources
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    return directory


def _run_snakemake(args: list[str], cwd: Path, env: dict[str, str], log: Path,
                   timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args]
    t0 = time.monotonic()
    try:
        res = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout
        err = (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else exc.stderr
        log.write_text(f"$ {' '.join(cmd)}\n{out or ''}{err or ''}")
        raise AssertionError(f"snakemake timed out after {timeout} s; log: {log}") from exc
    log.write_text(f"$ {' '.join(cmd)}\n# {time.monotonic() - t0:.1f} s, rc {res.returncode}\n"
                   f"{res.stdout}{res.stderr}")
    return res


def test_sbatch_runs_a_job(cluster: SlurmCluster, tmp_path: Path):
    """Plain SLURM works: a batch job and a job step (srun) run on the node."""
    out = tmp_path / "hostname.out"
    job = cluster.sbatch("--wrap", "hostname; srun -n1 hostname", "-o", str(out),
                         cwd=tmp_path)
    assert job.isdigit()
    assert cluster.wait_for_job(job, timeout=60) == "COMPLETED", cluster.diagnostics()
    lines = out.read_text().split()
    assert lines == [cluster.node, cluster.node], out.read_text()


TINY_SNAKEFILE = r'''
localrules: all, gather

rule all:
    input: "gathered.txt"

rule make:
    output: "parts/{i}.txt"
    threads: 1
    shell:
        "echo slurm_job=${{SLURM_JOB_ID:-none}} host=$(hostname) i={wildcards.i}"
        " cpus=${{SLURM_CPUS_PER_TASK:-none}} > {output}"

rule shout:
    input: "parts/{i}.txt"
    output: "loud/{i}.txt"
    resources: mem_mb=600, runtime=5, gpu=1
    shell:
        "tr a-z A-Z < {input} > {output}; echo SLURM_JOB=${{SLURM_JOB_ID:-none}}"
        " gpus=${{SLURM_GPUS_ON_NODE:-none}} >> {output}"

rule gather:
    input: expand("loud/{i}.txt", i=[1, 2])
    output: "gathered.txt"
    shell: "cat {input} > {output}; echo gather_job=${{SLURM_JOB_ID:-none}} >> {output}"
'''


def test_tiny_workflow_through_the_profile(cluster: SlurmCluster, tmp_path: Path):
    """A self-contained workflow runs through workflow/profiles/slurm: remote rules as SLURM
    jobs, localrules on the submit host."""
    wd = tmp_path / "wf"
    wd.mkdir()
    (wd / "Snakefile").write_text(TINY_SNAKEFILE)
    overlay = _overlay_profile(tmp_path / "site-profile", cluster)
    log = tmp_path / "snakemake.log"
    res = _run_snakemake(
        ["--profile", str(PROFILE), "--profile", str(overlay), "--jobs", "4"],
        cwd=wd, env=_snakemake_env(cluster), log=log, timeout=300)
    text = log.read_text()
    assert res.returncode == 0, f"snakemake failed (log {log}):\n{text[-6000:]}"
    assert f"Using profiles {PROFILE} and {overlay}" in text

    # 4 remote jobs (make x2, shout x2), each submitted with sbatch and given a SLURM job id
    submitted = dict(SUBMITTED.findall(text))
    assert len(submitted) == 4, text[-6000:]
    slurm_ids = set(submitted.values())
    for i in (1, 2):
        part = (wd / "parts" / f"{i}.txt").read_text()
        m = re.search(r"slurm_job=(\d+) host=(\S+) i=(\d) cpus=(\d+)", part)
        assert m, part
        assert m.group(1) in slurm_ids and m.group(2) == cluster.node and m.group(4) == "1"
        loud = (wd / "loud" / f"{i}.txt").read_text()
        m = re.search(r"SLURM_JOB=(\d+) gpus=(\S+)", loud)
        assert m and m.group(1) in slurm_ids and m.group(2) == "1", loud
    # the localrule ran in snakemake's own process, not in a SLURM job
    assert "gather_job=none" in (wd / "gathered.txt").read_text()
    # the executor's per-job logs, one per SLURM job id (kept by slurm-keep-successful-logs)
    logs = sorted((wd / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert {p.stem for p in logs} == slurm_ids, logs
    assert sorted(str(p.parent.relative_to(p.parents[1].parent)) for p in logs) == [
        "rule_make/1", "rule_make/2", "rule_shout/1", "rule_shout/2"], logs
    # SLURM saw the requested resources: shout asked for mem 600 MB, runtime 5 min and a GPU
    # (resources: gpu=1 -> sbatch --gpus=1), make for the defaults and no GPU
    for job in slurm_ids:
        show = cluster.run("scontrol", "-o", "show", "job", job).stdout
        assert "JobState=COMPLETED" in show and f"Partition={cluster.partition}" in show, show
        if "Comment=rule_shout" in show:
            assert "MinMemoryNode=600M" in show and "TimeLimit=00:05:00" in show, show
            assert "gpu:1" in show, show
        else:
            assert "MinMemoryNode=1000M" in show and "TimeLimit=01:00:00" in show, show
            assert "gpu" not in show, show


def _read_table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _assert_tables_equal(local: Path, remote: Path) -> None:
    a, b = _read_table(local), _read_table(remote)
    assert a and len(a) == len(b), (len(a), len(b))
    assert list(a[0]) == list(b[0])
    for ra, rb in zip(a, b):
        for k in ra:
            if k == "value":
                va, vb = float(ra[k]), float(rb[k])
                assert (math.isnan(va) and math.isnan(vb)) or math.isclose(
                    va, vb, rel_tol=1e-6, abs_tol=1e-9), (k, ra, rb)
            else:
                assert ra[k] == rb[k], (k, ra, rb)


def _demo_config(directory: Path) -> list[str]:
    """--configfile args for the demo run: the end-to-end test's tiny demo config with every
    extraction split into 2 shard jobs (the full demo with PARTAWARE_SLURM_DEMO=full)."""
    if os.environ.get("PARTAWARE_SLURM_DEMO", "").lower() == "full":
        return []
    cfg = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    cfg["extract"]["shards"] = 2
    # what the scheduler path needs, not every task again (test_workflow.py runs them all): a
    # sharded store, GPU rules of both kinds (extract and the paper-protocol segment job)
    cfg["datasets"]["demo_parts"]["tasks"] = ["retrieval"]
    cfg["segmentation"]["protocol"] = "paper"
    # the test node has 2 CPUs: a job asking for more would pend for ever; one each lets two of
    # the three GPU jobs (two shards, one segment job) run at once on the two fake GPUs
    cfg["gpu_threads"] = 1
    path = directory / "demo-config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return ["--configfile", str(path)]


@pytest.mark.slow
def test_demo_workflow_on_slurm_matches_local(cluster: SlurmCluster, tmp_path: Path):
    """The real demo workflow, submitted through workflow/profiles/slurm, gives the same
    results/table.csv as a local run with profiles/default."""
    snakefile, config = REPO / "Snakefile", REPO / "config.yaml"
    if not (snakefile.exists() and config.exists()):
        pytest.skip("the demo workflow (Snakefile, config.yaml at the repo root) is not there")
    env = _snakemake_env(cluster)
    if shutil.which("partaware", path=env["PATH"]) is None:
        pytest.skip("the partaware CLI is not installed in this environment")
    config_args = _demo_config(tmp_path)

    # GPU rules declare gpu=1, which the executor turns into `sbatch --gpus=1`: the test node
    # has one fake GPU, so they are submitted as on a real cluster and run on the CPU there
    # (config device=auto; no CUDA device is visible).
    # what a site with small nodes sets: memory that lets two GPU jobs share the test node
    small = {rule: {"mem_mb": 2000} for rule in ("extract", "segment", "evaluate")}
    overlay = _overlay_profile(tmp_path / "site-profile", cluster, set_resources=small)

    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_dir.mkdir()
    slurm_dir.mkdir()
    local_log = tmp_path / "local.log"
    res = _run_snakemake(
        ["--snakefile", str(snakefile), *config_args,  # the workflow profile profiles/default applies by itself
         "--cores", str(cluster.cpus), "results/table.csv"],
        cwd=local_dir, env=env, log=local_log, timeout=1200)
    assert res.returncode == 0, (
        f"the LOCAL reference run failed (not a SLURM problem; log {local_log}):\n"
        + local_log.read_text()[-6000:])

    def on_slurm(log: Path, timeout: float) -> subprocess.CompletedProcess:
        return _run_snakemake(
            ["--snakefile", str(snakefile), *config_args,
             "--profile", str(PROFILE), "--profile", str(overlay), "results/table.csv"],
            cwd=slurm_dir, env=env, log=log, timeout=timeout)

    slurm_log = tmp_path / "slurm.log"
    res = on_slurm(slurm_log, timeout=1800)
    text = slurm_log.read_text()
    assert res.returncode == 0, f"the SLURM run failed (log {slurm_log}):\n{text[-8000:]}"
    submitted = SUBMITTED.findall(text)
    assert submitted, "no job went through sbatch:\n" + text[-6000:]
    print(f"demo on SLURM: {len(submitted)} sbatch jobs")
    # the GPU rules went through SLURM asking for a GPU (resources: gpu=1 -> --gpus=1)
    gpu_jobs, gpu_spans = 0, []
    for _, job in submitted:
        show = cluster.run("scontrol", "-o", "show", "job", job).stdout
        assert "JobState=COMPLETED" in show, show
        if "Comment=rule_extract" in show:
            assert "gpu:1" in show, show
            gpu_jobs += 1
        if "gpu:1" in show:
            gpu_spans.append(tuple(re.search(rf"{key}=(\S+)", show).group(1) for key in ("StartTime", "EndTime")))
    assert gpu_jobs, "no extraction job was submitted to SLURM"
    # the login node's GPU count does not cap a cluster run: two GPU jobs ran at once (two fake GPUs)
    gpu_spans.sort()
    assert any(b[0] < a[1] for a, b in zip(gpu_spans, gpu_spans[1:])), f"GPU jobs ran one at a time: {gpu_spans}"
    if config_args:  # the paper-protocol segmentation job is a GPU job too
        assert any("Comment=rule_segment" in cluster.run("scontrol", "-o", "show", "job", job).stdout
                   and "gpu:1" in cluster.run("scontrol", "-o", "show", "job", job).stdout
                   for _, job in submitted), "the segment job did not go through SLURM with a GPU"
    _assert_tables_equal(local_dir / "results" / "table.csv",
                         slurm_dir / "results" / "table.csv")
