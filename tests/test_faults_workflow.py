"""Faults through the Snakemake workflow: bad images (skip / error), stale caches, bad configs.

One finished run of a tiny workflow (a generated CUB-layout dataset of 8 images, configured as a
real dataset folder, with one image truncated and one deleted, `data.on_bad_image: skip`, two
2-block ViT-Tiny models, one loaded from a checkpoint file) is shared; the stale-cache checks are
dry runs against it.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pandas as pd
import pytest

from partaware.store import open_store
from workflow_runner import REPO, planned_jobs, snakemake

TINY = {"arch": "vit_tiny_patch16_224", "timm_kwargs": {"depth": 2}}


def make_dataset(workdir: Path) -> Path:
    from partaware.data.demo import generate_demo_cub

    return generate_demo_cub(workdir / "CUB_200_2011", n_images=8, seed=0)


def config(ckpt: Path, root: Path) -> dict:
    return {
        "seed": 0, "device": "cpu",
        "cache": {"format": "zarr", "dtype": "float16", "chunk_rows": 8},
        "extract": {"batch_size": 16, "num_workers": 0},
        "data": {"on_bad_image": "skip"},
        "datasets": {"birds": {"kind": "cub", "root": str(root),
                                    "parts": [11, 12, 9, 14], "size": 32, "resize": 40,
                                    "tasks": ["retrieval"]}},
        "models": {"ck": {**TINY, "weights": "checkpoint", "format": "timm", "path": str(ckpt), "group": "test"},
                   "rnd": {**TINY, "weights": "random", "seed": 1}},
        "retrieval": {"features": ["mean", "cls"], "memory_mb": 16},
    }


def save_checkpoint(path: Path, seed: int) -> None:
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=2, img_size=32)
    torch.save(model.state_dict(), path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The finished skip-mode run: workdir, config, the bad images and the rows they carry."""
    from partaware.kinds import build_part_index

    workdir = tmp_path_factory.mktemp("faults_workflow")
    ckpt = workdir / "weights.pth"
    save_checkpoint(ckpt, seed=0)
    cfg = config(ckpt, make_dataset(workdir))
    index = build_part_index(cfg["datasets"]["birds"])
    images = list(dict.fromkeys(index["image_path"]))  # those that have part patches
    truncated, missing = Path(images[1]), Path(images[3])
    truncated.write_bytes(truncated.read_bytes()[:400])
    missing.unlink()
    snakemake(workdir, cfg, "results/table.csv")
    bad_rows = int(index["image_path"].isin([str(truncated), str(missing)]).sum())
    return {"dir": workdir, "cfg": cfg, "ckpt": ckpt, "truncated": truncated, "missing": missing,
            "bad_rows": bad_rows, "n": len(index)}


# --------------------------------------------------------------------------- bad images
@pytest.mark.slow
def test_skip_mode_lists_and_counts_bad_images_and_finishes(run):
    assert run["bad_rows"] > 0
    table = pd.read_csv(run["dir"] / "results" / "table.csv")
    assert set(table["model"]) == {"ck", "rnd"} and len(table) == 8
    assert (table["skipped"] == 2).all() and (table["skipped_rows"] == run["bad_rows"]).all()  # images, patches
    assert (table["n"] == run["n"] - run["bad_rows"]).all()
    for model in ("ck", "rnd"):
        with open_store(run["dir"] / f"results/features/birds/{model}/all.zarr") as store:
            skipped = store.attrs["skipped_images"]
            assert len(skipped) == 2
            assert any(str(run["truncated"]) in s for s in skipped)
            assert any(str(run["missing"]) in s and "not found" in s for s in skipped)
            assert int((store.read("valid") == 0).sum()) == run["bad_rows"]
    listed = pd.read_csv(run["dir"] / "results" / "skipped_images.csv")
    assert len(listed) == 4 and set(listed["model"]) == {"ck", "rnd"}
    assert listed["reason"].str.contains(str(run["truncated"]), regex=False).sum() == 2


@pytest.mark.slow
def test_error_mode_fails_naming_the_bad_image(tmp_path):
    cfg = config(tmp_path / "unused.pth", make_dataset(tmp_path))
    del cfg["models"]["ck"]
    cfg["data"]["on_bad_image"] = "error"
    from partaware.kinds import build_part_index

    truncated = build_part_index(cfg["datasets"]["birds"])["image_path"].iloc[-1]
    Path(truncated).write_bytes(Path(truncated).read_bytes()[:400])
    result = snakemake(tmp_path, cfg, "results/table.csv", check=False)
    assert result.returncode != 0
    assert "Error in rule extract" in result.stdout + result.stderr
    log = (tmp_path / "results/logs/extract/birds/rnd/all.log").read_text()
    error = [line for line in log.splitlines() if line.startswith("partaware extract: error:")]
    assert len(error) == 1 and truncated in error[0] and "on_bad_image: skip" in error[0], log[-2000:]
    assert not (tmp_path / "results/features/birds/rnd/all.zarr").exists()
    assert not (tmp_path / "results/table.csv").exists()


