"""The extraction loop: what it stores, bit for bit, however fast it goes.

Workers, pinned uint8 batches, device-side normalisation, the one-batch-ahead pipeline and the
writer thread must not change a single stored value: every test here compares stores or
tensors exactly, except bf16 against fp32. Stores are HDF5 so the tests also run where zarr is
not installed (the GPU machine).
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from partaware import extract as E
from partaware.extraction import loaders as L
from partaware.extraction import loop as LOOP
from partaware.data.demo import generate_demo_cub
from partaware.data.demo_seg import generate_demo_seg
from partaware.data.images import crop_patch, load_rgb, patch_transform
from partaware.data.parts import select_split, write_index
from partaware.kinds import build_part_index
from partaware.models.encoder import Encoder, build_encoder
from partaware.store import StoreWriter, open_store

CUDA = torch.cuda.is_available()


def make_cfg(root: Path, *, device="cpu", workers=0, precision="fp32", batch_size=8, chunk_rows=4,
             depth=2, size=64, on_bad_image="error") -> dict:
    """A complete config as `config.validate` would return it (without needing jsonschema)."""
    return {
        "seed": 0, "device": device,
        "cache": {"format": "hdf5", "dtype": "float16", "chunk_rows": chunk_rows},
        "extract": {"batch_size": batch_size, "num_workers": workers, "shards": 1, "precision": precision},
        "data": {"on_bad_image": on_bad_image},
        "segmentation": {"protocol": "cached"},
        "datasets": {
            "parts": {"kind": "cub", "name": "parts", "root": str(root / "cub"), "parts": [11, 12, 9, 14],
                      "size": size, "resize": size + size // 8, "blocks": [1], "tasks": ["retrieval", "attentive"]},
            "seg": {"kind": "segfolder", "name": "seg", "root": str(root / "seg"), "size": 64, "resize": 72,
                    "splits": ["train", "val"],
                    "blocks": [1, 2], "tasks": ["segmentation"],
                    "label_sets": {"part": {"dir": "ann", "classes": 6},
                                   "object": {"dir": "ann_object", "classes": 3}}},
        },
        "models": {"m": {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 1,
                         "timm_kwargs": {"depth": depth}}},
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    generate_demo_cub(root / "cub", 10, image_size=(200, 150))
    generate_demo_seg(root / "seg", 3, 2, size=64)
    index = build_part_index(make_cfg(root)["datasets"]["parts"])
    for split in ("all", "train"):
        write_index(select_split(index, split), root / f"{split}.parquet")
    return root


def run(root: Path, out: Path, split="all", dataset="parts", **kw) -> Path:
    index = root / f"{split}.parquet" if dataset == "parts" else None
    return E.extract(make_cfg(root, **kw), dataset, "m", split, index, out)


def read_all(path: Path) -> dict:
    with open_store(path) as store:
        return {name: store.read(name) for name in store.array_names()}


def same(x: np.ndarray, y: np.ndarray) -> bool:
    """Integers exactly; features up to one fp16 step, since a BLAS may round differently when the
    batch composition changes (seen on a 16-core machine; bitwise equal on 2 cores)."""
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if np.issubdtype(x.dtype, np.floating):
        return bool(np.allclose(x, y, rtol=2e-3, atol=2e-3))
    return bool(np.array_equal(x, y))


def assert_same_arrays(a: Path, b: Path) -> None:
    x, y = read_all(a), read_all(b)
    assert sorted(x) == sorted(y)
    for name in x:
        assert same(x[name], y[name]), name


# --------------------------------------------------------------------------- the data path
@pytest.mark.parametrize("view", ["eval", "train"])
def test_device_normalisation_equals_the_transform_bit_for_bit(data, view):
    """Workers' uint8 patches normalised on the device == the whole transform on the CPU."""
    transform = patch_transform(view, size=48, resize=56, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    pil_steps, table = L.split_transform(transform)
    index = select_split(build_part_index(make_cfg(data)["datasets"]["parts"]), "all")
    dataset = L.PatchImages(index, pil_steps, "error")
    rows, valid, patches, errors = L.collate_patches([dataset[i] for i in range(len(dataset))])
    assert patches.dtype == torch.uint8 and valid.all() and not errors
    assert np.array_equal(rows.numpy(), index["row"])
    expected = torch.stack([transform(crop_patch(load_rgb(r.image_path), (r.x0, r.y0, r.x1, r.y1)))
                            for r in index.itertuples()])
    assert torch.equal(L.normalise(patches, table), expected)
    if CUDA:
        assert torch.equal(L.normalise(patches.cuda(), table.cuda()).cpu(), expected)


@pytest.mark.parametrize("order", ["by image", "an image again later"])
def test_store_rows_are_the_encoder_on_each_patch(data, tmp_path, order):
    """Row i of the store is the encoder on patch i of the index: rows, labels, features - also
    when one image's rows are not adjacent (each run of rows is decoded on its own)."""
    index = select_split(build_part_index(make_cfg(data)["datasets"]["parts"]), "all")
    if order != "by image":
        index = index.iloc[np.r_[0:len(index), 0:3]].reset_index(drop=True)
        index["row"] = np.arange(len(index))
    write_index(index, tmp_path / "index.parquet")
    out = E.extract(make_cfg(data, workers=1), "parts", "m", "all", tmp_path / "index.parquet", tmp_path / "all.h5")
    store = read_all(out)
    assert np.array_equal(store["row"], index["row"]) and np.array_equal(store["label"], index["label"])
    assert store["valid"].all()
    transform = patch_transform("eval", size=64, resize=72)
    encoder = build_encoder({"arch": "vit_tiny_patch16_224", "seed": 1, "timm_kwargs": {"depth": 2}, "img_size": 64})
    x = torch.stack([transform(crop_patch(load_rgb(r.image_path), (r.x0, r.y0, r.x1, r.y1)))
                     for r in index.itertuples()])
    with torch.inference_mode():
        feats = encoder(x)
    for name in ("cls", "mean"):
        np.testing.assert_allclose(store[name].astype(np.float32), feats[name].numpy(), atol=2e-3, rtol=2e-3)


def test_workers_give_identical_stores(data, tmp_path):
    assert_same_arrays(run(data, tmp_path / "w0.h5", workers=0), run(data, tmp_path / "w2.h5", workers=2))
    assert_same_arrays(run(data, tmp_path / "t0.h5", split="train", workers=0),
                       run(data, tmp_path / "t2.h5", split="train", workers=2))


def test_segmentation_store_with_workers(data, tmp_path):
    from partaware.data import segfolder

    a = run(data, tmp_path / "s0.h5", dataset="seg", split="train", workers=0)
    b = run(data, tmp_path / "s1.h5", dataset="seg", split="train", workers=1)
    assert_same_arrays(a, b)
    store = read_all(a)
    samples = segfolder.list_samples(data / "seg", "train", {"part": "ann"})
    assert store["layers/1"].shape == (len(samples), 192, 4, 4) and store["valid"].all()
    for i, s in enumerate(samples):
        _, label = segfolder.seg_view(load_rgb(s["img"]), segfolder.load_label(s["part"], 6), 64)
        assert np.array_equal(store["labels/part"][i], label)


def test_bad_images_are_skipped_in_place(data, tmp_path):
    index = select_split(build_part_index(make_cfg(data)["datasets"]["parts"]), "all")
    second = index["image_path"].unique()[1]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(Path(second).read_bytes()[:300])
    index.loc[index["image_path"] == second, "image_path"] = str(bad)
    write_index(index, tmp_path / "all.parquet")
    cfg = make_cfg(data, on_bad_image="skip", workers=1)
    out = E.extract(cfg, "parts", "m", "all", tmp_path / "all.parquet", tmp_path / "skip.h5")
    store, clean = read_all(out), read_all(run(data, tmp_path / "clean.h5"))
    hit = (index["image_path"] == str(bad)).to_numpy()
    assert not store["valid"][hit].any() and store["valid"][~hit].all()
    assert not store["cls"][hit].any() and same(store["cls"][~hit], clean["cls"][~hit])
    assert np.array_equal(store["row"], clean["row"]) and np.array_equal(store["label"], clean["label"])
    with open_store(out) as s:
        assert len(s.attrs["skipped_images"]) == 1 and str(bad) in s.attrs["skipped_images"][0]


# --------------------------------------------------------------------------- precision
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no GPU"))])
def test_bf16_features_agree_with_fp32(data, tmp_path, device):
    """bf16 autocast (the GPU default) against fp32 on the CPU, full-depth ViT, demo images."""
    fp32 = read_all(run(data, tmp_path / "fp32.h5", depth=12, size=112))
    bf16 = read_all(run(data, tmp_path / "bf16.h5", depth=12, size=112, precision="bf16", device=device,
                        workers=2 if device == "cuda" else 0))
    for name in ("cls", "mean"):
        a, b = (torch.from_numpy(s[name].astype(np.float32)) for s in (fp32, bf16))
        assert not torch.equal(a, b), "bf16 autocast did not take effect"
        cos = F.cosine_similarity(a, b, dim=1)
        assert cos.min() >= 0.999, (name, cos.min().item())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no GPU"))])
def test_device_cast_to_fp16_equals_numpy(device):
    """Features are cast to the store dtype on the device; numpy's cast is the reference."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(100_000) * 10.0 ** rng.integers(-9, 6, 100_000),
                        [0.0, -0.0, 65504.0, 65520.0, 1e-8, 6e-8, -6.1e-5, np.inf, -np.inf]]).astype(np.float32)
    on_device = torch.from_numpy(x).to(device).to(torch.float16).cpu().numpy()
    with np.errstate(over="ignore"):
        reference = x.astype(np.float16)
    assert np.array_equal(on_device.view(np.uint16), reference.view(np.uint16))


# --------------------------------------------------------------------------- writer thread
class SlowWriter(StoreWriter):
    """A StoreWriter that takes its time and records the thread and rows of every write."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.log, self.rng = [], np.random.default_rng(0)

    def write(self, batch):
        time.sleep(float(self.rng.uniform(0, 0.01)))
        self.log.append((threading.current_thread().name, batch["row"].copy()))
        super().write(batch)


def test_background_writer_keeps_order_and_whole_chunks(tmp_path):
    n = 103
    layout = {"row": ((), "int64", 8), "x": ((3,), "float16", 8)}
    writer = SlowWriter(tmp_path / "s.h5", n, layout, {}, "h")
    rng = np.random.default_rng(1)
    bounds = np.unique(np.r_[0, np.sort(rng.integers(1, n, 30)), n])
    with LOOP.BackgroundWriter(writer, chunk_rows=8) as background:
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            background.put({"row": np.arange(lo, hi), "x": np.full((hi - lo, 3), lo, np.float32)})
    assert all(name == "store-writer" for name, _ in writer.log)
    assert [len(rows) for _, rows in writer.log] == [8] * 12 + [7]
    assert np.array_equal(np.concatenate([rows for _, rows in writer.log]), np.arange(n))
    writer.publish()
    store = read_all(tmp_path / "s.h5")
    assert np.array_equal(store["row"], np.arange(n))
    assert np.array_equal(store["x"][:, 0], np.repeat(bounds[:-1], np.diff(bounds)))


def test_background_writer_raises_write_errors_in_the_caller(tmp_path):
    class Broken(StoreWriter):
        def write(self, batch):
            raise OSError(28, "No space left on device")

    writer = Broken(tmp_path / "s.h5", 100, {"row": ((), "int64", 4)}, {}, "h")
    with pytest.raises(OSError, match="No space"):
        with LOOP.BackgroundWriter(writer, chunk_rows=4) as background:
            for lo in range(0, 100, 4):  # never blocks on the dead thread
                background.put({"row": np.arange(lo, lo + 4)})


# --------------------------------------------------------------------------- resume
class Crash(Exception):
    pass


def count_forwards(monkeypatch, crash_at=None):
    """Patch Encoder.forward to record each batch size (the first call is extract's probe)."""
    sizes, forward = [], Encoder.forward

    def counting(self, x):
        sizes.append(x.shape[0])
        if crash_at is not None and len(sizes) == crash_at + 1:
            raise Crash("simulated crash in the forward pass")
        return forward(self, x)

    monkeypatch.setattr(Encoder, "forward", counting)
    return sizes


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_a_crash_gives_the_same_store_without_redoing_chunks(data, tmp_path, monkeypatch, workers):
    reference = run(data, tmp_path / "reference.h5", workers=workers)
    n = len(read_all(reference)["row"])
    out = tmp_path / "all.h5"
    with monkeypatch.context() as m:
        first = count_forwards(m, crash_at=4)
        with pytest.raises(Crash):
            run(data, out, workers=workers)
    progress = json.loads(out.with_name(out.name + ".progress.json").read_text())
    done = progress["rows_done"]
    assert not out.exists() and 0 < done < n and done % 4 == 0
    assert done <= sum(first[1:4])  # only rows of batches that had finished

    with monkeypatch.context() as m:
        second = count_forwards(m)
        run(data, out, workers=workers)
    assert sum(second[1:]) == n - done, "the rerun must forward exactly the rows not yet written"
    assert_same_arrays(out, reference)
    assert not out.with_name(out.name + ".progress.json").exists()
