"""Task `part_discovery` (issue 36): NMI / ARI against sklearn, the bootstrap's contingency
statistics, the keypoint regression, seeded k-means, rows and the detail file from built stores,
bad input, and the real CUB sample through `partaware extract` / `evaluate`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from partaware import tasks
from partaware.config import ConfigError
from partaware.evals import clustering, part_discovery as D
from partaware.evals.bootstrap import ImageSums, value

STATS = {"bootstrap": 100, "level": 0.95, "seed": 0}
GRID = (4, 4)


def cfg(**pc):
    task = tasks.get("part_discovery")
    defaults = {k: v["default"] for k, v in task.schema["properties"].items()}
    return {"part_discovery": {**defaults, "niter": 10, "nredo": 1, **pc}, "stats": STATS, "device": "cpu"}


class Store:
    """The FeatureStore API the task reads (attrs, array_names, read, read_checked, paths, n_rows)."""

    def __init__(self, arrays, attrs):
        self.arrays, self.attrs, self.paths = arrays, attrs, [Path("mem.zarr")]
        self.n_rows = len(arrays["keypoints"])

    def array_names(self):
        return list(self.arrays)

    def read(self, name, start=0, stop=None):
        return self.arrays[name][start:stop]

    def read_checked(self, name, start=0, stop=None, valid=None):
        return self.read(name, start, stop)


def part_store(n_images: int, seed: int, *, identical=False, no_kp=(), invalid=()) -> Store:
    """Images whose tokens say which of 3 keypoints their cell holds (a 4th vector elsewhere), the
    keypoints jittered over the grid: clusters of these tokens are the keypoint identity."""
    rng = np.random.default_rng(seed)
    h, w = 2, 2  # 3 keypoint cells and one other: balanced clusters
    maps = np.zeros((n_images, 4, h, w), np.float32)
    kp = np.zeros((n_images, 3, 3), np.float32)
    for i in range(n_images):
        cells = rng.choice(h * w, size=3, replace=False)
        maps[i, 3] = 1.0
        for p, cell in enumerate(cells):
            r, c = divmod(int(cell), w)
            maps[i, :, r, c] = np.eye(4)[p] + 0.01 * rng.standard_normal(4)
            kp[i, p] = ((c + rng.uniform(0.1, 0.9)) / w, (r + rng.uniform(0.1, 0.9)) / h, 1.0)
    maps[..., :] += 0.001 * rng.standard_normal(maps.shape).astype(np.float32)
    if identical:
        maps[:] = 1.0
    kp[list(no_kp)] = 0
    valid = np.ones(n_images, np.uint8)
    valid[list(invalid)] = 0
    arrays = {"dense_final": maps.astype(np.float16), "keypoints": kp, "valid": valid}
    return Store(arrays, {"image_keys": [str(100 + i) for i in range(n_images)], "part_names": ["a", "b", "c"]})


CTX = {"dataset": "cub", "model": "m", "group": "g", "weights": "random"}


def test_nmi_ari_equal_sklearn_and_the_bootstrap_statistics_agree():
    rng = np.random.default_rng(0)
    truth, clusters = rng.integers(0, 15, 500), rng.integers(0, 8, 500)
    clusters[truth < 5] = 3  # some structure
    nmi, ari = D.nmi_ari(truth, clusters)
    assert nmi == pytest.approx(100 * normalized_mutual_info_score(truth, clusters, average_method="arithmetic"))
    assert ari == pytest.approx(100 * adjusted_rand_score(truth, clusters))
    images = rng.integers(0, 40, 500)
    table = D.contingency(truth, clusters, images, 40, 15)  # padded to 15 x 15
    sums = ImageSums("contingency", np.arange(40), table)
    assert 100 * value(sums, "NMI") == pytest.approx(nmi) and 100 * value(sums, "ARI") == pytest.approx(ari)
    assert 100 * value(sums, "NMI@8") == pytest.approx(nmi)  # the task maps NMI@K onto NMI
    # clusters equal to keypoint identity give 100; one cluster for everything gives 0
    assert D.nmi_ari(truth, truth) == (100.0, 100.0)
    assert clustering.nmi(D.contingency(truth, truth, images, 40, 15).sum(0, keepdims=True))[0] == pytest.approx(1)
    assert D.nmi_ari(truth, np.zeros_like(truth))[0] == 0.0
    assert clustering.nmi(D.contingency(truth, 0 * truth, images, 40, 15).sum(0, keepdims=True))[0] == 0.0


def test_regression_error_is_zero_for_landmarks_linear_in_the_centroids():
    rng = np.random.default_rng(1)
    k = 4
    x_train, x_test = rng.uniform(0, 1, (60, 3 * k)), rng.uniform(0, 1, (30, 3 * k))
    a = rng.standard_normal((3 * k, 2, 2)) * 0.2
    kp_train = np.concatenate([np.einsum("nf,fpc->npc", x_train, a), np.ones((60, 2, 1))], 2)
    kp_test = np.concatenate([np.einsum("nf,fpc->npc", x_test, a), np.ones((30, 2, 1))], 2)
    kp_test[:5, 1, 2] = 0  # invisible: not scored
    img, mark, err = D.keypoint_error(x_train, kp_train, x_test, kp_test)
    assert len(err) == 55 and err.max() < 1e-8
    noisy = kp_test.copy()
    noisy[:, :, :2] += 0.1
    assert D.keypoint_error(x_train, kp_train, x_test, noisy)[2].mean() == pytest.approx(100 * np.sqrt(0.02))


def test_centroids_absent_clusters_and_keypoint_cells():
    labels = np.array([[0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1]])  # left half 0, right half 1
    x = D.image_centroids(labels, 3, GRID)
    assert x[0].tolist() == [0.25, 0.75, 0.0, 0.5, 0.5, 0.0, 1.0, 1.0, 0.0]
    uv = np.array([[0.0, 0.0], [0.99, 0.99], [1.2, -0.1], [0.3, 0.6]])
    assert D.keypoint_cells(uv, GRID).tolist() == [0, 15, 3, 9]


def test_kmeans_is_reproducible_by_seed():
    x = D.normalise(np.random.default_rng(2).standard_normal((400, 8)))
    a, b = (D.kmeans(x, 5, niter=10, nredo=2, seed=7) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, D.kmeans(x, 5, niter=10, nredo=2, seed=8))
    with pytest.raises(ValueError, match="k=500 on 400 tokens"):
        D.kmeans(x, 500, niter=1, nredo=1, seed=0)


def test_rows_detail_and_intervals_from_built_stores():
    train, test = part_store(30, 0), part_store(20, 1, no_kp=[3], invalid=[5])
    rows, detail = tasks.get("part_discovery").rows(cfg(k=[4, 2], nredo=5), CTX, [train, test])
    by = {r["metric"]: r for r in rows}
    assert set(by) == {f"{m}@{k}" for m in ("NMI", "ARI", "keypoint_error") for k in (4, 2)}
    assert by["NMI@4"]["value"] == pytest.approx(100) and by["ARI@4"]["value"] == pytest.approx(100)
    assert by["NMI@4"]["n"] == 18 * 3 and by["NMI@4"]["skipped"] == 2  # one without keypoints, one unreadable
    assert by["NMI@4"]["images"] == 18 and by["keypoint_error@4"]["images"] == 18  # the test images scored
    assert "under 10 per cell" in by["NMI@4"]["notes"]  # 54 keypoints over 4 x 3 cells: the small-sample bias is named
    assert by["NMI@2"]["value"] < 100 and np.isfinite(by["NMI@2"]["ci_low"])
    assert by["NMI@4"]["ci_low"] == pytest.approx(100) and by["NMI@4"]["protocol"] == "exact"
    assert by["keypoint_error@4"]["value"] < 30 and by["keypoint_error@4"]["n"] == 54
    assert "FG variant" in by["NMI@4"]["notes"] and "120 train tokens sampled" in by["NMI@4"]["notes"]
    # the detail file recomputes to the rows
    df = pd.DataFrame(detail)
    assert list(df.columns) == ["feature", "k", "image", "keypoint", "cluster"]
    assert "105" not in set(df["image"]) and "103" not in set(df["image"])
    for k in (4, 2):
        part = df[df["k"] == k]
        nmi, ari = D.nmi_ari(part["keypoint"], part["cluster"])
        assert nmi == pytest.approx(by[f"NMI@{k}"]["value"]) and ari == pytest.approx(by[f"ARI@{k}"]["value"])


def test_degenerate_encoder_gives_zero_and_says_why():
    train, test = part_store(10, 0, identical=True), part_store(6, 1, identical=True)
    rows, _ = tasks.get("part_discovery").rows(cfg(k=[3]), CTX, [train, test])
    nmi = next(r for r in rows if r["metric"] == "NMI@3")
    assert nmi["value"] == 0.0 and "one cluster" in nmi["notes"] and "clusters empty" in nmi["notes"]


def test_k_above_the_sampled_tokens_and_bad_config_refuse():
    train, test = part_store(2, 0), part_store(2, 1)
    with pytest.raises(ConfigError, match=r"part_discovery.k: K 40 is more than the 8 train tokens"):
        tasks.get("part_discovery").rows(cfg(k=[40], figure_k=40), CTX, [train, test])
    task = tasks.get("part_discovery")
    with pytest.raises(ConfigError, match="max_tokens"):
        task.check("datasets.cub", {}, cfg(k=[8, 300], max_tokens=200))
    with pytest.raises(ConfigError, match="figure_k: 8 is not one of"):
        task.check("datasets.cub", {}, cfg(k=[4, 16]))


def test_real_cub_sample_through_extract_and_evaluate(real_cub, tmp_path, capsys, one_torch_thread):
    """The six real CUB images (3 train, 3 test) -> box-crop stores with a 2-block random ViT ->
    `partaware evaluate --task part_discovery`: rows, the detail file, the stores' contents."""
    from partaware import config as C
    from partaware.store import open_store
    from cli_runner import run_cli

    raw = {"seed": 0, "device": "cpu", "cache": {"format": "zarr", "dtype": "float16", "chunk_rows": 4},
           "extract": {"batch_size": 4, "num_workers": 0},
           "datasets": {"cub": {"kind": "cub", "root": str(real_cub), "max_images": 6, "size": 32,
                                "tasks": ["part_discovery"]}},
           "models": {"rnd": {"arch": "vit_tiny_patch16_224", "timm_kwargs": {"depth": 2}, "weights": "random",
                              "seed": 1}},
           "part_discovery": {"k": [2, 4], "figure_k": 4, "size": 64, "niter": 5, "nredo": 1, "blocks": [1]},
           "stats": {"bootstrap": 50}}
    full = C.validate(raw)
    runtime = json.dumps({"device": "cpu", "extract": {"batch_size": 4, "num_workers": 0}})

    def spec(sections=()):
        out = {k: full[k] for k in ("seed", "cache", "data", *sections)}
        out["extract"] = {k: full["extract"][k] for k in ("shards", "precision")}
        return json.dumps({**out, "datasets": {"cub": full["datasets"]["cub"]}, "models": full["models"]})

    stores = []
    for split in ("train_crop64", "test_crop64"):
        out = tmp_path / "features" / "cub" / "rnd" / f"{split}.zarr"
        code, error, _ = run_cli(capsys, "extract", "--spec", spec(("part_discovery",)), "--runtime", runtime,
                                 "--dataset", "cub", "--model", "rnd", "--split", split, "--out", out)
        assert code == 0, error
        stores.append(out)
    with open_store(stores[1]) as store:
        assert store.attrs["image_keys"] == ["1", "3", "6"] and len(store.attrs["part_names"]) == 15
        assert store.read("dense_final").shape == (3, 192, 4, 4)
        kp = store.read("keypoints")
        vis = kp[:, :, 2] > 0
        assert vis.any() and (kp[vis][:, :2] > -0.2).all() and (kp[vis][:, :2] < 1.2).all()
        assert "object box" in store.attrs["transform"]
    out = tmp_path / "evals" / "cub" / "rnd" / "part_discovery.csv"
    code, error, _ = run_cli(capsys, "evaluate", "--spec", spec(("part_discovery", "stats")), "--runtime", runtime,
                             "--task", "part_discovery", "--dataset", "cub", "--model", "rnd", "--out", out, *stores)
    assert code == 0, error
    rows = pd.read_csv(out)
    assert set(rows["feature"]) == {"dense final", "block 1 dense"}
    assert set(rows["metric"]) == {f"{m}@{k}" for m in ("NMI", "ARI", "keypoint_error") for k in (2, 4)}
    assert rows["value"].notna().all() and rows["ci_low"].notna().all()
    detail = pd.read_csv(out.with_name("part_discovery_keypoints.csv"), dtype={"image": str})
    nmi_row = rows[(rows["metric"] == "NMI@4") & (rows["feature"] == "dense final")].iloc[0]
    part = detail[(detail["k"] == 4) & (detail["feature"] == "dense final")]
    assert len(part) == nmi_row["n"] and set(part["image"]) <= {"1", "3", "6"}
    assert D.nmi_ari(part["keypoint"], part["cluster"])[0] == pytest.approx(nmi_row["value"])


