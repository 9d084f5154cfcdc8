"""GPU jobs get the cores they use: the loader workers an `extract` or `segment` job starts
follow its `--threads` (num_workers: auto = threads - 1) unless the config sets them. The dry
run's threads are pinned in test_gpu_slots.py."""
import logging
import os
import re

import pytest
import torch
import yaml

from partaware import config as C
from partaware import extract as E
from partaware.data.demo import generate_demo_cub
from partaware.data.demo_seg import generate_demo_seg
from partaware.data.parts import select_split, write_index
from partaware.job_threads import loader_workers
from partaware.kinds import build_part_index
from partaware.seg_online import job as J
from workflow_runner import REPO, bench_module

TINY = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())


@pytest.fixture
def threads():
    """Sets torch's thread count as `--threads N` does, and restores it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_auto_is_threads_minus_one_and_a_set_count_is_kept():
    assert [loader_workers("auto", t) for t in (1, 2, 16)] == [0, 1, 15]
    assert loader_workers(0, 16) == 0
    assert loader_workers(1, 16) == 1
    cores = len(os.sched_getaffinity(0))
    assert loader_workers(cores + 50, 4) == cores  # never more than the cores it may run on


def tiny_cfg(root, dataset, workers):
    cfg = C.fill_spec({**TINY, "datasets": {dataset: TINY["datasets"][dataset]}})
    cfg["datasets"][dataset]["root"] = str(root)
    cfg["extract"]["num_workers"] = cfg["segmentation"]["num_workers"] = workers
    return cfg


def test_extract_job_starts_threads_minus_one_workers_and_logs_start_and_end(tmp_path, threads, caplog):
    cfg = tiny_cfg(tmp_path / "cub", "demo_parts", "auto")
    generate_demo_cub(tmp_path / "cub", 4, image_size=(200, 150))
    write_index(select_split(build_part_index(cfg["datasets"]["demo_parts"]), "all"), tmp_path / "all.parquet")
    threads(3)
    cfg["extract"].update(log_every_s=0, batch_size=4)  # a progress line after every batch
    with caplog.at_level(logging.INFO):
        E.extract(cfg, "demo_parts", "tiny_a", "all", tmp_path / "all.parquet", tmp_path / "all.zarr")
    progress = [r for r in caplog.records if r.name == "partaware.extract" and re.match(r"\d+/\d+ rows", r.getMessage())]
    assert len(progress) >= 2, "extract.log_every_s is honoured"
    lines = [r.getMessage() for r in caplog.records if r.name == "partaware.extract"]
    start = next(x for x in lines if ": start on " in x)
    assert start.startswith("extract demo_parts/tiny_a/all: start on cpu, precision fp32, batch ")
    assert ", 2 loader workers, " in start
    done = next(x for x in lines if ": done, " in x)
    rows = int(start.split(", ")[-1].split()[0])
    assert rows > 0 and f"done, {rows} rows in " in done and " patches/s; waited on the loader " in done
    parsed = workflow_rates().extract_rate("\n".join(lines))  # what bench/gpu_check_workflow.sh reads
    assert parsed["workers"] == 2 and parsed["rows"] == rows and parsed["patches_per_s"] > 0
    waited = parsed["waited_s"]  # where the loop's time went: it adds up to no more than the loop
    assert set(waited) == {"loader", "step", "device", "store"}
    assert 0 < sum(waited.values()) <= parsed["seconds"] + 0.1  # each printed to 0.01 s


def workflow_rates():
    return bench_module("workflow_rates")


def test_segment_steady_rate_leaves_the_warm_up_out():
    log = "\n".join([
        "2026-12-04 10:00:00,000 INFO partaware.seg_online.train: 10/400 iterations, 1.0 iterations/s, ETA 6m30s, "
        "5.0 img/s, 90% of the time waiting on the loader, loss a 1.0",
        "2026-12-04 10:00:05,000 INFO partaware.seg_online.train: 110/400 iterations, 9.1 iterations/s, ETA 30 s, "
        "120.0 img/s, 10% of the time waiting on the loader, loss a 0.9",
        "2026-12-04 10:00:10,000 INFO partaware.seg_online.train: 210/400 iterations, 14.0 iterations/s, ETA 13 s, "
        "200.0 img/s, 7% of the time waiting on the loader, loss a 0.8"])
    assert workflow_rates().steady_images_per_s(log, 16) == 200 * 16 / 10


def test_segment_job_starts_threads_minus_one_workers(tmp_path, threads, monkeypatch, caplog):
    cfg = tiny_cfg(tmp_path / "seg", "demo_seg", "auto")
    generate_demo_seg(tmp_path / "seg", 2, 2, size=64)
    started = {}

    class Started(Exception):
        pass

    def train_online(*args, num_workers, **kw):
        started["workers"] = num_workers
        raise Started

    monkeypatch.setattr(J, "train_online", train_online)
    for n, expected in ((5, 4), (1, 0)):
        threads(n)
        with pytest.raises(Started):
            J.run_segment(cfg, "demo_seg", "tiny_a", tmp_path / "state.pt")
        assert started["workers"] == expected
    cfg["segmentation"]["num_workers"] = 1  # set in the config: kept whatever the threads
    threads(5)
    with pytest.raises(Started), caplog.at_level(logging.INFO):
        J.run_segment(cfg, "demo_seg", "tiny_a", tmp_path / "state.pt")
    assert started["workers"] == 1
    assert any("device cpu, 1 loader workers" in r.getMessage() for r in caplog.records)


def test_paper_protocol_rows_fill_images_used(tmp_path, monkeypatch):
    """Paper-protocol segmentation rows count their images (train + evaluated) as the cached rows
    do, so table.md's `images used` is filled for both protocols."""
    cfg = tiny_cfg(tmp_path / "seg", "demo_seg", "auto")
    generate_demo_seg(tmp_path / "seg", 2, 2, size=64)
    metric = {"mIoU": 0.5, "mAcc": 0.5, "aAcc": 0.5, "iou": [0.5], "per_image": {}}
    monkeypatch.setattr(J, "train_online", lambda *a, **k: None)
    monkeypatch.setattr(J, "evaluate_online", lambda *a, **k: {n: metric for n in
                                                                cfg["datasets"]["demo_seg"]["label_sets"]})
    monkeypatch.setattr(J, "segmentation_sums", lambda **k: None)
    monkeypatch.setattr(J, "attach", lambda rows, sums, stats: rows)
    rows, _ = J.run_segment(cfg, "demo_seg", "tiny_a", tmp_path / "state.pt")
    assert rows and all(r["images"] == 4 and r["skipped"] == 0 and r["skipped_rows"] == 0 for r in rows)
