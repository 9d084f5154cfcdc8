"""`kill -9` of Snakemake itself during extraction: the orphaned job stops on its own (it watches
its Snakemake), and `snakemake --unlock` plus an immediate rerun ends with the same table as a
run that was never interrupted."""
import os
import signal
import subprocess
import time

import pandas as pd
import pytest
import yaml

from workflow_runner import BIN, REPO, snakemake

TINY = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
# The part dataset's retrieval alone: an extraction to kill and a table to compare, in about a
# minute per run (the whole tiny workflow is test_workflow.py's).
LEAN = {**TINY, "datasets": {"demo_parts": {**TINY["datasets"]["demo_parts"], "tasks": ["retrieval"]}}}


def extract_jobs(workdir) -> list[int]:
    """PIDs of `partaware extract` processes writing under `workdir`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if b"extract" in argv and any(a.endswith(b"partaware") for a in argv[:2]) and cwd == str(workdir):
                pids.append(int(entry))
    return pids


@pytest.mark.slow
def test_killed_snakemake_leaves_no_orphan_and_the_rerun_gives_the_clean_table(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"  # clean: a run that was never interrupted
    clean.mkdir()
    killed.mkdir()
    snakemake(clean, LEAN, "results/table.csv")

    cfg = killed / "config.test.yaml"
    cfg.write_text(yaml.safe_dump(LEAN))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.Popen([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(killed),
                            "--configfile", str(cfg), "--cores", "2", "results/table.csv"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list((killed / "results").glob("features/*/*/*.partial")):
        time.sleep(0.05)
    orphans = extract_jobs(killed)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert orphans, "Snakemake was not killed during an extraction (the test proves nothing)"

    deadline = time.time() + 15
    while time.time() < deadline and extract_jobs(killed):
        time.sleep(0.2)
    assert not extract_jobs(killed), "an orphaned extraction kept running after its Snakemake died"

    snakemake(killed, LEAN, "--unlock")
    snakemake(killed, LEAN, "results/table.csv")
    got = pd.read_csv(killed / "results" / "table.csv")
    want = pd.read_csv(clean / "results" / "table.csv")
    pd.testing.assert_frame_equal(got, want)