@pytest.mark.slow
def test_demo_workflow_gives_rows_figure_and_section(tmp_path):
    """The demo birds through Snakemake with part_discovery alone: rows with intervals, the
    detail file that recomputes to them, the figure and the table.md section."""
    from workflow_runner import snakemake

    config = {"seed": 0, "device": "cpu", "cache": {"format": "zarr", "dtype": "float16", "chunk_rows": 16},
              "extract": {"batch_size": 32, "num_workers": 0, "shards": 1, "blocks_summary": []},
              "datasets": {"demo_parts": {"kind": "cub", "demo": {"n_images": 16, "seed": 0}, "size": 64,
                                          "tasks": ["part_discovery"]}},
              "models": {"tiny_a": {"arch": "vit_tiny_patch16_224", "timm_kwargs": {"depth": 2},
                                    "weights": "random", "seed": 1, "group": "random"}},
              "part_discovery": {"k": [4, 8], "size": 64, "niter": 10, "nredo": 2}, "stats": {"bootstrap": 50}}
    snakemake(tmp_path, config, "results/table.csv", "results/figures/demo_parts/part_discovery.png")
    table = pd.read_csv(tmp_path / "results" / "table.csv")
    rows = table[table["task"] == "part_discovery"]
    assert set(rows["metric"]) == {f"{m}@{k}" for m in ("NMI", "ARI", "keypoint_error") for k in (4, 8)}
    assert rows["ci_low"].notna().all() and (rows["ci_low"] <= rows["ci_high"]).all()
    detail = pd.read_csv(tmp_path / "results" / "evals" / "demo_parts" / "tiny_a" / "part_discovery_keypoints.csv")
    for k in (4, 8):
        nmi, ari = D.nmi_ari(detail.loc[detail["k"] == k, "keypoint"], detail.loc[detail["k"] == k, "cluster"])
        assert nmi == pytest.approx(rows.loc[rows["metric"] == f"NMI@{k}", "value"].item(), abs=1e-6)
        assert ari == pytest.approx(rows.loc[rows["metric"] == f"ARI@{k}", "value"].item(), abs=1e-6)
    assert (tmp_path / "results" / "figures" / "demo_parts" / "part_discovery.png").stat().st_size > 1000
    md = (tmp_path / "results" / "table.md").read_text()
    assert "## Part discovery" in md and "keypoint_error@4 ↓" in md and "lower is better" in md


