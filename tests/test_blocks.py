"""Per-block summaries (`extract.blocks_summary`, issue 19): what the encoder gives, what the store
holds, which stores' signatures the setting reaches, the per-block evaluation rows, the depth
figure and the workflow's plan."""
from __future__ import annotations

import copy
import logging
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from partaware import roles
from partaware import specs
from partaware import blocks as B
from partaware import cli
from partaware import config as C
from partaware import tasks
from partaware import extract as E
from partaware.data.demo import generate_demo_cub
from partaware.data.images import crop_patch, load_rgb, patch_transform
from partaware.data.parts import select_split, write_index
from partaware.evals.probes import train_logistic
from partaware.evals.retrieval import average_precision_per_query, summarise
from partaware.figures.depth import depth_data, depth_plot, figure_size, panel_columns
from partaware.kinds import build_part_index
from partaware.models.encoder import build_encoder
from partaware.store import StoreWriter, open_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 1, "timm_kwargs": {"depth": 3}}
REG = {"arch": "vit_small_patch14_reg4_dinov2", "weights": "random", "seed": 2,
       "timm_kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 2, "img_size": 28}}


def raw_blocks(backbone, x) -> list[torch.Tensor]:
    """Every block's raw output (B, T, D), walked by hand: no timm intermediates API involved."""
    t = backbone.norm_pre(backbone.patch_drop(backbone._pos_embed(backbone.patch_embed(x))))
    outs = []
    for block in backbone.blocks:
        t = block(t)
        outs.append(t)
    return outs


# --------------------------------------------------------------------------------- the encoder
@pytest.mark.parametrize("model, side, prefix", [(TINY, 32, 1), (REG, 28, 5)])
def test_summaries_are_the_raw_blocks_patch_mean_and_cls_from_one_pass(model, side, prefix):
    encoder = build_encoder({**model, "img_size": side})
    assert encoder.num_prefix_tokens == prefix  # the register model: CLS + 4 registers
    x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(0))
    calls = []
    hook = encoder.backbone.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    with torch.inference_mode():
        feats, maps = encoder.forward_all(x, blocks=[1], summaries=range(1, encoder.depth + 1))
    hook.remove()
    assert len(calls) == 1, "summaries, dense maps and final features must come from one backbone pass"
    with torch.inference_mode():
        plain = encoder(x)
        outs = raw_blocks(encoder.backbone, x)
    for name in ("cls", "mean", "tokens"):  # the final features are untouched
        torch.testing.assert_close(feats[name], plain[name], rtol=0, atol=0)
    for k, out in enumerate(outs, start=1):
        torch.testing.assert_close(feats[f"blocks/{k}/mean"], out[:, prefix:].mean(dim=1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(feats[f"blocks/{k}/cls"], out[:, 0], rtol=1e-5, atol=1e-5)
    # no final norm: the last block's summary is not the final (normed) feature
    assert not torch.allclose(feats[f"blocks/{encoder.depth}/cls"], feats["cls"], atol=1e-3)
    assert sorted(maps) == [1]


def test_a_model_without_cls_token_gets_the_mean_only():
    """SigLIP pools with attention: there is no class token whose block output could be stored."""
    encoder = build_encoder({"arch": "vit_base_patch16_siglip_224", "weights": "random",
                             "timm_kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 2, "img_size": 32}})
    assert encoder.cls_source == "pooled" and encoder.num_prefix_tokens == 0
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        feats, _ = encoder.forward_all(x, summaries=[1, 2])
        outs = raw_blocks(encoder.backbone, x)
    assert sorted(k for k in feats if k.startswith("blocks/")) == ["blocks/1/mean", "blocks/2/mean"]
    torch.testing.assert_close(feats["blocks/2/mean"], outs[1].mean(dim=1), rtol=1e-5, atol=1e-5)


def test_names_and_resolution():
    assert B.array_names([2, 5]) == ["blocks/2/mean", "blocks/2/cls", "blocks/5/mean", "blocks/5/cls"]
    stored = ["cls", "mean", "blocks/10/mean", "blocks/2/mean", "blocks/2/cls", "layers/4", "label"]
    assert B.blocks_of(stored) == [2, 10]
    assert B.features(stored) == ["block 2 mean", "block 2 cls", "block 10 mean"]
    assert B.array_of("block 10 mean") == "blocks/10/mean" and B.array_of("proj") == "proj"
    assert B.parse_feature("block 3 cls") == (3, "cls") and B.parse_feature("blocks 4+6") is None
    assert B.resolve("all", 3) == [1, 2, 3]
    with pytest.raises(ValueError, match=r"extract\.blocks_summary: blocks \[13\] do not exist in vit_b "
                                         r"\(blocks 1\.\.12\)"):
        B.resolve([4, 13], 12, "vit_b")


# --------------------------------------------------------------------------------- config
def raw_cfg(**extract) -> dict:
    return {
        "device": "cpu", "extract": extract,
        "datasets": {
            "parts": {"kind": "cub", "demo": {"n_images": 4}, "size": 32, "resize": 40,
                      "tasks": ["retrieval", "linear"]},
            "seg": {"kind": "segfolder", "demo": {"n_train": 2, "n_val": 2}, "size": 32, "blocks": [1],
                    "label_sets": {"part": {"dir": "ann", "classes": 6}}, "tasks": ["segmentation"]},
        },
        "models": {"m": dict(TINY)},
        "segmentation": {"protocol": "cached"},
    }


def hashes(cfg: dict) -> dict:
    stores = [("parts", "all"), ("parts", "train"), ("parts", "test"), ("seg", "train")]
    return {s: C.digest(specs.store_signature(cfg, *s[:1], "m", s[1])) for s in stores}


def test_the_setting_reaches_only_the_signatures_of_stores_that_hold_summaries():
    off, explicit_off = C.validate(raw_cfg()), C.validate(raw_cfg(blocks_summary=[]))
    assert off["extract"]["blocks_summary"] == []
    assert "blocks_summary" not in specs.store_signature(off, "parts", "m", "all")  # existing caches stay valid
    on, reordered, every = (C.validate(raw_cfg(blocks_summary=v)) for v in ([1, 3], [3, 1], "all"))
    base = hashes(off)
    assert hashes(explicit_off) == base and hashes(on) == hashes(reordered)
    for cfg in (on, every):
        h = hashes(cfg)
        assert h[("parts", "all")] != base[("parts", "all")]  # retrieval reads it
        # linear only (no logistic) reads train/test, and segmentation stores have dense maps instead
        assert [h[s] for s in h if s != ("parts", "all")] == [base[s] for s in base if s != ("parts", "all")]
    assert hashes(every)[("parts", "all")] != hashes(on)[("parts", "all")]
    with_logistic = raw_cfg(blocks_summary=[1])
    with_logistic["datasets"]["parts"]["tasks"] = ["retrieval", "logistic"]
    assert specs.store_signature(C.validate(with_logistic), "parts", "m", "train")["blocks_summary"] == [1]


@pytest.mark.parametrize("value", ["some", [0], [1, 1], 2])
def test_a_wrong_setting_names_the_key(value):
    with pytest.raises(C.ConfigError, match=r"config key extract\.blocks_summary"):
        C.validate(raw_cfg(blocks_summary=value))


def test_imagefolder_summaries_go_to_the_logistic_stores_only():
    from partaware import kinds

    kind = kinds.get("imagefolder")
    ds = {"splits": ["train", "val"], "tasks": ["linear", "attentive", "logistic"]}
    assert [roles.carries_block_summaries(kind, ds, s) for s in ("train", "val", "train_attentive")] == [True, True, False]
    assert not roles.carries_block_summaries(kind, {**ds, "tasks": ["linear"]}, "train")


# --------------------------------------------------------------------------------- extraction
def extract_cfg(root, blocks_summary) -> dict:
    return {
        "seed": 0, "device": "cpu",
        "cache": {"format": "hdf5", "dtype": "float16", "chunk_rows": 4},
        "extract": {"batch_size": 8, "num_workers": 0, "shards": 1, "precision": "fp32",
                    "blocks_summary": blocks_summary},
        "data": {"on_bad_image": "error"},
        "datasets": {"parts": {"kind": "cub", "name": "parts", "root": str(root / "cub"), "parts": [11, 12, 9, 14],
                               "size": 32, "resize": 36, "tasks": ["retrieval", "logistic"]}},
        "models": {"m": dict(TINY)},
    }


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    root = tmp_path_factory.mktemp("blocks")
    generate_demo_cub(root / "cub", 4, image_size=(200, 150))
    index = select_split(build_part_index(extract_cfg(root, [])["datasets"]["parts"]), "all")
    write_index(index, root / "all.parquet")
    return root, index


def test_stored_summaries_equal_a_direct_forward(cub, tmp_path, caplog):
    root, index = cub
    with caplog.at_level(logging.INFO, logger="partaware"):
        out = E.extract(extract_cfg(root, "all"), "parts", "m", "all", root / "all.parquet", tmp_path / "all.h5")
    plain = E.extract(extract_cfg(root, []), "parts", "m", "all", root / "all.parquet", tmp_path / "plain.h5")
    n = len(index)
    assert [r.getMessage() for r in caplog.records if "per-block" in r.getMessage()] == [
        f"parts/all: per-block summaries of blocks [1, 2, 3] (6 arrays, raw block outputs): "
        f"{6 * 192 * 2 / 1024:.1f} KiB per row, {6 * 192 * 2 * n / 2**20:.1f} MiB for {n} rows"]
    encoder = build_encoder({**TINY, "img_size": 32})
    transform = patch_transform("eval", size=32, resize=36)
    x = torch.stack([transform(crop_patch(load_rgb(r.image_path), (r.x0, r.y0, r.x1, r.y1)))
                     for r in index.itertuples()])
    with torch.inference_mode():
        outs = raw_blocks(encoder.backbone, x)
    with open_store(out) as store, open_store(plain) as ref:
        assert set(store.array_names()) == set(ref.array_names()) | set(B.array_names([1, 2, 3]))
        for k, block in enumerate(outs, start=1):
            for name, want in ((f"blocks/{k}/mean", block[:, 1:].mean(dim=1)), (f"blocks/{k}/cls", block[:, 0])):
                got, want = store.read(name), want.numpy()
                assert got.dtype == np.float16 and got.shape == (n, 192)
                np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-3, atol=2e-3 * np.abs(want).max())
        for name in ("cls", "mean", "row", "label"):  # the final features: as without summaries
            np.testing.assert_allclose(store.read(name).astype(np.float32), ref.read(name).astype(np.float32),
                                       rtol=2e-3, atol=2e-3)
        assert store.attrs["signature"]["blocks_summary"] == "all"


def test_a_block_the_model_lacks_fails_before_extracting(cub, tmp_path):
    root, _ = cub
    with pytest.raises(ValueError, match=r"config key extract\.blocks_summary: blocks \[7\] do not exist in "
                                         r"vit_tiny_patch16_224 \(blocks 1\.\.3\); .*use `all`"):
        E.extract(extract_cfg(root, [2, 7]), "parts", "m", "all", root / "all.parquet", tmp_path / "x.h5")
    assert not list(tmp_path.iterdir())


def test_imagefolder_stores_of_the_logistic_probe_hold_summaries(tmp_path):
    from partaware.data.demo_imagefolder import generate_demo_imagefolder

    root = generate_demo_imagefolder(tmp_path / "imgs", n_train=2, n_val=1, seed=0)
    cfg = C.validate({"device": "cpu", "cache": {"format": "hdf5"},
                      "extract": {"batch_size": 4, "num_workers": 0, "blocks_summary": [3]},
                      "datasets": {"imgs": {"kind": "imagefolder", "root": str(root), "size": 32, "resize": 40,
                                            "attentive_per_class": 1, "tasks": ["logistic", "attentive"]}},
                      "models": {"m": dict(TINY)}})
    names = {}
    for split in ("val", "val_attentive"):
        with open_store(E.extract(cfg, "imgs", "m", split, None, tmp_path / f"{split}.h5")) as store:
            names[split] = set(store.array_names())
            if split == "val":
                assert store.read("blocks/3/mean").shape == (3, 192)
    assert names["val"] - names["val_attentive"] == {"blocks/3/mean", "blocks/3/cls"}


# --------------------------------------------------------------------------------- evaluations
def synthetic_store(path, labels, arrays: dict):
    n = len(labels)
    meta = {"row": np.arange(n, dtype=np.int64), "label": np.asarray(labels, np.int64),
            "valid": np.ones(n, np.uint8)}
    full = {**{k: v.astype(np.float16) for k, v in arrays.items()}, **meta}
    layout = {k: (v.shape[1:], str(v.dtype), 8) for k, v in full.items()}
    writer = StoreWriter(path, n, layout, {}, "h")
    writer.write(full)
    writer.publish()
    return open_store(path)


def block_arrays(labels, rng) -> dict:
    """block 1 mean separates the classes; every other array is its own noise."""
    n = len(labels)
    onehot = np.eye(6)[labels]
    arrays = {name: rng.normal(size=(n, 6)) for name in
              ("cls", "mean", "blocks/1/cls", "blocks/2/mean", "blocks/2/cls")}
    arrays["blocks/1/mean"] = 5 * onehot + 0.01 * rng.normal(size=(n, 6))
    return arrays


EVAL_CFG = {"seed": 0, "device": "cpu", "retrieval": {"features": ["mean", "cls", "proj"], "exclude_self": False,
                                                      "memory_mb": 16},
            "logistic": {"Cs": [0.1, 1.0], "val_fraction": 0.25}, "datasets": {"d": {}}}
CTX = {"dataset": "d", "model": "m", "group": "", "weights": "random"}


def test_retrieval_rows_per_block(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 6)
    arrays = block_arrays(labels, rng)
    with synthetic_store(tmp_path / "all.h5", labels, arrays) as store:
        rows = pd.DataFrame(tasks.get("retrieval").rows(EVAL_CFG, CTX, [store])[0])
    features = ["mean", "cls", "proj", "block 1 mean", "block 1 cls", "block 2 mean", "block 2 cls"]
    assert rows["feature"].drop_duplicates().tolist() == features
    ap = rows[rows["metric"] == "AP"].set_index("feature")["value"]
    assert np.isnan(ap["proj"]) and ap["block 1 mean"] == pytest.approx(100)
    for feature in features[3:]:  # each row is the AP of its own array
        feats = arrays[B.array_of(feature)].astype(np.float16).astype(np.float32)
        want = 100 * summarise(average_precision_per_query(feats, labels), labels)["AP"]
        assert ap[feature] == pytest.approx(want, abs=1e-6)
    assert ap.drop(["proj", "block 1 mean"]).max() < 60


def test_logistic_rows_per_block_keep_the_final_cls_row(tmp_path):
    rng = np.random.default_rng(1)
    ytr, yte = np.repeat(np.arange(3), 12), np.repeat(np.arange(3), 6)
    train_arrays, test_arrays = block_arrays(ytr, rng), block_arrays(yte, rng)
    del test_arrays["blocks/2/cls"]  # a summary only one store holds is not probed
    with synthetic_store(tmp_path / "train.h5", ytr, train_arrays) as train, \
            synthetic_store(tmp_path / "test.h5", yte, test_arrays) as test:
        rows = pd.DataFrame(tasks.get("logistic").rows(EVAL_CFG, CTX, [train, test])[0])
    assert rows["feature"].tolist() == ["cls", "block 1 mean", "block 1 cls", "block 2 mean"]
    assert set(rows["metric"]) == {"top1"} and set(rows["n"]) == {18}
    acc = rows.set_index("feature")["value"]
    assert acc["block 1 mean"] == pytest.approx(100)
    f16 = {k: v.astype(np.float16).astype(np.float32) for k, v in (("tr", train_arrays["blocks/2/mean"]),
                                                                    ("te", test_arrays["blocks/2/mean"]))}
    want = train_logistic(f16["tr"], ytr, f16["te"], yte, Cs=[0.1, 1.0], val_fraction=0.25, seed=0)
    assert acc["block 2 mean"] == pytest.approx(100 * want["acc"])


# --------------------------------------------------------------------------------- the figure
def depth_table() -> pd.DataFrame:
    rows = []
    for dataset, measures in (("cub", [("retrieval", "AP", "mean"), ("retrieval", "AP", "cls"),
                                       ("logistic", "top1", "mean")]),
                              ("coco", [("retrieval", "AP", "mean")])):
        for model, offset in (("mae", 0.0), ("dino", 10.0)):
            for task, metric, summary in measures:
                for block in range(1, 5):
                    for seed in ((0, 1) if task == "logistic" else ("",)):
                        value = offset + 5 * block + (2 * seed if seed != "" else 0)
                        rows.append({"dataset": dataset, "task": task, "model": model, "feature":
                                     f"block {block} {summary}", "metric": metric, "value": value, "seed": seed})
            # rows the figure must leave out: final features, mAP, segmentation's block sets
            rows += [{"dataset": dataset, "task": "retrieval", "model": model, "feature": "mean", "metric": "AP",
                      "value": 99.0, "seed": ""},
                     {"dataset": dataset, "task": "retrieval", "model": model, "feature": "block 1 mean",
                      "metric": "mAP", "value": 98.0, "seed": ""},
                     {"dataset": dataset, "task": "segmentation", "model": model, "feature": "blocks 4+6",
                      "metric": "mIoU", "value": 97.0, "seed": 0}]
    return pd.DataFrame(rows)


def test_depth_data_and_figure(tmp_path, capsys):
    table = depth_table()
    data = depth_data(table)
    assert data["value"].max() < 90  # none of the left-out rows
    assert panel_columns(data) == [("retrieval AP (%)", "mean"), ("retrieval AP (%)", "cls"),
                                   ("logistic top-1 (%)", "mean")]
    point = data[(data["dataset"] == "cub") & (data["measure"] == "logistic top-1 (%)") & (data["model"] == "dino")
                 & (data["block"] == 3)].iloc[0]
    assert point["value"] == 10 + 15 + 1 and point["std"] == pytest.approx(np.std([0, 2], ddof=1))
    assert len(data[(data["dataset"] == "coco")]) == 2 * 4
    assert data["ci_low"].isna().all()  # a table without intervals: bands from the seeds' spread
    retrieval = table["task"] == "retrieval"
    with_ci = table.assign(ci_low=table["value"].where(~retrieval) - 1, ci_high=table["value"].where(~retrieval) + 1)
    banded = depth_data(with_ci)
    logistic = banded["measure"] == "logistic top-1 (%)"
    np.testing.assert_allclose(banded.loc[logistic, "ci_high"] - banded.loc[logistic, "value"], 1)
    assert banded.loc[~logistic, "ci_low"].isna().all()
    table.to_csv(tmp_path / "table.csv", index=False)
    out = tmp_path / "figures" / "depth.png"
    cli.main(["figure-depth", "--table", str(tmp_path / "table.csv"), "--out", str(out)])
    assert "2 datasets, 2 encoders, blocks [1, 2, 3, 4]" in capsys.readouterr().out
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[1::-1] == figure_size(2, 3)
    assert image.std() > 10
    # datasets in table order (coco first), and coco has only the retrieval-mean panel: the rest is blank
    width, height = figure_size(2, 3)
    assert (image[:height // 2 - 20, width // 3 + 10:] > 250).all()
    assert (image[height // 2 + 10:, width // 3 + 10:] < 250).any()


def test_depth_figure_without_block_rows(tmp_path):
    pd.DataFrame([{"dataset": "d", "task": "retrieval", "model": "m", "feature": "mean", "metric": "AP",
                   "value": 50.0}]).to_csv(tmp_path / "table.csv", index=False)
    data = depth_plot(tmp_path / "table.csv", tmp_path / "d.png")
    assert data.empty and Image.open(tmp_path / "d.png").size == figure_size(0, 0)


# --------------------------------------------------------------------------------- the workflow
def test_dry_run_plans_the_depth_figure_and_passes_the_setting_to_part_jobs_only(tmp_path):
    import yaml
    from workflow_runner import REPO, snakemake

    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    on = copy.deepcopy(config)
    on["extract"]["blocks_summary"] = [2, 4]
    printed = snakemake(tmp_path, on, "-n", "-p", "--forceall").stdout
    assert re.search(r"^\s*depth_plot\s+1$", printed, re.M), printed[-3000:]
    extract_jobs = [line for line in printed.splitlines() if "partaware extract " in line]
    with_setting = {re.search(r"--dataset (\S+)", j).group(1) for j in extract_jobs if '"blocks_summary": [2, 4]' in j}
    assert with_setting == {"demo_parts"}, extract_jobs
    off = snakemake(tmp_path, config, "-n", "--forceall").stdout
    assert "depth_plot" not in off
