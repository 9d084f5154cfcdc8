"""This workflow imported by another one with Snakemake's `module` directive (README "Use it from
your own workflow"): without a config it plans the embedded demo, the default config found beside
this workflow's source, not the importing one; with a config (snakedeploy's layout) it runs jobs."""
import subprocess

import pandas as pd
import yaml

from readme_example import module_example
from workflow_runner import BIN, REPO, job_stats

WITHOUT_CONFIG = module_example()  # the README's, no `config:`

# what `snakedeploy deploy-workflow` writes, the GitHub source replaced by this checkout
WITH_CONFIG = f"""
configfile: "config/config.yaml"


module partaware:
    snakefile: "{REPO / 'workflow' / 'Snakefile'}"
    config: config


use rule * from partaware
"""


def run(workdir, *args):
    out = subprocess.run([str(BIN / "snakemake"), "--cores", "2", *args], cwd=workdir, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_without_a_config_a_module_plans_the_embedded_demo(tmp_path):
    (tmp_path / "Snakefile").write_text(WITHOUT_CONFIG)  # and no config.yaml beside it
    imported = job_stats(run(tmp_path, "-n", "results/table.csv"))
    direct = tmp_path / "direct"
    direct.mkdir()
    demo = job_stats(run(direct, "-s", str(REPO / "Snakefile"), "-n", "results/table.csv"))
    assert demo["demo_data"] == 2 and demo["extract"] > 0  # the demo's two generated datasets
    assert imported == {f"partaware_{rule}": n for rule, n in demo.items()}


def test_with_a_config_a_module_runs_its_jobs(tmp_path):
    cfg = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    cfg["datasets"] = {"demo_parts": {**cfg["datasets"]["demo_parts"], "demo": {"n_images": 6, "seed": 0},
                                      "tasks": ["retrieval"]}}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "Snakefile").write_text(WITH_CONFIG)
    run(tmp_path, "results/index/demo_parts/all.parquet")
    index = pd.read_parquet(tmp_path / "results/index/demo_parts/all.parquet")
    assert index["image_id"].nunique() == 6  # the given config's dataset, not the demo's 48 images


def test_snakedeploy_finds_the_entry_point_and_the_config():
    """`workflow/Snakefile` includes the top-level one; `config/config.yaml` is the default config
    itself (a link, so the two never drift)."""
    assert 'include: "../Snakefile"' in (REPO / "workflow" / "Snakefile").read_text()
    assert (REPO / "config" / "config.yaml").read_bytes() == (REPO / "config.yaml").read_bytes()