def test_bench_prints_one_json_line(tmp_path, capsys):
    from workflow_runner import bench_module

    out = bench_module("part_discovery").main(["--train", "12", "--test", "10", "--grid", "3", "--dim", "8",
                                               "--k", "2", "3", "--max-tokens", "50", "--niter", "3", "--nredo", "1",
                                               "--workdir", str(tmp_path)])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == out and line["tokens_sampled"] == 50 and set(line["kmeans_s"]) == {"2", "3"}
    assert line["peak_rss_mb"] > 0 and line["task_s"] >= line["assign_s"]


def test_k_above_a_demos_train_tokens_refuses_at_config_time():
    from partaware import config as C

    raw = {"datasets": {"birds": {"kind": "cub", "demo": {"n_images": 4, "seed": 0}, "size": 32,
                                  "tasks": ["part_discovery"]}},
           "models": {"m": {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 1}},
           "part_discovery": {"k": [4, 16], "figure_k": 4, "size": 32}}
    with pytest.raises(ConfigError, match=r"part_discovery.k: K 16 is more than the 8 train tokens of datasets.birds"):
        C.validate(raw)
    raw["part_discovery"]["k"] = [4, 8]
    C.validate(raw)


def test_figure_colours_follow_the_keypoint_each_cluster_holds_most():
    from partaware.figures.part_discovery import match_colours

    marks = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    clusters = np.array([2, 2, 1, 0, 0, 3, 3, 1])  # cluster 2 holds label 0, 0 -> 1, 3 -> 2, 1: spare
    assert match_colours(marks, clusters, 4, 3).tolist() == [1, 3, 0, 2]
