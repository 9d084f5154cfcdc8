"""Adding an evaluation task is one module: a toy task registered from outside the package
(tests/toy_task.py, through $PARTAWARE_TASKS) gets a config section, a `--task` of the CLI, a job
of the workflow and its stores, without any other edit."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli_runner import run_cli
from partaware import roles
from partaware import config as C
from partaware import kinds, specs, tasks
from partaware.store import StoreWriter
from workflow_runner import planned_jobs

TESTS = Path(__file__).resolve().parent
CONFIG = {"datasets": {"birds": {"kind": "cub", "demo": {"n_images": 4, "seed": 0}, "parts": [11, 12],
                                 "size": 32, "resize": 40, "tasks": ["toy_rows"]}},
          "models": {"rnd": {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 0}},
          "toy_rows": {"scale": 2.0, "verbose": True}}


@pytest.fixture
def toy(monkeypatch):
    """The toy task registered, here and in every process the test starts."""
    monkeypatch.setenv("PARTAWARE_TASKS", "toy_task")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(TESTS))
    tasks._loaded = False  # re-read $PARTAWARE_TASKS
    yield tasks.get("toy_rows")
    tasks.TASKS.pop("toy_rows", None)
    sys.modules.pop("toy_task", None)


def test_a_registered_task_gets_its_section_stores_and_spec(toy):
    cfg = C.validate(CONFIG)
    assert cfg["toy_rows"] == {"scale": 2.0, "verbose": True}  # its schema, defaults filled
    assert "toy_rows" in roles.tasks_of(kinds.get("cub")) and "toy_rows" not in roles.tasks_of(kinds.get("segfolder"))
    assert C.splits_of(cfg, "birds") == ["all"] and C.eval_names(cfg, "birds") == ["toy_rows"]
    spec = specs.task_spec(cfg, "birds", "rnd", "toy_rows")
    assert spec["toy_rows"] == {"scale": 2.0}  # its run-time key is left out: changing it reruns nothing
    assert "toy_rows" in C.runtime_keys() and "verbose" in C.runtime_keys()["toy_rows"]
    with pytest.raises(C.ConfigError, match=r"datasets\.birds\.tasks\.0: 'toy_rows' is not allowed"):
        C.validate({**CONFIG, "datasets": {"birds": {"kind": "segfolder", "root": str(TESTS),
                                                     "label_sets": {"part": {"classes": 2}},
                                                     "tasks": ["toy_rows"]}}})
    with pytest.raises(C.ConfigError, match=r"config key toy_rows\.scale"):
        C.validate({**CONFIG, "toy_rows": {"scale": "big"}})


def test_a_registered_task_runs_through_the_cli(toy, tmp_path, capsys):
    n, spec = 5, {**CONFIG, "stats": {"bootstrap": 0}}
    made_for = C.digest(specs.store_signature(C.fill_spec(spec), "birds", "rnd", "all"))  # what evaluate checks
    layout = {"cls": ((4,), "float16", 8), "label": ((), "int64", 8), "valid": ((), "bool", 8)}
    writer = StoreWriter(tmp_path / "all.h5", n, layout, {}, made_for)
    writer.write({"cls": np.ones((n, 4), np.float16), "label": np.arange(n), "valid": np.arange(n) != 2})
    writer.publish()
    spec = json.dumps(spec)
    out = tmp_path / "toy_rows.csv"
    code, err, _ = run_cli(capsys, "evaluate", "--spec", spec, "--task", "toy_rows", "--dataset", "birds",
                           "--model", "rnd", "--out", out, tmp_path / "all.h5")
    assert code == 0, err
    rows = pd.read_csv(out)
    assert rows[["task", "metric", "value", "n", "protocol"]].values.tolist() == \
        [["toy_rows", "valid_rows", 8.0, 4, "exact"]]  # 4 valid rows, scale 2


def test_an_unknown_task_is_one_config_error(capsys, tmp_path):
    code, err, _ = run_cli(capsys, "evaluate", "--spec", json.dumps(CONFIG), "--task", "toy_rows",
                           "--dataset", "birds", "--model", "rnd", "--out", tmp_path / "x.csv", tmp_path / "all.h5")
    assert code == 1 and "unknown task 'toy_rows'" in err and "segmentation" in err  # never run as another task
    assert not (tmp_path / "x.csv").exists()


def test_a_registered_task_is_a_job_of_the_workflow(toy, tmp_path):
    jobs = planned_jobs(tmp_path, CONFIG, "results/table.csv")
    assert jobs == {"demo_data": 1, "part_index": 1, "extract": 1, "evaluate": 1, "table": 1}, jobs
