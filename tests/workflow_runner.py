"""Run the Snakemake workflow on a config in a scratch directory, as the tests do."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake(workdir: Path, config: dict, *args, check=True) -> subprocess.CompletedProcess:
    cfg_path = workdir / "config.test.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(cfg_path), "--cores", "2", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def planned_jobs(workdir: Path, config: dict, *targets) -> dict[str, int]:
    """Rule -> job count of a dry run (what a real run would execute), the `all` rule left out."""
    return job_stats(snakemake(workdir, config, "-n", *targets).stdout)


def job_stats(out: str) -> dict[str, int]:
    """Rule -> job count from the `Job stats` table Snakemake prints, the `all` rule left out."""
    counts, in_stats = {}, False
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Job stats"):
            in_stats = True
        elif in_stats and parts and parts[0] == "total":
            break
        elif in_stats and len(parts) == 2 and parts[1].isdigit() and parts[0] != "all":
            counts[parts[0]] = int(parts[1])
    return counts


def bench_module(name: str):
    """bench/<name>.py imported as a module (the bench scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
