"""`partaware.open_features`: the README's example on a store the extraction wrote, rows joined
with the part index, lazy reads on Zarr, HDF5 and sharded stores, and clear refusals."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import partaware
from partaware import config as C
from partaware import extract as E
from partaware import kinds
from partaware.store import IncompleteStoreError, StoreError, StoreWriter

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def readme_example() -> str:
    """The first Python block of the README's section "Reading the cache from Python"."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Reading the cache from Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory):
    """A results/ folder as the workflow lays it out for the demo config's `demo_parts` x
    `vit_tiny_rand_a` train split: generated CUB-layout data, its part index, and a store written
    by the extraction (shrunk: 4 images, 32 px, a 2-block ViT)."""
    work = tmp_path_factory.mktemp("api")
    cfg = C.load(ROOT / "config.yaml")
    ds = cfg["datasets"]["demo_parts"]
    ds.update(root=str(work / "results/demo/demo_parts"), demo={"n_images": 4, "seed": 0}, size=32, resize=36)
    cfg.update(device="cpu")
    cfg["extract"].update(blocks_summary=[], num_workers=0)
    cfg["cache"].update(chunk_rows=4)
    cfg["models"]["vit_tiny_rand_a"]["timm_kwargs"] = {"depth": 2}
    kinds.of(ds).generate_demo(ds, Path(ds["root"]))
    index = work / "results/index/demo_parts/train.parquet"
    kinds.of(ds).build_index(ds, index.parent, ["train"])
    E.extract(cfg, "demo_parts", "vit_tiny_rand_a", "train", index,
              work / "results/features/demo_parts/vit_tiny_rand_a/train.zarr")
    return work


