"""Figures from small synthetic stores and images: retrieval grid, feature maps, summary plot,
the paper's numbers and the table's paper column."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from partaware import paper
from partaware.data.demo import generate_demo_cub
from partaware.data.demo_seg import generate_demo_seg
from partaware.data.parts import select_split, write_index
from partaware.kinds import build_part_index
from partaware.data.segfolder import list_samples, load_label, seg_view
from partaware.figures import figure_settings
from partaware.figures import tiles as T
from partaware.figures.feature_maps import feature_maps, maps_geometry, pca_rgb
from partaware.figures.retrieval_grid import (correctness, grid_geometry, nearest_rows,
                                              retrieval_grid)
from partaware.figures.summary import figure_size, summary_data, summary_plot
from partaware.report import write_table
from partaware.store import StoreWriter, open_store


def _write_store(path, arrays: dict, attrs=None):
    n = len(next(iter(arrays.values())))
    layout = {k: (v.shape[1:], "float16" if v.dtype.kind == "f" else str(v.dtype), 8) for k, v in arrays.items()}
    writer = StoreWriter(path, n, layout, attrs or {}, "h")
    writer.write(arrays)
    return writer.publish()


def _not_blank(path, min_std=10.0):
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return pixels.std() > min_std


# --------------------------------------------------------------------------------- retrieval grid
@pytest.fixture(scope="module")
def part_data(tmp_path_factory):
    """A demo CUB dataset, its `all` index, and stores of two models (one with `proj`), where
    query row q has a known nearest neighbour of its part and a known second of another part."""
    tmp = tmp_path_factory.mktemp("parts")
    root = generate_demo_cub(tmp / "demo", n_images=6, seed=0)
    index = select_split(build_part_index({"kind": "cub", "root": str(root)}), "all")
    index_path = tmp / "results/index/demo/all.parquet"
    write_index(index, index_path)
    labels = index["label"].to_numpy()
    n = len(index)
    q = 0
    same = int(np.flatnonzero((labels == labels[q]) & (np.arange(n) != q))[0])
    other = int(np.flatnonzero(labels != labels[q])[0])
    decoy = int(np.flatnonzero((labels != labels[q]) & (np.arange(n) != other))[0])
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(n, 64))
    mean[same] = mean[q] + 0.05 * rng.normal(size=64)
    mean[other] = mean[q] + 0.3 * rng.normal(size=64)
    mean[decoy] = mean[q]  # an exact copy of the query, but its image is skipped (valid 0)
    valid = np.ones(n, np.uint8)
    valid[decoy] = 0
    meta = {"row": np.arange(n, dtype=np.int64), "label": labels.astype(np.int64), "valid": valid}
    stores = {}
    for model, extra in (("model_a", {"proj": rng.normal(size=(n, 8))}), ("model_b", {})):
        path = tmp / f"results/features/demo/{model}/all.zarr"
        feats = {"mean": mean + (0 if model == "model_a" else 0.01 * rng.normal(size=mean.shape))}
        stores[model] = _write_store(path, {**feats, **extra, **meta}, {"model": model})
    return {"index": index, "index_path": index_path, "stores": stores, "q": q, "same": same,
            "other": other, "decoy": decoy, "tmp": tmp}


def test_correctness_matrix():
    labels = np.array([0, 0, 1, 2, 0])
    got = correctness(labels, [0, 2], np.array([[1, 2, -1], [3, 2, 4]]))
    assert got.tolist() == [[True, False, False], [False, True, False]]


def test_same_part_label_counts_the_neighbours_that_exist():
    from partaware.figures.retrieval_grid import same_part_label

    assert same_part_label(np.array([True, False, False, False, False]), np.array([4, 9, -1, -1, -1])) == "1/2 same part"
    assert same_part_label(np.zeros(5, bool), np.arange(5)) == "0/5 same part"


def test_nearest_rows_excludes_query_and_invalid(part_data):
    with open_store(part_data["stores"]["model_a"]) as store:
        scores, rows = nearest_rows(store, "mean", [part_data["q"]], k=3, batch_rows=5)
    assert rows[0, 0] == part_data["same"] and rows[0, 1] == part_data["other"]
    assert part_data["q"] not in rows and part_data["decoy"] not in rows
    assert np.all(np.diff(scores[0]) <= 0)


def test_retrieval_grid_marks_neighbours(part_data, tmp_path):
    out = tmp_path / "grid.png"
    k = 4
    res = retrieval_grid(part_data["index_path"], part_data["stores"], out, k=k, queries=[part_data["q"]],
                         tile=48, features=["mean", "proj"])
    titles = [(r.model, r.feature) for r in res["rows"]]
    assert titles == [("model_a", "mean"), ("model_a", "proj"), ("model_b", "mean")]  # encoded vs projected
    assert res["correct"][0][0, :2].tolist() == [True, False]
    geo = grid_geometry(1, len(titles), k, 48)
    image = Image.open(out).convert("RGB")
    assert image.size == (geo["width"], geo["height"])
    assert _not_blank(out)
    # the frames read back: nearest neighbour green, second (another part) red, query blue
    assert image.getpixel(geo["origin"](0, 0, 1)) == T.GREEN
    assert image.getpixel(geo["origin"](0, 0, 2)) == T.RED
    assert image.getpixel(geo["origin"](0, 0, 0)) == T.BLUE


def test_retrieval_grid_random_queries_cover_parts(part_data, tmp_path):
    res = retrieval_grid(part_data["index_path"], {"model_b": part_data["stores"]["model_b"]},
                         tmp_path / "g.png", k=2, n_queries=4, seed=3, tile=32)
    labels = part_data["index"].set_index("row").loc[res["queries"], "label"]
    assert len(res["queries"]) == 4 and labels.nunique() == 4
    assert part_data["decoy"] not in res["queries"]
    again = retrieval_grid(part_data["index_path"], {"model_b": part_data["stores"]["model_b"]},
                           tmp_path / "g2.png", k=2, n_queries=4, seed=3, tile=32)
    assert again["queries"] == res["queries"]


def test_figure_grid_cli(part_data, tmp_path):
    import argparse

    from partaware.cli_figures import add_figure_commands

    parser = argparse.ArgumentParser()
    add_figure_commands(parser.add_subparsers(dest="command"))
    spec = {"datasets": {"demo": {}}, "figures": figure_settings({"figures": {"k": 3, "tile": 32,
                                                                         "queries": {"demo": [0]}}}, "demo")}
    out = tmp_path / "cli.png"
    args = parser.parse_args(["figure-grid", "--spec", json.dumps(spec), "--dataset", "demo",
                              "--index", str(part_data["index_path"]), "--out", str(out),
                              "--models", "A", "B", "--", *map(str, part_data["stores"].values())])
    args.fn(args)
    assert Image.open(out).size == tuple(grid_geometry(1, 3, 3, 32)[k] for k in ("width", "height"))


# --------------------------------------------------------------------------------- feature maps
def test_pca_rgb_separates_two_regions():
    maps = np.zeros((2, 8, 4, 4))
    maps[:, 0, :2] = 5.0  # top half differs from the bottom half along one direction
    maps += np.random.default_rng(0).normal(0, 0.01, maps.shape)
    rgb = pca_rgb(maps)
    assert rgb.shape == (2, 4, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert abs(rgb[:, :2, :, 0].mean() - rgb[:, 2:, :, 0].mean()) > 0.9


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    """A demo segmentation folder and val stores of two "encoders" whose token maps follow the
    part labels (so their principal components show the parts)."""
    tmp = tmp_path_factory.mktemp("seg")
    root = generate_demo_seg(tmp / "seg", n_train=1, n_val=5, size=64, seed=0)
    samples = list_samples(root, "val", {"part": "ann", "object": "ann_object"})
    parts = np.stack([seg_view(Image.open(s["img"]), load_label(s["part"], 6), 64)[1] for s in samples])
    rng = np.random.default_rng(0)
    small = parts[:, 2::4, 2::4]  # (N, 16, 16): the token grid of a patch-4 "encoder"
    stores = {}
    for model in ("enc_a", "enc_b"):
        maps = rng.normal(size=(7, 12))[small].transpose(0, 3, 1, 2) + rng.normal(0, 0.1, (len(samples), 12, 16, 16))
        arrays = {"layers/4": maps * 0.5, "layers/12": maps, "labels/part": parts,
                  "row": np.arange(len(samples), dtype=np.int64), "valid": np.ones(len(samples), np.uint8)}
        stores[model] = _write_store(tmp / f"results/features/seg/{model}/val.h5", arrays)
    return {"root": root, "stores": stores}


def test_feature_maps(seg_data, tmp_path):
    out = tmp_path / "maps.png"
    res = feature_maps(seg_data["root"], "val", {"part": "ann", "object": "ann_object"}, seg_data["stores"],
                       out, size=64, blocks=[4, 12], n_images=3, seed=0, cell=48)
    assert res["arrays"] == {"enc_a": "layers/12", "enc_b": "layers/12"} and res["label_set"] == "part"
    geo = maps_geometry(3, 2, 48)
    assert Image.open(out).size == (geo["width"], geo["height"])
    assert _not_blank(out)
    x, y = geo["origin"](0, 2)  # the first PCA tile is not one flat colour
    tile = np.asarray(Image.open(out).convert("RGB").crop((x, y, x + 48, y + 48)), dtype=np.float32)
    assert tile.std() > 10


def test_figure_maps_cli(seg_data, tmp_path):
    import argparse

    from partaware.cli_figures import add_figure_commands
    from partaware.figures import MAPS_KEYS

    parser = argparse.ArgumentParser()
    add_figure_commands(parser.add_subparsers(dest="command"))
    ds = {"kind": "segfolder", "root": str(seg_data["root"]), "size": 64, "blocks": [4],
          "label_sets": {"part": {"dir": "ann", "classes": 6}, "object": {"dir": "ann_object", "classes": 3}}}
    figures = figure_settings({"figures": {"n_images": 2, "cell": 40, "k": 9}}, "seg", MAPS_KEYS)
    assert "k" not in figures  # a grid setting does not redraw the maps
    out = tmp_path / "cli.png"
    args = parser.parse_args(["figure-maps", "--spec", json.dumps({"datasets": {"seg": ds}, "figures": figures}),
                              "--dataset", "seg", "--out", str(out), *map(str, seg_data["stores"].values())])
    args.fn(args)
    geo = maps_geometry(2, 2, 40)
    assert Image.open(out).size == (geo["width"], geo["height"])


# --------------------------------------------------------------------------------- paper + table
def _rows(dataset, task, feature, metric, values, label_set="part", weights="checkpoint", seeds=(0,)):
    return [{"dataset": dataset, "task": task, "model": m, "group": "", "weights": weights,
             "feature": feature, "label_set": label_set, "protocol": "paper", "metric": metric,
             "value": v + 0.2 * s, "n": 10, "seed": s, "skipped": 0}
            for m, v in values.items() for s in seeds]


@pytest.fixture
def results(tmp_path):
    rows = (_rows("cub", "retrieval", "mean", "AP", {"dino": 50.0, "mae": 30.0})
            + _rows("cub", "retrieval", "proj", "AP", {"dino": 30.0})
            + _rows("cub", "linear", "cls", "top1_best_epoch", {"dino": 92.0, "mae": 85.0}, seeds=(0, 1))
            + _rows("ade20k", "segmentation", "blocks 4+6+8+12", "mIoU", {"dino": 25.0})
            + _rows("ade20k", "segmentation", "blocks 4+6+8+12", "mIoU", {"dino": 30.0}, label_set="object")
            + _rows("cub", "retrieval", "mean", "AP", {"rand": 10.0}, weights="random"))
    paths = []
    for i, chunk in enumerate([rows[:3], rows[3:]]):
        paths.append(tmp_path / f"evals/{i}.csv")
        paths[-1].parent.mkdir(exist_ok=True)
        pd.DataFrame(chunk).to_csv(paths[-1], index=False)
    return paths


def test_paper_values():
    assert len(paper.PAPER) == 7 * 8 - 4 * 2 + 7 * 3 + 7 * 3 + 7 * 2  # + Table 2 (3 metrics), Table 1 (2 probes)
    assert paper.paper_value("ade20k150", "segmentation", "object", paper.SEG_FEATURE, "mIoU", "ibot") == 38.3
    assert paper.paper_value("ade20k150", "segmentation", "object", paper.SEG_FEATURE, "aAcc", "beit") == 64.9
    assert paper.paper_value("cub", "retrieval", "part", "mean", "AP", "mocov3") == 50.8
    assert paper.paper_value("coco", "attentive", "part", "tokens", "top1_best_epoch", "ibot") == 95.1
    assert paper.paper_value("lip", "segmentation", "part", paper.SEG_FEATURE, "mIoU", "cae") == 43.7
    assert paper.paper_value("cub", "retrieval", "part", "proj", "AP", "deit") is None  # no head
    assert paper.paper_value("ade20k", "segmentation", "object", paper.SEG_FEATURE, "mIoU", "dino") is None
    assert set(paper.paper_table().columns) == {*paper.KEY, "paper"}


def test_table_paper_column(results, tmp_path):
    table = write_table(results, tmp_path / "table.csv", tmp_path / "table.md")
    md = (tmp_path / "table.md").read_text()
    assert "50.0 (paper 48.9, +1.1)" in md        # dino cub mean AP
    assert "30.0 (paper 31.7, -1.7)" in md        # dino cub proj AP
    assert "92.1 ± 0.1 (paper 93.2, -1.1)" in md  # two seeds
    assert "25.0 (paper 28.9, -3.9)" in md        # ade20k part mIoU
    object_line = next(line for line in md.splitlines() if "| object |" in line)
    assert "| 30.0 |" in object_line and "(paper" not in object_line  # ADE20K object: not in the paper's table
    csv = pd.read_csv(tmp_path / "table.csv")
    assert "paper" in csv.columns and len(csv) == len(table)
    assert csv.loc[csv["model"] == "rand", "paper"].isna().all()  # random weights never match
    assert csv.loc[csv["label_set"] == "object", "paper"].isna().all()


def test_summary_plot(results, tmp_path):
    write_table(results, tmp_path / "table.csv", tmp_path / "table.md")
    out = tmp_path / "summary.png"
    data = summary_plot(tmp_path / "table.csv", out)
    panels = data.groupby(["dataset", "family"]).ngroups
    assert panels == 3  # cub AP, cub accuracy, ade20k mIoU
    assert Image.open(out).size == figure_size(panels)
    assert _not_blank(out, min_std=5)
    dino = data[(data["model"] == "dino") & (data["dataset"] == "cub") & (data["group"] == "mean")]
    assert dino["paper"].item() == 48.9
    assert data.loc[data["group"] == "object", "paper"].isna().all()
    assert summary_data(pd.DataFrame()).empty


def test_summary_plot_of_empty_table(tmp_path):
    (tmp_path / "table.csv").write_text("")
    summary_plot(tmp_path / "table.csv", tmp_path / "s.png")
    assert Image.open(tmp_path / "s.png").size == figure_size(0)


def test_summary_follows_the_configs_k_marks_thin_bars_and_says_why_a_panel_is_empty(tmp_path):
    """knn rows of k=10 (the headline names k=20) still give bars, labelled with their k; a row
    on 1 % of its images is hatched (table.md's mark); an all-n/a panel says its notes' reason."""
    def row(task, metric, value, feature="mean", images=99, skipped=1, notes="", dataset="cub"):
        return {"dataset": dataset, "task": task, "model": "m", "feature": feature, "label_set": "part",
                "protocol": "exact", "metric": metric, "value": value, "n": 40, "images": images,
                "skipped": skipped, "notes": notes}
    table = pd.DataFrame([row("knn", "knn_top1@10", 50.0), row("knn", "knn_top1@10", 40.0, feature="cls", images=1,
                                                                skipped=99),
                          row("retrieval", "AP", float("nan"), dataset="coco",
                              notes="every query is alone in its label")])
    data = summary_data(table)
    knn = data[data["family"] == "top-1 accuracy (%)"].set_index("group")
    assert set(knn.index) == {"k-NN mean (k=10)", "k-NN cls (k=10)"}
    assert knn.at["k-NN mean (k=10)", "thin"] == "" and "1.0 % of images" in knn.at["k-NN cls (k=10)", "thin"]
    coco = data[data["dataset"] == "coco"]
    assert coco["value"].isna().all() and coco["why"].iloc[0] == "every query is alone in its label"
    from partaware.figures.summary_marks import empty_text

    assert empty_text(coco) == "no value: every query is alone in its label"
    path = tmp_path / "table.csv"
    table.to_csv(path, index=False)
    summary_plot(path, tmp_path / "summary.png")
    assert (tmp_path / "summary.png").stat().st_size > 0
