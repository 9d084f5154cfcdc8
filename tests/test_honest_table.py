"""Every number says what it rests on: a dataset with most images skipped is marked and warned
about, a one-image set has no interval and no significance mark, and retrieval queries that
are their own only positive are counted, excluded and explained."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from partaware import report
from partaware.evals import bootstrap as BS
from partaware.evals.retrieval import (average_precision_per_query, degenerate_note, self_only_queries,
                                       summarise, summarise_checked)
from partaware.intervals import attach, write_results
from partaware.results import result_row

STATS = {"bootstrap": 200, "level": 0.95, "seed": 0}


# --------------------------------------------------------------------------- a dataset mostly skipped
def test_dataset_with_90_percent_of_images_missing_is_marked_and_warned(tmp_path, caplog, one_torch_thread):
    from partaware import config as C
    from partaware.tasks import retrieval as E
    from partaware.results import context
    from partaware.data.demo import generate_demo_cub
    from partaware.data.parts import select_split, write_index
    from partaware.extract import extract
    from partaware.kinds import build_part_index
    from partaware.store import open_store

    root = generate_demo_cub(tmp_path / "cub", 20, image_size=(96, 72))
    files = sorted((root / "images").rglob("*.jpg"))
    for f in files[2:]:  # 18 of 20 images gone
        f.unlink()
    tiny = {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 1,
            "timm_kwargs": {"depth": 1, "embed_dim": 48, "num_heads": 2}}
    cfg = C.fill_spec({
        "seed": 0, "device": "cpu", "cache": {"format": "zarr", "chunk_rows": 8},
        "extract": {"batch_size": 16, "num_workers": 0}, "data": {"on_bad_image": "skip"},
        "datasets": {"birds": {"kind": "cub", "name": "birds", "root": str(root), "parts": [11, 12, 9, 14],
                               "size": 32, "resize": 36, "tasks": ["retrieval"], "check_files": False}},
        "models": {"rnd": tiny}, "retrieval": {"features": ["mean"], "exclude_self": True},
        "stats": {"bootstrap": 50, "level": 0.9, "seed": 0}})
    index = select_split(build_part_index(cfg["datasets"]["birds"]), "all")
    write_index(index, tmp_path / "all.parquet")
    store_path = extract(cfg, "birds", "rnd", "all", tmp_path / "all.parquet", tmp_path / "all.zarr")
    with open_store(store_path) as store, caplog.at_level(logging.WARNING):
        valid = store.read("valid").astype(bool)
        labels = store.read("label")[valid]
        rows = E.retrieval_rows(cfg, context(cfg, "birds", "rnd"), store)
    csv = tmp_path / "evals" / "retrieval.csv"
    write_results(rows, csv, cfg["stats"])

    row = pd.read_csv(csv).iloc[0]
    assert row["skipped"] == 18 and row["images"] == 2  # images, not patches
    assert row["skipped_rows"] == (~valid).sum() > 18  # patches: several per image
    assert row["degenerate"] == self_only_queries(labels).sum()
    if row["degenerate"]:
        assert any("no other positive" in r.getMessage() for r in caplog.records)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="partaware"):
        report.write_table([csv], tmp_path / "table.csv", tmp_path / "table.md")
    md = (tmp_path / "table.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("| birds | retrieval") and "| AP |" in line)
    assert f"(n={len(labels)}, 10.0 % of images" in line
    assert f"| {len(labels)} | 10.0 % |" in line  # n samples, images used
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("birds: ") and "18 images skipped" in warnings[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="partaware"):
        skipped = report.write_skipped([store_path], tmp_path / "skipped_images.csv")
    assert skipped["reason"].str.endswith(": image not found").sum() == 18
    assert not skipped["reason"].str.contains("on_bad_image").any()  # the run had skip on already
    summary = [r.getMessage() for r in caplog.records]
    assert len(summary) == 1 and summary[0].startswith(f"{store_path}: {len(skipped)} left out: 18 x image not found")


def test_a_full_dataset_is_not_marked(tmp_path, caplog):
    ctx = {"dataset": "toy", "model": "m", "group": "g", "weights": "w"}
    rows = [result_row(ctx, "retrieval", "mean", "AP", 50.0, 30, images=10, skipped=0, skipped_rows=0,
                       min_class_n=5)]
    csv = tmp_path / "r.csv"
    write_results(rows, csv, STATS)
    with caplog.at_level(logging.WARNING, logger="partaware"):
        report.write_table([csv], tmp_path / "t.csv", tmp_path / "t.md")
    assert "(n=" not in (tmp_path / "t.md").read_text().split("|---")[-1]
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_rare_class_and_the_configured_share_mark_a_row(tmp_path):
    ctx = {"dataset": "toy", "model": "m", "group": "g", "weights": "w"}
    rows = [result_row(ctx, "linear", "cls", "top1", 50.0, 30, images=95, skipped=5, min_class_n=1)]
    table = pd.DataFrame(rows)
    thin = report.coverage(table, {"min_share": 0.9, "min_per_class": 2})["thin"].iloc[0]
    assert thin == "n=30, 1 in its smallest class"
    thin = report.coverage(table, {"min_share": 0.99, "min_per_class": 1})["thin"].iloc[0]
    assert thin == "n=30, 95.0 % of images"


# --------------------------------------------------------------------------- one image: no interval
def _one_image_rows(model, inter):
    ctx = {"dataset": "lip", "model": model, "group": "g", "weights": "w"}
    sums = BS.segmentation_sums(np.array([inter]), np.array([[10.0, 10.0]]), np.array([[10.0, 10.0]]),
                                image_ids=np.array([7]))
    rows = [result_row(ctx, "segmentation", "blocks 1", m, 100 * BS.value(sums, m), 1, label_set="part",
                       seed=0) for m in ("mIoU", "aAcc")]
    return attach(rows, sums, STATS)


def test_one_image_validation_set_has_no_interval_and_no_star(tmp_path):
    inputs = []
    for model, inter in (("a", [1.0, 2.0]), ("b", [5.0, 6.0])):
        rows = _one_image_rows(model, inter)
        assert all(np.isnan(r["ci_low"]) and np.isnan(r["ci_high"]) and r["ci_images"] == 1 for r in rows)
        csv = tmp_path / model / "segmentation.csv"
        write_results(rows, csv, STATS)
        inputs.append(csv)
    table = report.write_table(inputs, tmp_path / "table.csv", tmp_path / "table.md")
    assert table["ci_low"].isna().all() and table["ci_high"].isna().all()
    written = pd.read_csv(tmp_path / "table.csv", keep_default_na=False)
    assert (written["ci_low"] == "").all() and (written["ci_high"] == "").all()
    md = (tmp_path / "table.md").read_text()
    assert "15.0 [n/a]" in md  # a's mIoU: (0.1 + 0.2) / 2
    pairs = md.split("## Pairwise differences")[1]
    cells = [line for line in pairs.splitlines() if line.startswith("| a |")]
    assert len(cells) == 2 and all(c == "| a | -40.0 [n/a] |" for c in cells)


def test_bootstrap_guards_below_two_images():
    sums = BS.accuracy_sums([1.0, 0.0], [3, 3])  # two samples, one image
    assert all(np.isnan(v) for v in BS.intervals(sums, ["top1"], 100)["top1"])
    other = BS.accuracy_sums([0.0, 0.0], [3, 3])
    diff = BS.paired_difference(sums, other, "top1", 100)
    assert diff["diff"] == 0.5 and np.isnan(diff["low"]) and not diff["excludes_zero"]
    two = BS.accuracy_sums([1.0, 0.0], [3, 4])
    assert all(np.isfinite(v) for v in BS.intervals(two, ["top1"], 100)["top1"])


def test_pairwise_differences_show_the_digits_they_need():
    assert report._difference(0.034, 0.012, 0.051, True) == "+0.03 [+0.01, +0.05]*"
    assert report._difference(0.4, 0.2, 0.6, True) == "+0.4 [+0.2, +0.6]*"
    assert report._difference(-5.25, -6.0, -4.5, True) == "-5.2 [-6.0, -4.5]*"
    assert report._difference(0.0, 0.0, 0.0, False) == "+0.0 [+0.0, +0.0]"


# --------------------------------------------------------------------------- self-only retrieval queries
def test_self_only_queries_are_counted_excluded_and_explained():
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 2, 2, 3])  # labels 1 and 3: their query is their only sample
    feats = rng.standard_normal((7, 8)).astype(np.float32)
    assert self_only_queries(labels).tolist() == [False] * 3 + [True, False, False, True]
    ap = average_precision_per_query(feats, labels, exclude_self=True)
    assert np.isnan(ap[[3, 6]]).all() and np.isfinite(ap[[0, 1, 2, 4, 5]]).all()
    assert summarise_checked(ap, labels)["AP"] == pytest.approx(np.mean(ap[[0, 1, 2, 4, 5]]))
    count, note = degenerate_note(labels, exclude_self=True)
    assert count == 2 and note == "2 of 7 queries have no other positive: left out of AP and mAP"
    count, note = degenerate_note(labels, exclude_self=False)
    assert count == 2 and "AP 100" in note


@pytest.mark.parametrize("exclude_self", [False, True])
def test_a_set_of_only_self_only_queries_gives_no_value(exclude_self):
    labels = np.array([4, 7, 9])  # 3 patches of one image, three different parts
    ap = average_precision_per_query(np.eye(3, dtype=np.float32), labels, exclude_self=exclude_self)
    if not exclude_self:
        assert summarise(ap, labels)["AP"] == 1.0  # what the paper's formula alone would report
    assert all(np.isnan(v) for v in summarise_checked(ap, labels).values())
    count, note = degenerate_note(labels, exclude_self)
    assert count == 3 and note.startswith("no value: each of the 3 queries is the only sample of its label")


def _retrieval_store(path, labels, images):
    from partaware.store import StoreWriter

    n = len(labels)
    layout = {"mean": ((8,), "float32", 4), "label": ((), "int64", 4), "image": ((), "int64", 4),
              "row": ((), "int64", 4), "valid": ((), "uint8", 4)}
    w = StoreWriter(path, n, layout, {"dataset": "toy", "model": "m", "split": "all"}, "h")
    w.write({"mean": np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32),
             "label": np.asarray(labels), "image": np.asarray(images), "row": np.arange(n),
             "valid": np.ones(n, np.uint8)})
    return w.publish()


@pytest.mark.parametrize("labels,images,expect_value", [
    ([0, 0, 0, 1, 2, 2, 3], [0, 1, 2, 0, 1, 2, 1], True),  # two self-only queries among seven
    ([4, 7, 9], [0, 0, 0], False),  # COCO's case: 3 patches of one image, each its own only positive
])
def test_retrieval_rows_count_and_explain_self_only_queries(tmp_path, caplog, labels, images, expect_value):
    from partaware.tasks import retrieval as E
    from partaware.results import context
    from partaware.store import open_store

    cfg = {"device": "cpu", "datasets": {"toy": {}}, "models": {"m": {"weights": "random"}},
           "retrieval": {"features": ["mean"], "exclude_self": True, "memory_mb": 16}, "stats": STATS}
    path = _retrieval_store(tmp_path / "all.zarr", labels, images)
    with open_store(path) as store, caplog.at_level(logging.WARNING):
        rows = E.retrieval_rows(cfg, context(cfg, "toy", "m"), store)
    n_self = int(self_only_queries(np.array(labels)).sum())
    assert all(r["degenerate"] == n_self for r in rows)
    messages = [r.getMessage() for r in caplog.records if "no other positive" in r.getMessage()]
    assert len(messages) == 1
    ap = next(r for r in rows if r["metric"] == "AP")
    if expect_value:
        assert "left out of AP and mAP" in messages[0]
        assert np.isfinite(ap["value"])
    else:
        assert "no value" in messages[0]
        assert np.isnan(ap["value"]) and np.isnan(ap["ci_low"]) and np.isnan(ap["ci_high"])
