"""What a user reads when something is wrong or done: a worker's error as its own one line, a
`oneOf` typo with the allowed values, and a closing line for every job however short."""
from __future__ import annotations

import copy
import json
import logging
import time

import numpy as np
import pytest
import yaml
from PIL import Image

from partaware import cli
from partaware import config as C
from partaware.progress import Progress
from cli_runner import run_cli

TINY = {"arch": "vit_tiny_patch16_224", "timm_kwargs": {"depth": 2}}


def _demo_config() -> dict:
    from pathlib import Path

    return yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())


def test_oneof_typo_lists_the_allowed_values():
    cfg = _demo_config()
    cfg.setdefault("segmentation", {})["protocol"] = "papr"
    with pytest.raises(C.ConfigError) as info:
        C.validate(cfg)
    assert "segmentation.protocol" in str(info.value)
    assert "'paper', 'cached'" in str(info.value) and "a list of" in str(info.value)


def test_oneof_preset_typo_lists_presets_and_the_mapping_shape():
    cfg = _demo_config()
    seg = next(name for name, ds in cfg["datasets"].items() if ds["kind"] == "segfolder")
    cfg["datasets"][seg]["pipeline"] = "LIP"
    with pytest.raises(C.ConfigError) as info:
        C.validate(cfg)
    text = str(info.value)
    assert f"datasets.{seg}.pipeline" in text and "'LIP'" in text
    assert "'ade20k', 'pascal', 'lip'" in text and "crop, train_scale, test_scale, stride" in text


def test_bad_label_in_a_loader_worker_reads_as_one_line(tmp_path, capsys, monkeypatch):
    """num_workers 2: torch wraps the worker's DataError; the user sees its own message."""
    from partaware.data.demo_seg import generate_demo_seg

    monkeypatch.delenv("PARTAWARE_DEBUG", raising=False)
    root = generate_demo_seg(tmp_path / "seg", n_train=2, n_val=1, size=32, seed=0)
    label = root / "ann" / "train" / "0001.png"
    values = np.array(Image.open(label))
    values[0, :3] = 200
    Image.fromarray(values).save(label)
    cfg = C.validate({
        "device": "cpu", "segmentation": {"protocol": "cached"},
        "datasets": {"seg": {"kind": "segfolder", "root": str(root), "size": 32, "blocks": [1],
                             "label_sets": {"part": {"dir": "ann", "classes": 6}}, "tasks": ["segmentation"]}},
        "models": {"rnd": {**TINY, "weights": "random"}},
    })
    spec = {k: cfg[k] for k in ("seed", "cache", "data")}
    spec.update(extract={k: cfg["extract"][k] for k in ("shards", "precision")},
                datasets={"seg": cfg["datasets"]["seg"]}, models={"rnd": cfg["models"]["rnd"]})
    runtime = {"device": "cpu", "extract": {"batch_size": 1, "num_workers": 2}}
    out = tmp_path / "train.zarr"
    code, error, _ = run_cli(capsys, "extract", "--spec", json.dumps(spec), "--runtime", json.dumps(runtime),
                             "--dataset", "seg", "--model", "rnd", "--split", "train", "--out", out)
    assert code == 1
    assert "worker process" not in error and "Original Traceback" not in error
    assert str(label) in error and "200" in error and "6 classes" in error
    assert error.count("\n") == 0


def test_unwrap_leaves_ordinary_errors_alone():
    err = ValueError("config key x: bad")
    assert cli.unwrap_worker_error(err) is err


def test_a_five_second_job_ends_with_a_closing_line(monkeypatch, caplog, capsys):
    """A job shorter than the progress pace (30 s) still says what it did and how fast."""
    def five_seconds(args):
        progress = Progress(logging.getLogger("partaware.fake"), total=5, unit="images")
        for i in range(1, 6):
            time.sleep(1)
            progress.update(i)

    monkeypatch.setattr(cli, "cmd_fetch", five_seconds)
    monkeypatch.setattr("partaware.watchdog.watch_snakemake", lambda: None)
    with caplog.at_level(logging.INFO):
        cli.main(["fetch", "--spec", json.dumps({"datasets": {}, "models": {}}), "--model", "m", "--out", "x"])
    closing = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fetch: done")]
    assert len(closing) == 1, [r.getMessage() for r in caplog.records]
    assert closing[0].startswith("fetch: done, 5 images, ")
    seconds = float(closing[0].split(", ")[2].split()[0])
    assert 5.0 <= seconds < 8
    assert closing[0].endswith("images/s")
