"""Confidence intervals: the paired bootstrap over images (evals/bootstrap.py), the intervals on
result rows and their sidecars (intervals.py), and what table.md shows of them (report.py)."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from partaware import report
from partaware.evals import bootstrap as BS
from partaware.evals.metrics import confusion_matrix, per_image_counts, seg_metrics
from partaware.evals.retrieval import average_precision_per_query, summarise
from partaware.intervals import attach, read_sidecar, sidecar_path, write_results
from partaware.results import result_row

STATS = {"bootstrap": 200, "level": 0.95, "seed": 0}


def clustered_correctness(rng, n_images, mean=0.6, concentration=4.0):
    """0/1 outcomes whose images differ: image i has success probability p_i ~ Beta (mean
    `mean`), and 1-7 samples. The true accuracy is `mean` (sample counts are independent of p_i)."""
    p = rng.beta(mean * concentration, (1 - mean) * concentration, n_images)
    counts = rng.integers(1, 8, n_images)
    ids = np.repeat(np.arange(n_images), counts)
    return (rng.random(len(ids)) < p[ids]).astype(np.uint8), ids


def width(interval):
    return interval[1] - interval[0]


# --------------------------------------------------------------------------- coverage and width
def test_intervals_cover_the_true_value_at_about_the_nominal_rate():
    """200 synthetic test sets with per-image clustering: the 90% interval holds the true
    accuracy in about 90% of them (resampling samples instead of images: about 75% here)."""
    rng = np.random.default_rng(123)
    hits = 0
    for trial in range(200):
        correct, ids = clustered_correctness(rng, 60)
        lo, hi = BS.intervals(BS.accuracy_sums(correct, ids), ["top1"], 200, level=0.90, seed=trial)["top1"]
        hits += lo <= 0.6 <= hi
    assert 0.80 <= hits / 200 <= 0.97, hits


def test_intervals_shrink_with_more_images():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 200, 800):
        correct, ids = clustered_correctness(rng, n)
        widths.append(width(BS.intervals(BS.accuracy_sums(correct, ids), ["top1"], 400)["top1"]))
    assert widths[0] > 1.5 * widths[1] > 1.5 * 1.5 * widths[2], widths  # ~ 1 / sqrt(images)


def test_queries_of_one_image_are_resampled_together():
    """Five queries per image with one shared AP: resampling images gives a wider interval than
    treating the queries as independent (which would understate the uncertainty ~sqrt(5)-fold)."""
    rng = np.random.default_rng(1)
    per_image = rng.random(100)
    ap, images = np.repeat(per_image, 5), np.repeat(np.arange(100), 5)
    labels = np.zeros(len(ap), int)
    by_image = BS.intervals(BS.retrieval_sums(ap, images, labels), ["AP"], 500)["AP"]
    as_independent = BS.intervals(BS.retrieval_sums(ap, np.arange(len(ap)), labels), ["AP"], 500)["AP"]
    assert width(by_image) > 1.8 * width(as_independent)


def test_same_settings_give_the_same_interval_and_the_seed_changes_it():
    correct, ids = clustered_correctness(np.random.default_rng(2), 80)
    sums = BS.accuracy_sums(correct, ids)
    assert BS.intervals(sums, ["top1"], 300, seed=4) == BS.intervals(sums, ["top1"], 300, seed=4)
    assert BS.intervals(sums, ["top1"], 300, seed=4) != BS.intervals(sums, ["top1"], 300, seed=5)
    assert all(np.isnan(v) for v in BS.intervals(sums, ["top1"], 0)["top1"])  # bootstrap: 0 = off


# --------------------------------------------------------------------------- retrieval
def test_retrieval_point_values_match_summarise_and_lie_in_their_intervals():
    rng = np.random.default_rng(3)
    n_images, parts = 60, 4
    centres = rng.standard_normal((parts, 16))
    labels = np.tile(np.arange(parts), n_images)
    images = np.repeat(np.arange(n_images) * 7 + 1000, parts)  # ids need not be 0..n-1
    feats = centres[labels] + 1.2 * rng.standard_normal((len(labels), 16)) + \
        0.8 * rng.standard_normal((n_images, 16))[np.repeat(np.arange(n_images), parts)]
    keep = rng.random(len(labels)) > 0.1  # some patches missing, as skipped ones are
    ap = average_precision_per_query(feats[keep].astype(np.float32), labels[keep], exclude_self=True)
    ap[0] = np.nan  # a query without positives counts nowhere
    sums = BS.retrieval_sums(ap, images[keep], labels[keep])
    expected = summarise(ap, labels[keep])
    found = BS.intervals(sums, ["AP", "mAP"], 500)
    for metric in ("AP", "mAP"):
        assert BS.value(sums, metric) == pytest.approx(expected[metric], abs=1e-12)
        lo, hi = found[metric]
        assert lo < expected[metric] < hi and hi - lo < 0.2


# --------------------------------------------------------------------------- segmentation
def test_segmentation_intervals_from_per_image_sums_equal_explicit_confusion_matrices():
    """A resample's confusion matrix is the sum of its images' matrices: mIoU, mAcc and aAcc of
    every resample from the per-image intersection / union / label sums equal seg_metrics of the
    explicitly summed matrices (classes absent from a resample included)."""
    rng = np.random.default_rng(4)
    n, classes = 7, 5
    label = rng.integers(0, classes, (n, 9, 9))
    label[rng.random(label.shape) < 0.2] = 255  # ignored pixels
    label[0][label[0] != 255] = 4  # class 4 only in image 0: absent from many resamples
    pred = np.where(rng.random(label.shape) < 0.6, label, rng.integers(0, classes - 1, label.shape))
    pred[pred == 255] = 0
    inter, union, area = per_image_counts(pred, label, classes)
    sums = BS.segmentation_sums(inter, union, area)
    per_image_conf = np.stack([confusion_matrix(pred[i], label[i], classes) for i in range(n)])
    metrics = ["mIoU", "mAcc", "aAcc"]
    reps = BS.replicates([sums], metrics, 60, seed=9)[0]
    weights = np.concatenate(list(BS.resample_counts(n, 60, seed=9)))
    explicit = [seg_metrics(np.tensordot(w, per_image_conf, axes=1)) for w in weights]
    for j, m in enumerate(metrics):
        np.testing.assert_allclose(reps[j], [e[m] for e in explicit], rtol=1e-12, equal_nan=True)
        assert BS.value(sums, m) == pytest.approx(seg_metrics(per_image_conf.sum(0))[m], rel=1e-12)


def test_per_image_counts_add_up_to_the_confusion_matrix():
    rng = np.random.default_rng(5)
    label = rng.integers(0, 4, (3, 6, 6))
    pred = rng.integers(0, 4, (3, 6, 6))
    inter, union, area = per_image_counts(pred, label, 4)
    conf = confusion_matrix(pred, label, 4)
    assert np.array_equal(inter.sum(0), np.diag(conf)) and np.array_equal(area.sum(0), conf.sum(1))
    assert np.array_equal(union.sum(0), conf.sum(1) + conf.sum(0) - np.diag(conf))
    with pytest.raises(ValueError, match="outside"):
        per_image_counts(pred + 1, label, 4)


# --------------------------------------------------------------------------- paired differences
def test_the_difference_of_identical_encoders_is_exactly_zero():
    correct, ids = clustered_correctness(np.random.default_rng(6), 50)
    a = BS.accuracy_sums(correct, ids)
    out = BS.paired_difference(a, BS.accuracy_sums(correct.copy(), ids), "top1", 300)
    assert out["diff"] == 0 and out["low"] == 0 and out["high"] == 0 and not out["excludes_zero"]


def test_a_paired_difference_is_seen_where_unpaired_intervals_overlap():
    """Encoder b is encoder a plus a small, consistent gain on the same images: their own intervals
    overlap, but the paired interval of the difference excludes zero."""
    rng = np.random.default_rng(7)
    ap_a = rng.random(400)
    ap_b = np.clip(ap_a + 0.02 + 0.01 * rng.standard_normal(400), 0, 1)
    images, labels = np.repeat(np.arange(100), 4), np.tile(np.arange(4), 100)
    a, b = BS.retrieval_sums(ap_a, images, labels), BS.retrieval_sums(ap_b, images, labels)
    ia, ib = BS.intervals(a, ["AP"], 400)["AP"], BS.intervals(b, ["AP"], 400)["AP"]
    assert ib[0] < ia[1]  # overlapping
    out = BS.paired_difference(b, a, "AP", 400)
    assert out["excludes_zero"] and 0 < out["low"] < out["diff"] < out["high"]
    assert out["diff"] == pytest.approx(ap_b.mean() - ap_a.mean())
    # only the images both encoders have are compared
    assert BS.paired_difference(b.subset(b.ids[10:]), a, "AP", 50)["n_images"] == 90


# --------------------------------------------------------------------------- rows, sidecars, table.md
def rows_of(model, ap, images, labels, stats=STATS):
    ctx = {"dataset": "toy", "model": model, "group": "g", "weights": "w"}
    summary = summarise(ap, labels)
    rows = [result_row(ctx, "retrieval", "mean", m, 100 * summary[m], len(ap), protocol="paper", notes="query included")
            for m in ("AP", "mAP")]
    return attach(rows, BS.retrieval_sums(ap, images, labels), stats)


def test_table_shows_intervals_and_pairwise_differences(tmp_path):
    rng = np.random.default_rng(8)
    images, labels = np.repeat(np.arange(80), 3), np.tile(np.arange(3), 80)
    ap_a = rng.random(240)
    ap_b = np.clip(ap_a + 0.05 + 0.02 * rng.standard_normal(240), 0, 1)
    inputs = []
    for model, ap in (("enc_a", ap_a), ("enc_b", ap_b), ("enc_a2", ap_a)):
        csv = tmp_path / "evals" / model / "retrieval.csv"
        write_results(rows_of(model, ap, images, labels), csv, STATS)
        inputs.append(csv)
    written = pd.read_csv(inputs[0])
    assert "_sums" not in written and (written["ci_low"] < written["value"]).all() \
        and (written["value"] < written["ci_high"]).all()
    settings, entries = read_sidecar(sidecar_path(inputs[0]))
    assert settings == STATS and entries[0]["metrics"] == ["AP", "mAP"]
    assert np.array_equal(entries[0]["sums"].ids, np.arange(80))

    table = report.write_table(inputs, tmp_path / "table.csv", tmp_path / "table.md")
    md = (tmp_path / "table.md").read_text()
    row = table[(table["model"] == "enc_a") & (table["metric"] == "AP")].iloc[0]
    assert f"{row['value']:.1f} [{row['ci_low']:.1f}, {row['ci_high']:.1f}]" in md
    assert "## Pairwise differences" in md
    pair_lines = [line for line in md.splitlines() if line.startswith("| enc_a |")]
    # enc_a - enc_b: clearly negative (marked), enc_a - enc_a2: exactly 0 (not marked)
    assert re.search(r"\| -\d\.\d \[-\d\.\d, -\d\.\d\]\* \| \+0\.0 \[\+0\.0, \+0\.0\] \|", pair_lines[0]), pair_lines
    csv = pd.read_csv(tmp_path / "table.csv")
    assert {"ci_low", "ci_high"} <= set(csv.columns)


def test_table_without_intervals_or_with_several_seeds(tmp_path):
    """CSVs from before intervals (no ci columns, no sidecar) still make a table; several seeds
    show mean ± std without a bracket; a bootstrap of 0 writes no sidecar (and removes an old one)."""
    ctx = {"dataset": "toy", "model": "m", "group": "g", "weights": "w"}
    old = tmp_path / "old.csv"
    pd.DataFrame([{k: v for k, v in result_row(ctx, "linear", "cls", "top1_best_epoch", 50.0, 10, seed=0).items()
                   if k not in ("ci_low", "ci_high")}]).to_csv(old, index=False)
    seeds = tmp_path / "seeds.csv"
    correct, ids = clustered_correctness(np.random.default_rng(9), 30)
    rows = []
    for seed, v in ((0, 60.0), (1, 62.0)):
        row = result_row({**ctx, "model": "n"}, "linear", "cls", "top1_best_epoch", v, 10, seed=seed)
        rows += attach([row], BS.accuracy_sums(correct, ids), STATS)
    write_results(rows, seeds, STATS)
    assert sidecar_path(seeds).exists()
    table = report.write_table([old, seeds], tmp_path / "table.csv", tmp_path / "table.md")
    cells = [line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("| toy")]
    assert len(cells) == 1 and cells[0].endswith("| 50.0 | 61.0 ± 1.4 |") and "[" not in cells[0]
    assert table.loc[table["model"] == "m", "ci_low"].isna().all()
    assert table.loc[table["model"] == "n", "ci_low"].notna().all()  # each seed's interval stays in table.csv
    write_results(rows, seeds, {**STATS, "bootstrap": 0})
    assert not sidecar_path(seeds).exists()


def test_attach_without_image_ids_gives_nan_columns():
    ctx = {"dataset": "toy", "model": "m", "group": "g", "weights": "w"}
    rows = attach([result_row(ctx, "linear", "cls", "top1", 50.0, 10)], None, STATS)
    assert np.isnan(rows[0]["ci_low"]) and np.isnan(rows[0]["ci_high"]) and "_sums" not in rows[0]


# --------------------------------------------------------------------------- the evaluations, in process
def test_demo_evaluations_give_intervals_around_their_values(tmp_path, one_torch_thread):
    """A tiny part dataset and a tiny segmentation dataset through extraction and every cached
    evaluation: part stores hold each row's image id (the index's `image_id`), every row's
    interval holds its value, the sidecars pair up, and table.md shows brackets."""
    from partaware import config as C
    from partaware import tasks
    from partaware.results import context
    from partaware.data.demo import generate_demo_cub
    from partaware.data.demo_seg import generate_demo_seg
    from partaware.data.parts import select_split, write_index
    from partaware.extract import extract
    from partaware.kinds import build_part_index
    from partaware.store import open_store

    generate_demo_cub(tmp_path / "cub", 12, image_size=(160, 120))
    generate_demo_seg(tmp_path / "seg", 3, 4, size=48)
    tiny = {"arch": "vit_tiny_patch16_224", "weights": "random",
            "timm_kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 2}}
    cfg = C.fill_spec({
        "seed": 0, "device": "cpu", "cache": {"format": "hdf5", "chunk_rows": 8},
        "extract": {"batch_size": 16, "num_workers": 0}, "data": {"on_bad_image": "error"},
        "datasets": {
            "parts": {"kind": "cub", "name": "parts", "root": str(tmp_path / "cub"), "parts": [11, 12, 9, 14],
                      "size": 32, "resize": 36, "tasks": ["retrieval", "linear", "attentive", "logistic"]},
            "seg": {"kind": "segfolder", "name": "seg", "root": str(tmp_path / "seg"), "size": 32, "blocks": [1, 2],
                    "tasks": ["segmentation"], "label_sets": {"part": {"dir": "ann", "classes": 6}}}},
        "models": {"a": {**tiny, "seed": 1}, "b": {**tiny, "seed": 2}},
        "retrieval": {"features": ["mean", "cls"]}, "linear": {"epochs": 3, "batch_size": 16},
        "attentive": {"epochs": 2, "batch_size": 16, "bn_group": None},
        "segmentation": {"protocol": "cached", "iters": 3, "batch_size": 2, "warmup_iters": 1},
        "stats": {"bootstrap": 100, "level": 0.9, "seed": 0}})
    index = build_part_index(cfg["datasets"]["parts"])
    for split in ("all", "train", "test"):
        write_index(select_split(index, split), tmp_path / f"{split}.parquet")
    inputs = []
    for model in ("a", "b"):
        stores = {}
        for split in ("all", "train", "test"):
            stores[split] = extract(cfg, "parts", model, split, tmp_path / f"{split}.parquet",
                                    tmp_path / model / f"{split}.h5")
        for split in ("train", "val"):
            stores["seg_" + split] = extract(cfg, "seg", model, split, None, tmp_path / model / f"seg_{split}.h5")
        with open_store(stores["all"]) as s:
            images = s.read("image")
        expected = select_split(index, "all").set_index("row")["image_id"]
        assert np.array_equal(images, expected.loc[np.arange(len(images))].to_numpy())
        ctx = context(cfg, "parts", model)
        opened = {k: open_store(p) for k, p in stores.items()}
        runs = {"retrieval": tasks.get("retrieval").rows(cfg, ctx, [opened["all"]])[0],
                "linear": tasks.get("linear").rows(cfg, ctx, [opened["train"], opened["test"]])[0],
                "attentive": tasks.get("attentive").rows(cfg, ctx, [opened["train"], opened["test"]])[0],
                "logistic": tasks.get("logistic").rows(cfg, ctx, [opened["train"], opened["test"]])[0],
                "segmentation": tasks.get("segmentation").rows(cfg, context(cfg, "seg", model), [opened["seg_train"],
                                                                                            opened["seg_val"]])[0]}
        for store in opened.values():
            store.close()
        for task, rows in runs.items():
            csv = tmp_path / "evals" / model / f"{task}.csv"
            write_results(rows, csv, cfg["stats"])
            inputs.append(csv)
    table = report.write_table(inputs, tmp_path / "table.csv", tmp_path / "table.md")
    table = pd.read_csv(tmp_path / "table.csv")
    assert table["ci_low"].notna().all() and set(table["task"]) == {"retrieval", "linear", "attentive", "logistic",
                                                                    "segmentation"}
    assert (table["ci_low"] <= table["value"] + 1e-9).all() and (table["value"] <= table["ci_high"] + 1e-9).all()
    md = (tmp_path / "table.md").read_text()
    assert re.search(r"\| \d+\.\d \[\d+\.\d, \d+\.\d\] \|", md)
    pairs = md.split("## Pairwise differences")[1]
    for task in ("retrieval AP", "linear top1_best_epoch", "attentive top1_last_epoch", "logistic top1",
                 "segmentation mIoU"):
        assert f": {task}," in pairs, task


def test_stores_without_image_ids_still_evaluate_without_intervals(tmp_path, caplog):
    """A part store extracted before stores held `image` scores as before, without an interval
    (and says why); an image folder's rows are its images, so `row` serves there."""
    import logging

    from partaware import tasks
    from partaware.results import context
    from partaware.store import StoreWriter, open_store

    rng = np.random.default_rng(10)
    n = 24
    layout = {"mean": ((8,), "float16", 8), "label": ((), "int64", 8), "row": ((), "int64", 8),
              "valid": ((), "uint8", 8)}
    writer = StoreWriter(tmp_path / "all.h5", n, layout, {}, "h")
    writer.write({"mean": rng.standard_normal((n, 8)), "label": np.arange(n) % 3, "row": np.arange(n),
                  "valid": np.ones(n)})
    writer.publish()
    cfg = {"device": "cpu", "retrieval": {"features": ["mean"], "exclude_self": False, "memory_mb": 64},
           "stats": STATS, "datasets": {"parts": {"kind": "cub"}, "folder": {"kind": "imagefolder"}}}
    with open_store(tmp_path / "all.h5") as store, caplog.at_level(logging.INFO, logger="partaware.tasks.common"):
        parts = tasks.get("retrieval").rows(cfg, {"dataset": "parts", "model": "m", "group": "", "weights": "w"}, [store])[0]
        # the evaluate command tells tasks that an image folder's rows are its images (cli.cmd_evaluate)
        folder = tasks.get("retrieval").rows(cfg, {"dataset": "folder", "model": "m", "group": "", "weights": "w",
                                                   "rows_are_images": True}, [store])[0]
    assert all(np.isnan(r["ci_low"]) and "_sums" not in r for r in parts) and parts[0]["value"] > 0
    assert "holds no image ids" in caplog.text and "delete the store and rerun" in caplog.text
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in folder)
    assert np.array_equal(folder[0]["_sums"].ids, np.arange(n))