def test_readme_example_runs_on_the_demo_store(demo_results, monkeypatch, capsys):
    monkeypatch.chdir(demo_results)
    exec(compile(readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert any(part in out for part in ("left wing", "right eye", "tail", "right leg"))  # the joined parts
    assert "'tokens'" in out and "(4, 5, 192)" in out  # 4 rows of 2 x 2 patches + CLS, ViT-Tiny width


def test_index_joins_the_part_index_row_by_row(demo_results):
    parts = pd.read_parquet(demo_results / "results/index/demo_parts/train.parquet")
    with partaware.open_features(results=demo_results / "results", dataset="demo_parts",
                                 model="vit_tiny_rand_a", split="train") as feats:
        index = feats.index
        assert list(index.columns[:7]) == ["row", "image", "part", "box", "split", "label", "valid"]
        assert len(index) == len(feats) == len(parts)
        by_row = parts.set_index("row").loc[index["row"]]
        assert index["image"].tolist() == by_row["image_path"].tolist()
        assert index["part"].tolist() == by_row["part_name"].tolist()
        assert index["box"].tolist() == [tuple(b) for b in by_row[["x0", "y0", "x1", "y1"]].to_numpy().tolist()]
        assert (index["split"] == "train").all() and index["valid"].all()
        assert index["label"].tolist() == feats.read("label").tolist() == by_row["label"].tolist()
        # the DataFrame's rows are the store's rows: a mask picks the same rows of an array
        mask = (index["part"] == index["part"].iloc[0]).to_numpy()
        np.testing.assert_array_equal(feats["mean"][mask], feats.read("mean")[mask])
        assert feats.attrs["model"] == "vit_tiny_rand_a" and feats.attrs["complete"]


# ------------------------------------------------------------------ Zarr, HDF5 and shards
N, PARTS = 10, ["right eye", "right leg", "left wing", "tail"]


def _index(results: Path) -> pd.DataFrame:
    df = pd.DataFrame({
        "row": np.arange(N), "image_id": np.arange(N) // 4 + 1,
        "image_path": [f"/data/images/001.Bird/img_{i // 4}.jpg" for i in range(N)],
        "part_id": [11, 12, 9, 14, 11, 12, 9, 14, 11, 12], "part_name": (PARTS * 3)[:N],
        "label": np.arange(N) % 4, "x": 50.0, "y": 60.0, "d": 40.0,
        "x0": np.arange(N) + 40, "y0": 50, "x1": np.arange(N) + 60, "y1": 70, "split": "all"})
    path = results / "index/demo/all.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return df


def _tokens(lo, hi):
    return np.arange(lo * 24, hi * 24, dtype=np.float32).reshape(hi - lo, 3, 8)


def _write(path: Path, lo: int, hi: int, attrs: dict | None = None) -> Path:
    layout = {"mean": ((8,), "float32", 4), "tokens": ((3, 8), "float32", 1), "row": ((), "int64", 4),
              "label": ((), "int64", 4), "valid": ((), "uint8", 4)}
    w = StoreWriter(path, hi - lo, layout, {"model": "m", "dataset": "demo", "split": "all", **(attrs or {})}, "h")
    w.write({"mean": _tokens(lo, hi)[:, 0], "tokens": _tokens(lo, hi), "row": np.arange(lo, hi),
             "label": np.arange(lo, hi) % 4, "valid": (np.arange(lo, hi) != 3).astype(np.uint8)})
    return w.publish()


@pytest.fixture(params=["zarr", "h5", "shards"])
def stored(request, tmp_path):
    results = tmp_path / "results"
    _index(results)
    base = results / "features/demo/m"
    if request.param == "shards":
        shards = [_write(base / f"all.shard{k}of2.zarr", lo, hi) for k, (lo, hi) in enumerate([(0, 4), (4, N)])]
        manifest = base / "all.shards.json"
        manifest.write_text(json.dumps({"shards": [s.name for s in shards]}))
        return manifest
    return _write(base / f"all.{request.param}", 0, N)


def test_every_format_opens_by_path_and_by_names(stored):
    with partaware.open_features(stored) as by_path, \
            partaware.open_features(results=stored.parents[3], dataset="demo", model="m", split="all") as by_name:
        assert by_name.path == stored and len(by_path) == N
        assert by_path.arrays == ["label", "mean", "row", "tokens", "valid"]
        assert by_path.index_path == stored.parents[3] / "index/demo/all.parquet"
        pd.testing.assert_frame_equal(by_path.index, by_name.index)
        index = by_path.index
        assert index.loc[2, "part"] == "left wing" and index.loc[2, "box"] == (42, 50, 62, 70)
        assert index.loc[9, "image"].endswith("img_2.jpg") and index["valid"].tolist() == [i != 3 for i in range(N)]


def test_arrays_read_lazily_and_index_like_numpy(stored):
    full = _tokens(0, N)
    full[3] = np.nan  # row 3 is skipped: its own `tokens` chunk (one row) is never written and reads NaN
    with partaware.open_features(stored) as feats:
        tokens = feats["tokens"]
        assert tokens.shape == (N, 3, 8) and tokens.dtype == np.float32 and len(tokens) == N
        for key in (slice(2, 7), slice(None, None, 3), slice(8, 1, -2), slice(-3, None), 4, -1, (5, 1),
                    (slice(1, 4), 2, slice(0, 3)), [7, 2, 2, 9], np.array([0, 9]), full[:, 0, 0] > 100,
                    (..., 1)):
            np.testing.assert_array_equal(tokens[key], full[key], err_msg=str(key))
        np.testing.assert_array_equal(np.asarray(tokens), full)
        np.testing.assert_array_equal(feats.read("mean"), _tokens(0, N)[:, 0])  # its chunk holds valid rows
        with pytest.raises(IndexError, match="out of range"):
            tokens[N]
        with pytest.raises(KeyError, match="no array 'proj'; it holds label, mean"):
            feats["proj"]


def test_slices_read_only_their_rows(stored, monkeypatch):
    """`tokens` can be tens of GB: a slice or a few rows must never read the whole array."""
    with partaware.open_features(stored) as feats:
        spans = []
        read = feats.store.read
        monkeypatch.setattr(feats.store, "read", lambda name, a=0, b=None: spans.append((name, a, b)) or read(name, a, b))
        feats["tokens"][6:8]
        feats["tokens"][[1, 5]]  # one row per chunk: two reads of one row each
        feats["tokens"][2]
        assert spans == [("tokens", 6, 8), ("tokens", 1, 2), ("tokens", 5, 6), ("tokens", 2, 3)]


def test_a_store_without_part_index_gives_its_own_rows(tmp_path):
    path = _write(tmp_path / "val.h5", 0, 6, {"split": "val", "classes": ["n01", "n02", "n03", "n04"]})
    with partaware.open_features(path) as feats:
        assert feats.index_path is None
        assert list(feats.index.columns) == ["row", "label", "valid", "class", "split"]
        assert feats.index["class"].tolist() == ["n01", "n02", "n03", "n04", "n01", "n02"]
        assert (feats.index["split"] == "val").all()


def test_clear_refusals(tmp_path):
    results = tmp_path / "results"
    _write(results / "features/demo/m/all.zarr", 0, 4)
    with pytest.raises(IncompleteStoreError, match=r"no store for dataset 'demo', model 'm', split 'test' "
                                                   r"\(the folder holds: all.zarr\)"):
        partaware.open_features(results=results, dataset="demo", model="m", split="test")
    _write(results / "features/demo/m/all.h5", 0, 4)
    with pytest.raises(StoreError, match=r"several stores for split 'all' \(all.zarr, all.h5\)"):
        partaware.open_features(results=results, dataset="demo", model="m", split="all")
    with pytest.raises(TypeError, match="missing: model, split"):
        partaware.open_features(dataset="demo")
    half = StoreWriter(tmp_path / "half.zarr", 4, {"row": ((), "int64", 4)}, {}, "h")
    half.write({"row": np.arange(2)})
    with pytest.raises(IncompleteStoreError, match="partial"):
        partaware.open_features(tmp_path / "half.zarr")


def test_import_partaware_stays_cheap():
    """`import partaware` loads neither numpy nor the store backends; the API loads on first use."""
    code = ("import sys, partaware; assert 'numpy' not in sys.modules, 'numpy imported'; "
            "partaware.open_features; assert 'partaware.api' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "src")