# --------------------------------------------------------------------------- stale cache
@pytest.mark.slow
def test_a_finished_run_has_nothing_to_do(run):
    assert planned_jobs(run["dir"], run["cfg"], "results/table.csv") == {}


@pytest.mark.slow
def test_new_checkpoint_weights_rebuild_only_that_model(run):
    stat, original = run["ckpt"].stat(), run["ckpt"].read_bytes()
    try:
        save_checkpoint(run["ckpt"], seed=1)  # same path, other weights
        assert planned_jobs(run["dir"], run["cfg"], "results/table.csv") == {"extract": 1, "evaluate": 1, "table": 1}
    finally:
        run["ckpt"].write_bytes(original)
        os.utime(run["ckpt"], ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture(scope="module")
def dry_runs(run):
    """Planned jobs after a transform change (dataset size) and after a part-list change."""
    size = copy.deepcopy(run["cfg"])
    size["datasets"]["birds"]["size"] = 48
    parts = copy.deepcopy(run["cfg"])
    parts["datasets"]["birds"]["parts"] = [11, 12, 9]
    return {"size": planned_jobs(run["dir"], size, "results/table.csv"), "parts": planned_jobs(run["dir"], parts, "results/table.csv")}


@pytest.mark.slow
def test_transform_and_part_list_changes_rebuild_every_affected_store_and_result(dry_runs):
    affected = ("extract", "evaluate", "table", "fetch_checkpoint")
    assert {k: dry_runs["size"].get(k, 0) for k in affected} == {
        "extract": 2, "evaluate": 2, "table": 1, "fetch_checkpoint": 0}
    assert {k: dry_runs["parts"].get(k, 0) for k in (*affected, "part_index")} == {
        "extract": 2, "evaluate": 2, "table": 1, "fetch_checkpoint": 0, "part_index": 1}


@pytest.mark.slow
def test_a_transform_change_does_not_rebuild_the_part_index(dry_runs):
    assert "part_index" not in dry_runs["size"]


# --------------------------------------------------------------------------- bad config
def _bad(mutate):
    def make(tmp_path):
        for name in ("images.txt", "train_test_split.txt", "parts/parts.txt", "parts/part_locs.txt"):
            (tmp_path / name).parent.mkdir(exist_ok=True)
            (tmp_path / name).touch()  # the CUB files the config check looks for (a root one folder off fails)
        cfg = config(REPO / "README.md", tmp_path)  # both exist; neither is read before the error
        mutate(cfg, tmp_path)
        return cfg
    return make


BAD_CONFIGS = {
    "unknown key": (_bad(lambda c, _: c["models"]["rnd"].update(wieghts="random")),
                    ["models.rnd", "wieghts", "allowed keys"]),
    "wrong type": (_bad(lambda c, _: c["cache"].update(chunk_rows="eight")),
                   ["cache.chunk_rows", "expected integer"]),
    "missing dataset folder": (_bad(lambda c, t: c["datasets"]["birds"].update(root=str(t / "CUB_200_2011"))),
                               ["datasets.birds", "CUB_200_2011", "does not exist"]),
    "CUB root one folder off": (_bad(lambda c, t: c["datasets"]["birds"].update(root=str(t / "parts"))),
                                ["datasets.birds.root", "holds no images.txt", "the CUB_200_2011 folder"]),
    "missing checkpoint file": (_bad(lambda c, t: c["models"]["ck"].update(path=str(t / "nope.pth"))),
                                ["models.ck.path", "nope.pth", "does not exist"]),
    "unknown timm model": (_bad(lambda c, _: c["models"]["rnd"].update(arch="vit_tinyy_patch16_224")),
                           ["models.rnd.arch", "vit_tinyy_patch16_224", "timm.list_models"]),
    "unknown checkpoint format": (_bad(lambda c, _: c["models"]["ck"].update(format="simclr")),
                                  ["models.ck.format", "simclr", "mocov3"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_one_line_naming_the_key_before_any_job(case, tmp_path):
    make, words = BAD_CONFIGS[case]
    result = snakemake(tmp_path, make(tmp_path), "-n", "results/table.csv", check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("partaware: config key")]
    assert len(lines) == 1, result.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()
