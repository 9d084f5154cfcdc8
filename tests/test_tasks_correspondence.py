"""Task `correspondence` (tasks/correspondence.py): rows with intervals over pairs, per-part
rows, block features and skipped images, from a dense-map store and a pair table."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from partaware import roles
from partaware import tasks
from partaware.config import ConfigError
from partaware.data.pairs import write_pairs
from test_evals_correspondence import PATCH, SIZE, dense_map, pair_table

STATS = {"bootstrap": 200, "level": 0.95, "seed": 0}


class Store:
    """The FeatureStore API the task reads (attrs, array_names, read, read_checked, paths)."""

    def __init__(self, arrays, attrs):
        self.arrays, self.attrs, self.paths = arrays, attrs, [Path("mem.zarr")]

    def array_names(self):
        return list(self.arrays)

    def read(self, name, start=0, stop=None):
        return self.arrays[name][start:stop]

    def read_checked(self, name, start=0, stop=None, valid=None):
        return self.read(name, start, stop)


def cfg(**cc):
    task = tasks.get("correspondence")
    defaults = {k: v["default"] for k, v in task.schema["properties"].items()}
    return {"correspondence": {**defaults, **cc}, "stats": STATS}


@pytest.fixture
def setup(tmp_path):
    """Three images: b is a shifted copy of a; c is broken (skipped at extraction)."""
    wh = (300, 200)
    shift = np.array([25.0, 10.0])
    maps = {"a": dense_map(wh, lambda p: p), "b": dense_map(wh, lambda q: q - shift), "c": dense_map(wh, lambda p: p)}
    pts = np.array([[60.0, 50.0], [200.0, 150.0], [120.0, 90.0]])
    names = ["left eye", "right eye", "beak"]
    mirror = {"left eye": "right eye", "right eye": "left eye"}
    pairs = pd.concat([pair_table("a", "b", names, pts, pts + shift, 250.0, mirror=mirror, pair=0),
                       pair_table("b", "a", names, pts + shift, pts, 250.0, mirror=mirror, pair=1),
                       pair_table("a", "c", names, pts, pts, 250.0, pair=2)])
    write_pairs(pairs, tmp_path / "index" / "cub" / "pairs.parquet")
    keys = ["a", "b", "c"]
    arrays = {"dense_final": np.stack([maps[k] for k in keys]).astype(np.float16),
              "dense/2": np.stack([maps[k] for k in keys]).astype(np.float16),
              "size": np.array([wh] * 3, np.int64), "valid": np.array([1, 1, 0], np.uint8)}
    store = Store(arrays, {"image_keys": keys, "patch_size": PATCH, "input_size": SIZE})
    ctx = {"dataset": "cub", "model": "m", "group": "g", "weights": "random", "index_dir": tmp_path / "index" / "cub"}
    return store, ctx


def test_rows_with_intervals_per_part_and_blocks(setup):
    store, ctx = setup
    rows, per_part = tasks.get("correspondence").rows(cfg(blocks=[2]), ctx, [store])
    by = {(r["feature"], r["metric"]): r for r in rows}
    assert set(by) == {(f, m) for f in ("dense final", "block 2 dense")
                       for m in ("PCK@0.05", "PCK@0.1", "PCK@0.15", "left_right_confusion")}
    r = by[("dense final", "PCK@0.1")]
    assert r["task"] == "correspondence" and r["value"] == 100.0 and r["n"] == 6 and r["skipped"] == 1
    assert r["ci_low"] == 100.0 and r["ci_high"] == 100.0 and r["_sums"].ids.tolist() == [0, 1]
    assert by[("dense final", "left_right_confusion")]["value"] == 0.0
    assert by[("dense final", "left_right_confusion")]["n"] == 4
    parts = {(p["feature"], p["part"]) for p in per_part}
    assert ("dense final", "beak") in parts and ("block 2 dense", "left eye") in parts


def test_store_without_a_requested_block_is_refused(setup):
    store, ctx = setup
    del store.arrays["dense/2"]
    with pytest.raises(KeyError, match="no array 'dense/2'"):
        tasks.get("correspondence").rows(cfg(blocks=[2]), ctx, [store])


def test_registry_splits_and_checks():
    from partaware import kinds

    task = tasks.get("correspondence")
    assert "correspondence" in tasks.names() and "correspondence" in tasks.evaluated()
    c = cfg(size=448)
    ds = {"tasks": ["correspondence"]}
    assert task.splits(kinds.get("cub"), ds, c) == task.splits(kinds.get("spair"), ds, c) == ["test_dense448"]
    assert task.splits(kinds.get("segfolder"), ds, c) == task.splits(kinds.get("coco"), ds, c) == []
    assert task.splits(kinds.get("cub"), ds, None) == []  # the store's name needs correspondence.size
    assert "correspondence" in roles.tasks_of(kinds.get("cub")) and "correspondence" in roles.tasks_of(kinds.get("spair"))
    assert "correspondence" not in roles.tasks_of(kinds.get("coco"))
    assert tasks.statistic_of("PCK@0.07") == tasks.statistic_of("left_right_confusion") == "top1"
    assert tasks.statistic_of("PCK@x") is None
    with pytest.raises(ConfigError, match="correspondence.alphas"):
        task.check("datasets.cub", {"kind": "cub", "tasks": []}, cfg(alphas=[0.1, 0.1]))
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        tasks.get("nope")


def test_stale_store_of_another_pair_table_is_refused(setup, tmp_path):
    store, ctx = setup
    store.attrs = {**store.attrs, "image_keys": ["a", "b", "x"]}
    with pytest.raises(KeyError, match="extracted for another pair table"):
        tasks.get("correspondence").rows(cfg(), ctx, [store])


def test_end_to_end_from_images_through_a_published_store(tmp_path):
    """Generated images -> dense_plan -> a published store -> the task's rows: a random tiny
    encoder, so only the plumbing is checked (geometry, counts, finite values, intervals)."""
    import torch
    from PIL import Image

    from partaware.data.pairs import image_table
    from partaware.extraction.dense_images import dense_plan
    from partaware.extraction.loop import run_batches
    from partaware.models import build_encoder
    from partaware.store import StoreWriter, open_store

    rng = np.random.default_rng(0)
    sizes = {"a": (120, 80), "b": (90, 130), "c": (100, 100)}
    for key, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{key}.png")
    pts = np.array([[10.0, 20.0], [60.0, 40.0]])
    pairs = pd.concat([pair_table(str(tmp_path / f"{s}.png"), str(tmp_path / f"{t}.png"), ["x", "y"], pts, pts + 5,
                                  100.0, pair=i) for i, (s, t) in enumerate([("a", "b"), ("b", "c"), ("c", "a")])])
    pairs = pairs.assign(src_image=pairs["src_path"], trg_image=pairs["trg_path"])
    write_pairs(pairs, tmp_path / "index" / "pairs.parquet")
    run_cfg = {"extract": {"shards": 1, "batch_size": 8}, "cache": {"dtype": "float16", "chunk_rows": 4},
               "data": {"on_bad_image": "error"}}
    encoder = build_encoder({"arch": "vit_tiny_patch16_224", "seed": 1, "weights": "random",
                             "timm_kwargs": {"depth": 2}, "img_size": 64}).eval()
    plan = dense_plan(run_cfg, image_table(pairs), encoder, torch.device("cpu"), 64, [1], shard=0)
    layout = {**plan.layout, "row": ((), "int64", 4), "valid": ((), "uint8", 4)}
    out = tmp_path / "features" / "test_dense64.zarr"
    writer = StoreWriter(out, plan.n_rows, layout, plan.attrs, "h", resume_key="k")
    loader = torch.utils.data.DataLoader(plan.loader_data(0), batch_size=2, collate_fn=plan.collate)
    run_batches(loader, plan.make_step(encoder, torch.device("cpu"), None), writer, 4)
    writer.publish({})
    store = open_store(out)
    assert store.read("size").tolist() == [list(sizes[k]) for k in "abc"]
    ctx = {"dataset": "d", "model": "m", "group": "", "weights": "random", "index_dir": tmp_path / "index"}
    rows, per_part = tasks.get("correspondence").rows(cfg(size=64, blocks=[1]), ctx, [store])
    pck = [r for r in rows if r["metric"].startswith("PCK@")]
    assert len(pck) == 6 and all(r["n"] == 6 and 0 <= r["value"] <= 100 for r in pck)
    assert all(np.isfinite(r["ci_low"]) for r in pck)
    assert {p["part"] for p in per_part} == {"x", "y"}


def test_cub_kind_builds_pairs_and_plans_the_dense_store(tmp_path):
    import torch

    from partaware import kinds
    from partaware.data.demo import generate_demo_cub
    from partaware.data.pair_details import read_details
    from partaware.data.pairs import read_pairs
    from partaware.models import build_encoder

    root = generate_demo_cub(tmp_path / "demo", n_images=24, seed=0)
    c = {**cfg(pairs=20, size=64), "data": {"on_bad_image": "error"},
         "extract": {"shards": 1, "batch_size": 8}, "cache": {"dtype": "float16", "chunk_rows": 8}}
    kind, ds = kinds.get("cub"), {"name": "d", "root": str(root), "size": 112, "tasks": ["correspondence"]}
    kind.build_pairs(ds, c, tmp_path / "index" / "pairs.parquet")
    pairs = read_pairs(tmp_path / "index" / "pairs.parquet")
    assert pairs["pair"].nunique() == 20 and pairs["visible"].any()
    details = read_details(tmp_path / "index" / "pairs.parquet")  # keys only: CUB has no reporting splits
    assert list(details.columns) == ["pair", "part"] and len(details) == len(pairs)
    assert kind.input_size(c, ds, "test_dense64") == 64 and kind.input_size(c, ds, "test") == 112
    assert kind.store_arrays(ds, "test_dense64") == ["dense_final", "size"]
    assert kind.extract_inputs(ds, "test_dense64") == ["results/index/d/pairs.parquet"]
    encoder = build_encoder({"arch": "vit_tiny_patch16_224", "seed": 1, "weights": "random",
                             "timm_kwargs": {"depth": 2}, "img_size": 64}).eval()
    plan = kind.plan(c, "d", "test_dense64", encoder, torch.device("cpu"), tmp_path / "index" / "pairs.parquet", 0)
    assert plan.n_rows == len(set(pairs["src_image"]) | set(pairs["trg_image"]))
    assert plan.layout["dense_final"][0][1:] == (4, 4)


def test_table_md_has_a_correspondence_section(setup, tmp_path):
    """The rows of two encoders through `partaware table`'s writer: a section with each encoder's
    PCK and left/right confusion, their intervals, and the parts it confuses most (none here)."""
    from partaware.atomic import write_csv
    from partaware.intervals import settings as stats_settings, write_results
    from partaware.report import write_table

    store, ctx = setup
    inputs = []
    for model in ("m1", "m2"):
        rows, per_part = tasks.get("correspondence").rows(cfg(), {**ctx, "model": model}, [store])
        out = tmp_path / "evals" / "cub" / model / "correspondence.csv"
        write_csv(pd.DataFrame(per_part), out.with_name("correspondence_per_part.csv"))
        write_results(rows, out, stats_settings({"stats": STATS}))
        inputs.append(out)
    table = write_table(inputs, tmp_path / "table.csv", tmp_path / "table.md")
    assert set(table["metric"]) == {"PCK@0.05", "PCK@0.1", "PCK@0.15", "left_right_confusion"}
    md = (tmp_path / "table.md").read_text()
    section = md.split("## Part correspondence")[1].split("\n## ")[0]
    assert "### cub: dense final" in section and "| model | PCK@0.05 | PCK@0.1 | PCK@0.15 | left_right_confusion |" in section
    line = next(ln for ln in section.splitlines() if ln.startswith("| m1 |"))
    assert line.count("[") >= 4  # every value with its interval over pairs
    assert line.endswith("| none |")  # no part confused above zero (on too few chances besides): none listed
